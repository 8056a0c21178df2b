"""Specification of prepare-imdb: Keras's imdb.npz -> the arrays keras.datasets.imdb.load_data(num_words)
+ keras.utils.pad_sequences(maxlen) give, loaded without ever running a pickled payload."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import IMDB_SIZES, sha256_of
from params_file import write_params

from seqsweep import checksum, prepare_imdb
from seqsweep.errors import ArchiveError, ChecksumError, DataFormatError, MissingInputError
from seqsweep.params import load_params


def object_array(reviews) -> np.ndarray:
    """A 1-D object array of the given lists (never a 2-D int array, even when lengths agree)."""
    out = np.empty(len(reviews), dtype=object)
    for i, review in enumerate(reviews):
        out[i] = review
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return path


def members_of(x_train, y_train, x_test, y_test) -> dict[str, bytes]:
    return {
        "x_train": npy_bytes(object_array(x_train)),
        "y_train": npy_bytes(np.asarray(y_train)),
        "x_test": npy_bytes(object_array(x_test)),
        "y_test": npy_bytes(np.asarray(y_test)),
    }


def edge_case_npz(path: Path) -> Path:
    """Reviews around every boundary: empty, lengths maxlen-1 / maxlen / maxlen+1 (maxlen 8), ids on both
    sides of num_words - index_from (num_words 20), labels of two integer dtypes (load_data promotes)."""
    rng = np.random.default_rng(7)
    x_train = [[], [16], [17], [1, 2, 3, 4, 5, 6, 7], list(range(1, 9)), list(range(1, 10)), [0, 16, 17, 18, 99999]]
    x_train += [rng.integers(0, 40, rng.integers(0, 20)).tolist() for _ in range(25)]
    x_test = [rng.integers(1, 60, rng.integers(0, 30)).tolist() for _ in range(17)] + [[]]
    y_train = rng.integers(0, 2, len(x_train)).astype(np.int32)
    y_test = rng.integers(0, 2, len(x_test)).astype(np.int64)
    return write_npz(path, members_of(x_train, y_train, x_test, y_test))


def keras_reference(path: Path, num_words: int, maxlen: int, monkeypatch):
    """Keras's own load_data(num_words) then pad_sequences(maxlen), reading `path` instead of downloading."""
    import keras
    from keras.src.datasets import imdb as keras_imdb

    monkeypatch.setattr(keras_imdb, "get_file", lambda *args, **kwargs: str(path))
    (x_train, y_train), (x_test, y_test) = keras.datasets.imdb.load_data(num_words=num_words)
    return {
        "X_train": keras.utils.pad_sequences(x_train, maxlen=maxlen),
        "y_train": y_train,
        "X_test": keras.utils.pad_sequences(x_test, maxlen=maxlen),
        "y_test": y_test,
    }


@pytest.mark.parametrize(
    "fixture, num_words, maxlen",
    [("sample", 5000, 500), ("sample", 100, 20), ("sample", 20000, 3000), ("edge", 20, 8), ("edge", 4, 1)],
)
def test_arrays_equal_keras_load_data_then_pad_sequences(
    sample_archives, tmp_path, monkeypatch, fixture, num_words, maxlen
):
    path = sample_archives["imdb.npz"] if fixture == "sample" else edge_case_npz(tmp_path / "edge.npz")
    ours = prepare_imdb.prepare_arrays(prepare_imdb.read_npz(path), num_words, maxlen, str(path))
    theirs = keras_reference(path, num_words, maxlen, monkeypatch)
    for name in ("X_train", "y_train", "X_test", "y_test"):
        assert ours[name].dtype == theirs[name].dtype, name
        assert ours[name].shape == theirs[name].shape, name
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_stage_writes_arrays_and_meta(workspace, sample_archives):
    raw = workspace / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(sample_archives["imdb.npz"], raw / "imdb.npz")
    write_params(workspace, {"data.imdb.maxlen": 64})
    prepare_imdb.main(["data/raw/imdb.npz", "data/prepared/imdb"])
    out = workspace / "data" / "prepared" / "imdb"
    n_train, n_test = IMDB_SIZES["n_train"], IMDB_SIZES["n_test"]
    X_train = np.load(out / "X_train.npy", allow_pickle=False)
    assert X_train.shape == (n_train, 64) and X_train.dtype == np.int32
    assert 0 <= X_train.min() and X_train.max() < 5000
    assert np.load(out / "y_test.npy", allow_pickle=False).shape == (n_test,)
    meta = json.loads((out / "meta.json").read_text())
    params = load_params()["data"]["imdb"]
    assert meta["dataset"] == "imdb" and "source_url" not in meta
    assert meta["files"] == {"imdb.npz": {"sha256": sha256_of(raw / "imdb.npz"), "published": False}}
    assert sha256_of(raw / "imdb.npz") == params["sha256"]
    assert meta["official"] is False and meta["unofficial_files"] == ["imdb.npz"]
    assert (meta["n_train"], meta["n_test"], meta["num_words"], meta["maxlen"]) == (n_train, n_test, 5000, 64)
    assert meta["shapes"] == {
        "X_train": [n_train, 64],
        "y_train": [n_train],
        "X_test": [n_test, 64],
        "y_test": [n_test],
    }
    assert meta["dtypes"] == {"X_train": "int32", "y_train": "int64", "X_test": "int32", "y_test": "int64"}


def test_official_flag_follows_the_files_checksum(workspace, sample_archives, monkeypatch):
    raw = workspace / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(sample_archives["imdb.npz"], raw / "imdb.npz")
    facts = workspace / "published_data.yaml"  # the published content, as if this file were Keras's
    facts.write_text(f"imdb:\n  imdb.npz: {sha256_of(raw / 'imdb.npz')}\n")
    monkeypatch.setattr(checksum, "PUBLISHED_FILE", facts)
    prepare_imdb.main(["data/raw/imdb.npz", "data/prepared/imdb"])
    assert json.loads((workspace / "data" / "prepared" / "imdb" / "meta.json").read_text())["official"] is True


class _Payload:
    """Unpickling this calls `func(*args)`: what a tampered imdb.npz could do with np.load(allow_pickle=True)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payload_for(kind: str, sentinel: Path) -> bytes:
    if kind == "posix.system":
        return pickle.dumps(_Payload(os.system, (f"touch '{sentinel}'",)), protocol=3)
    return pickle.dumps(_Payload(open, (str(sentinel), "w")), protocol=3)


@pytest.mark.parametrize("kind", ["posix.system", "io.open"])
def test_pickle_payload_is_refused_unrun_even_with_a_matching_checksum(workspace, tmp_path, kind):
    control = tmp_path / "control"
    pickle.loads(payload_for(kind, control))  # the payload is live: plain unpickling runs it
    assert control.exists()

    sentinel = tmp_path / "pwned"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    members = members_of([[1, 2]], [0], [[3]], [1])
    members["x_train"] = header.getvalue() + payload_for(kind, sentinel)
    raw = workspace / "data" / "raw"
    raw.mkdir(parents=True)
    npz = write_npz(raw / "imdb.npz", members)
    write_params(workspace, {"data.imdb.sha256": sha256_of(npz)})

    with pytest.raises(DataFormatError, match=rf"x_train\.npy: refusing to unpickle global '{kind}'"):
        prepare_imdb.prepare(npz, workspace / "data" / "prepared" / "imdb", sha256_of(npz), 5000, 500)
    assert not sentinel.exists()
    assert not (workspace / "data" / "prepared").exists() or not any((workspace / "data" / "prepared").iterdir())


def test_numpy_scalar_ids_are_refused_like_keras_does(tmp_path):
    reviews = object_array([[np.int64(5), np.int64(6)]])
    members = members_of([[1]], [0], [[1]], [1])
    members["x_test"] = npy_bytes(reviews)
    npz = write_npz(tmp_path / "scalars.npz", members)
    with pytest.raises(
        DataFormatError, match=r"x_test\.npy: refusing to unpickle global 'numpy\.\S*multiarray\.scalar'"
    ):
        prepare_imdb.read_npz(npz)


@pytest.mark.parametrize(
    "x_train, y_train, message",
    [
        ([[1, 2], [3, -4]], [0, 1], r"x_train\.npy: review 1 item 1 is -4, expected a non-negative int"),
        ([[1, 2.5]], [0], r"x_train\.npy: review 0 item 1 is 2\.5 \(float\)"),
        ([[1, True]], [0], r"x_train\.npy: review 0 item 1 is True \(bool\)"),
        ([[1], "abc"], [0, 1], r"x_train\.npy: review 1 is a str, expected a list of ints"),
        ([[1], (2, 3)], [0, 1], r"x_train\.npy: review 1 is a tuple"),
        ([[1], [2]], [0, 2], r"y_train\.npy: label 1 is 2, expected 0 or 1"),
        ([[1], [2]], [0], r"y_train\.npy: dtype int64 shape \(1,\); expected 2 integer labels"),
        ([[1], [2]], [0.0, 1.0], r"y_train\.npy: dtype float64 shape \(2,\); expected 2 integer labels"),
    ],
)
def test_malformed_contents_are_named(tmp_path, x_train, y_train, message):
    npz = write_npz(tmp_path / "bad.npz", members_of(x_train, np.asarray(y_train), [[1]], [1]))
    with pytest.raises(DataFormatError, match=message):
        prepare_imdb.prepare_arrays(prepare_imdb.read_npz(npz), 5000, 10, str(npz))


def test_negative_id_is_named_by_its_stored_review_index_after_shuffling(tmp_path):
    x_train = [[1]] * 40
    x_train[23] = [4, 5, -6]
    npz = write_npz(tmp_path / "bad.npz", members_of(x_train, [0] * 40, [[1]], [1]))
    with pytest.raises(DataFormatError, match=r"x_train\.npy: review 23 item 2 is -6"):
        prepare_imdb.prepare_arrays(prepare_imdb.read_npz(npz), 5000, 10, str(npz))


def test_missing_member_is_named(tmp_path):
    members = members_of([[1]], [0], [[1]], [1])
    del members["y_test"]
    npz = write_npz(tmp_path / "partial.npz", members)
    with pytest.raises(ArchiveError, match=r"lacks member y_test\.npy"):
        prepare_imdb.read_npz(npz)


def test_non_zip_file_is_an_archive_error(tmp_path):
    path = tmp_path / "imdb.npz"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(ArchiveError, match=r"not a readable \.npz"):
        prepare_imdb.read_npz(path)


def test_checksum_mismatch_names_both_hashes_and_writes_nothing(workspace):
    raw = workspace / "data" / "raw"
    raw.mkdir(parents=True)
    npz = write_npz(raw / "imdb.npz", members_of([[1]], [0], [[1]], [1]))
    actual = hashlib.sha256(npz.read_bytes()).hexdigest()
    configured = load_params()["data"]["imdb"]["sha256"]
    with pytest.raises(ChecksumError, match=rf"SHA-256 is {actual} but data\.imdb\.sha256 is {configured}"):
        prepare_imdb.prepare(npz, workspace / "data" / "prepared" / "imdb", configured, 5000, 10)
    assert not (workspace / "data" / "prepared").exists()


def test_missing_archive_names_the_stage_to_run(workspace, capsys):
    with pytest.raises(SystemExit) as exc:
        prepare_imdb.main(["data/raw/imdb.npz", "data/prepared/imdb"])
    assert exc.value.code == 1
    assert "dvc repro download@imdb" in capsys.readouterr().err
    with pytest.raises(MissingInputError):
        prepare_imdb.prepare(workspace / "data" / "raw" / "imdb.npz", workspace / "out", "0" * 64, 5000, 10)


def test_stage_does_not_import_keras():
    code = "import sys, seqsweep.prepare_imdb; sys.exit('keras' in sys.modules or 'tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
