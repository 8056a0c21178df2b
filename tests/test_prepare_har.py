"""Specification of prepare-har: UCI HAR Inertial Signals -> X (N, 128, 9) float32, y 0..5 int64, meta.json,
validated line by line, written atomically."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import HAR_SIZES

from seqsweep import checksum, prepare_har
from seqsweep.errors import DataFormatError, MissingInputError
from seqsweep.tools.sample_data import ACTIVITIES, format_fixed16

CHANNELS = [f"{s}_{a}" for s in ("total_acc", "body_acc", "body_gyro") for a in "xyz"]
N_TRAIN, N_TEST = HAR_SIZES["n_train"], HAR_SIZES["n_test"]


@pytest.fixture
def extracted(workspace, sample_archives) -> Path:
    """The synthetic HAR archive unpacked where extract-har leaves it; returns `UCI HAR Dataset/`."""
    dest = workspace / "data" / "extracted" / "har"
    with zipfile.ZipFile(sample_archives["har-legacy.zip"]) as zf:
        zf.extractall(dest)
    return dest / "UCI HAR Dataset"


def signal(root: Path, split: str, channel: str) -> Path:
    return root / split / "Inertial Signals" / f"{channel}_{split}.txt"


def pandas_reference(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The tutorials' loader: read_csv per file, dstack in channel order, labels minus one."""
    frames = [pd.read_csv(signal(root, split, c), header=None, sep=r"\s+").values for c in CHANNELS]
    y = pd.read_csv(root / split / f"y_{split}.txt", header=None, sep=r"\s+").values[:, 0] - 1
    return np.dstack(frames), y


def edit_line(path: Path, line_no: int, edit) -> None:
    """Replace 1-based line `line_no` of `path` with edit(old_line) (bytes without newline)."""
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = edit(lines[line_no - 1])
    path.write_bytes(b"\n".join(lines))


def run_prepare():
    return prepare_har.prepare(Path("data/extracted/har"), Path("data/prepared/har"))


def assert_nothing_written(workspace: Path) -> None:
    prepared = workspace / "data" / "prepared"
    assert not (prepared / "har").exists()
    assert not prepared.exists() or list(prepared.iterdir()) == []  # no temporary directory left behind


def test_prepare_writes_windows_labels_and_meta(workspace, extracted):
    prepare_har.main(["data/extracted/har", "data/prepared/har"])
    out = workspace / "data" / "prepared" / "har"
    arrays = {
        name: np.load(out / f"{name}.npy", allow_pickle=False) for name in ("X_train", "y_train", "X_test", "y_test")
    }
    assert arrays["X_train"].shape == (N_TRAIN, 128, 9) and arrays["X_train"].dtype == np.float32
    assert arrays["X_test"].shape == (N_TEST, 128, 9) and arrays["X_test"].dtype == np.float32
    assert arrays["y_train"].shape == (N_TRAIN,) and arrays["y_train"].dtype == np.int64
    assert arrays["y_test"].shape == (N_TEST,) and arrays["y_test"].dtype == np.int64
    labels = np.loadtxt(extracted / "train" / "y_train.txt", dtype=np.int64)
    np.testing.assert_array_equal(arrays["y_train"], labels - 1)
    assert set(np.unique(arrays["y_train"])) <= set(range(6))

    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"] == "har"
    assert "source_url" not in meta and "source_sha256" not in meta, "the archive's packaging is not the data"
    assert meta["official"] is False  # synthetic files are not the published ones
    assert len(meta["files"]) == 23  # 18 signals, 2 label files, 2 subject files, the activity names
    # the sample's activity names are the published file, its signals and labels are not
    assert set(meta["unofficial_files"]) == set(meta["files"]) - {"activity_labels.txt"}
    assert meta["files"]["activity_labels.txt"]["published"] is True
    assert meta["files"]["train/y_train.txt"] == {
        "sha256": checksum.sha256_file(extracted / "train" / "y_train.txt"),
        "published": False,
    }
    assert (meta["n_train"], meta["n_test"]) == (N_TRAIN, N_TEST)
    assert meta["shapes"]["X_train"] == [N_TRAIN, 128, 9] and meta["shapes"]["y_test"] == [N_TEST]
    assert meta["dtypes"] == {"X_train": "float32", "y_train": "int64", "X_test": "float32", "y_test": "int64"}
    assert meta["channels"] == CHANNELS
    assert meta["classes"] == list(ACTIVITIES)
    for split in ("train", "test"):  # each window's volunteer, for a validation split by subject
        subjects = np.load(out / f"subject_{split}.npy", allow_pickle=False)
        np.testing.assert_array_equal(subjects, np.loadtxt(extracted / split / f"subject_{split}.txt", dtype=np.int64))
        assert meta["subjects"][split] == sorted(set(subjects.tolist()))
    assert not set(meta["subjects"]["train"]) & set(meta["subjects"]["test"])


def test_data_is_official_when_every_file_read_has_its_published_content_and_a_changed_file_is_named(
    workspace, extracted, monkeypatch
):
    facts = workspace / "published_data.yaml"  # the published content, as if the sample were UCI's
    digests = {name: checksum.sha256_file(path) for name, path in prepare_har.files_read(extracted).items()}
    facts.write_text(yaml.safe_dump({"har": digests}))
    monkeypatch.setattr(checksum, "PUBLISHED_FILE", facts)
    meta = run_prepare()
    assert meta["official"] is True and meta["unofficial_files"] == []
    assert all(entry["published"] for entry in meta["files"].values())
    before = (workspace / "data/prepared/har/meta.json").read_bytes()
    assert prepare_har.data_label(meta) == "official"

    flip_sign = lambda line: line[:1] + (b"-" if line[1:2] == b" " else b" ") + line[2:]  # noqa: E731
    edit_line(signal(extracted, "test", "body_gyro_z"), 3, flip_sign)
    meta = run_prepare()
    assert meta["official"] is False
    assert meta["unofficial_files"] == ["test/Inertial Signals/body_gyro_z_test.txt"]
    assert "body_gyro_z_test.txt" in prepare_har.data_label(meta)
    assert (workspace / "data/prepared/har/meta.json").read_bytes() != before


def test_channels_are_stacked_total_acc_body_acc_body_gyro_x_y_z(workspace, extracted):
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for c, channel in enumerate(CHANNELS):
            signal(extracted, split, channel).write_bytes(format_fixed16(np.full((n, 128), 0.125 * (c + 1))))
    run_prepare()
    X = np.load(workspace / "data" / "prepared" / "har" / "X_test.npy")
    for c in range(9):
        assert np.all(X[:, :, c] == np.float32(0.125 * (c + 1))), f"channel {c} holds another file's values"


@pytest.mark.parametrize("split", ["train", "test"])
def test_values_equal_the_pandas_reference_loader(extracted, split):
    X, y = prepare_har.load_split(extracted, split)
    ref_X, ref_y = pandas_reference(extracted, split)
    np.testing.assert_array_equal(X, ref_X.astype(np.float32))
    np.testing.assert_array_equal(y, ref_y)


def test_any_whitespace_layout_parses_like_pandas(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.normal(0, 3, (40, 128)) * 10.0 ** rng.integers(-30, 30, (40, 128))
    values[0, :4] = [0.0, -0.0, 1e-38, 3.4e38]
    text = "\r\n".join("\t ".join(f"{v:.9g}" for v in row) for row in values)  # no final newline, CRLF
    path = tmp_path / "odd_layout.txt"
    path.write_text(text, newline="")
    ref = pd.read_csv(path, header=None, sep=r"\s+").values.astype(np.float32)
    np.testing.assert_array_equal(prepare_har.read_signal(path), ref)


def test_fixed_width_decoder_agrees_with_the_general_parser(extracted):
    path = signal(extracted, "train", "body_gyro_z")
    data = path.read_bytes()
    fast = np.empty((N_TRAIN, 128), dtype=np.float32)
    assert prepare_har._decode_fixed_width(data, fast), "the published layout must take the fast path"
    general = np.loadtxt(path, dtype=np.float32)
    np.testing.assert_array_equal(fast, general)


def test_missing_extracted_directory_names_the_stage_to_run(workspace):
    with pytest.raises(MissingInputError, match=r"dvc repro extract-har"):
        run_prepare()
    assert_nothing_written(workspace)


def test_missing_signal_file_is_named_and_nothing_is_written(workspace, extracted):
    victim = signal(extracted, "test", "body_acc_y")
    victim.unlink()
    with pytest.raises(DataFormatError, match=r"body_acc_y_test\.txt: missing"):
        run_prepare()
    assert_nothing_written(workspace)


def test_ragged_row_names_file_and_line(workspace, extracted):
    edit_line(signal(extracted, "train", "total_acc_z"), 5, lambda line: line[:-16])  # 127 values on line 5
    with pytest.raises(DataFormatError, match=r"total_acc_z_train\.txt: line 5: 127 values, expected 128"):
        run_prepare()
    assert_nothing_written(workspace)


def test_non_numeric_value_names_file_line_and_token(workspace, extracted):
    edit_line(signal(extracted, "train", "body_gyro_x"), 3, lambda line: line[:40] + b"abc" + line[43:])
    with pytest.raises(DataFormatError, match=r"body_gyro_x_train\.txt: line 3: value 3 '\S*abc\S*' is not a number"):
        run_prepare()
    assert_nothing_written(workspace)


def test_non_finite_value_names_file_and_line(workspace, extracted):
    edit_line(signal(extracted, "test", "total_acc_x"), 7, lambda line: b"nan " + line[16:])
    with pytest.raises(DataFormatError, match=r"total_acc_x_test\.txt: line 7: value 1 is not a finite"):
        run_prepare()
    assert_nothing_written(workspace)


def test_blank_line_is_a_row_without_values(workspace, extracted):
    path = signal(extracted, "train", "body_acc_x")
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:9] + [b""] + lines[10:]))  # line 10 blanked, row count unchanged
    with pytest.raises(DataFormatError, match=r"body_acc_x_train\.txt: line 10: 0 values, expected 128"):
        run_prepare()
    assert_nothing_written(workspace)


def test_label_out_of_range_names_labels_file_and_line(workspace, extracted):
    edit_line(extracted / "train" / "y_train.txt", 4, lambda line: b"7")
    with pytest.raises(DataFormatError, match=r"y_train\.txt: line 4: '7' is not an activity id in 1\.\.6"):
        run_prepare()
    assert_nothing_written(workspace)


def test_a_bad_subject_id_or_a_subject_file_shorter_than_the_labels_is_named(workspace, extracted):
    path = extracted / "test" / "subject_test.txt"
    edit_line(path, 3, lambda line: b"x1")
    with pytest.raises(DataFormatError, match=r"subject_test\.txt: line 3: 'x1' is not a subject id in 1\.\.30"):
        run_prepare()
    path.write_bytes(b"2\n" * 5)
    with pytest.raises(DataFormatError, match=r"subject_test\.txt: line 6: missing row; has 5 rows but y_test\.txt"):
        run_prepare()
    assert_nothing_written(workspace)


def test_non_integer_label_names_labels_file_and_line(workspace, extracted):
    edit_line(extracted / "test" / "y_test.txt", 2, lambda line: b"2.5")
    with pytest.raises(DataFormatError, match=r"y_test\.txt: line 2: '2\.5'"):
        run_prepare()


def test_signal_file_with_fewer_rows_than_labels_names_both(workspace, extracted):
    path = signal(extracted, "test", "body_gyro_y")
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[: N_TEST - 1]) + b"\n")
    with pytest.raises(
        DataFormatError,
        match=rf"body_gyro_y_test\.txt: line {N_TEST}: missing row; has {N_TEST - 1} rows but y_test\.txt has {N_TEST}",
    ):
        run_prepare()
    assert_nothing_written(workspace)


def test_signal_file_with_more_rows_than_labels_names_the_extra_line(workspace, extracted):
    labels = extracted / "train" / "y_train.txt"
    labels.write_bytes(b"".join(labels.read_bytes().splitlines(keepends=True)[:-1]))
    with pytest.raises(DataFormatError, match=rf"total_acc_x_train\.txt: line {N_TRAIN}: extra row"):
        run_prepare()
    assert_nothing_written(workspace)


def test_empty_signal_file_is_refused(workspace, extracted):
    signal(extracted, "train", "body_acc_z").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"body_acc_z_train\.txt: line 1: file is empty"):
        run_prepare()


def test_failed_rerun_keeps_the_previous_output_intact(workspace, extracted):
    run_prepare()
    out = workspace / "data" / "prepared" / "har"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    edit_line(signal(extracted, "test", "body_gyro_z"), 1, lambda line: line.replace(b"e", b"x", 1))
    with pytest.raises(DataFormatError):
        run_prepare()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["har"]


def test_main_reports_errors_as_one_line_and_exit_status_1(workspace, extracted, capsys):
    edit_line(extracted / "test" / "y_test.txt", 1, lambda line: b"0")
    with pytest.raises(SystemExit) as exc:
        prepare_har.main(["data/extracted/har", "data/prepared/har"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "y_test.txt: line 1" in err
