"""Specification of the synthetic archives: the exact upstream layouts and number formats, deterministic
bytes, atomic writes, and data that is learnable but not trivially so."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from seqsweep.tools import sample_data
from seqsweep.tools.sample_data import SIGNALS

D = "UCI HAR Dataset"
FIELD = r"(?:  | -)\d\.\d{7}e[+-]\d{3}"  # 16 characters: "  2.8858451e-001" / " -2.0294171e-002"
SIGNAL_LINE = re.compile(rf"(?:{FIELD}){{128}}")
FEATURE_LINE = re.compile(rf"(?:{FIELD}){{561}}")
HAR_SIZES = dict(n_train=96, n_test=48)  # as tests/conftest.py writes them


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def inner_zip(path: Path) -> zipfile.ZipFile:
    """The `UCI HAR Dataset.zip` nested in a current-layout archive, opened."""
    with zipfile.ZipFile(path) as outer:
        return zipfile.ZipFile(io.BytesIO(outer.read("UCI HAR Dataset.zip")))


def text(zf: zipfile.ZipFile, rel: str) -> str:
    return zf.read(f"{D}/{rel}").decode("ascii")


def signals(zf: zipfile.ZipFile, split: str) -> np.ndarray:
    """(n, 128, 9) in the tutorials' channel order, parsed from the text files."""
    return np.stack(
        [
            np.loadtxt(io.BytesIO(zf.read(f"{D}/{split}/Inertial Signals/{name}_{split}.txt"))).reshape(-1, 128)
            for name in SIGNALS
        ],
        axis=-1,
    )


def labels(zf: zipfile.ZipFile, split: str, kind: str = "y") -> np.ndarray:
    return np.array([int(v) for v in text(zf, f"{split}/{kind}_{split}.txt").splitlines()])


@pytest.fixture(scope="module")
def har(sample_archives) -> zipfile.ZipFile:
    return inner_zip(sample_archives["har.zip"])


@pytest.fixture(scope="module")
def imdb(sample_archives):
    with np.load(sample_archives["imdb.npz"], allow_pickle=True) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def har_medium(tmp_path_factory) -> zipfile.ZipFile:
    """A larger legacy-layout archive: enough test windows to measure accuracy meaningfully."""
    path = sample_data.write_har_archive(tmp_path_factory.mktemp("har") / "har.zip", 480, 300, layout="legacy")
    return zipfile.ZipFile(path)


# ------------------------------------------------------------------------------------------ HAR layout


def test_current_layout_holds_exactly_the_names_file_and_the_nested_zip(sample_archives):
    with zipfile.ZipFile(sample_archives["har.zip"]) as outer:
        assert outer.namelist() == ["UCI HAR Dataset.names", "UCI HAR Dataset.zip"]
        assert b"SYNTHETIC" in outer.read("UCI HAR Dataset.names")
        assert zipfile.is_zipfile(io.BytesIO(outer.read("UCI HAR Dataset.zip")))


def test_legacy_layout_is_byte_for_byte_the_nested_zip_of_the_current_one(sample_archives):
    with zipfile.ZipFile(sample_archives["har.zip"]) as outer:
        nested = outer.read("UCI HAR Dataset.zip")
    assert sample_archives["har-legacy.zip"].read_bytes() == nested


def test_inner_tree_holds_every_file_the_study_lists_with_directory_entries(har):
    names = set(har.namelist())
    expected = {f"{D}/README.txt", f"{D}/features.txt", f"{D}/activity_labels.txt"}
    for split in ("train", "test"):
        expected |= {f"{D}/{split}/{kind}_{split}.txt" for kind in ("X", "y", "subject")}
        expected |= {f"{D}/{split}/Inertial Signals/{name}_{split}.txt" for name in SIGNALS}
    assert expected <= names, sorted(expected - names)
    dirs = {f"{D}/", f"{D}/train/", f"{D}/test/", f"{D}/train/Inertial Signals/", f"{D}/test/Inertial Signals/"}
    assert dirs <= names
    assert all(har.getinfo(d).is_dir() for d in dirs)


def test_every_data_file_has_macos_resource_fork_junk_beside_it(har):
    names = har.namelist()
    real = [n for n in names if n.startswith(f"{D}/") and not n.endswith("/")]
    for name in real:
        folder, base = name.rsplit("/", 1)
        junk = f"__MACOSX/{folder}/._{base}"
        assert junk in names, junk
        assert har.read(junk)[:4] == b"\x00\x05\x16\x07"  # AppleDouble magic
    assert f"__MACOSX/{D}/._README.txt" in names


def test_readme_says_plainly_that_the_data_is_synthetic(har):
    readme = text(har, "README.txt")
    assert "SYNTHETIC" in readme and "seqsweep" in readme


def test_activity_labels_are_the_six_real_names_and_features_are_561(har):
    assert text(har, "activity_labels.txt").splitlines() == [
        "1 WALKING",
        "2 WALKING_UPSTAIRS",
        "3 WALKING_DOWNSTAIRS",
        "4 SITTING",
        "5 STANDING",
        "6 LAYING",
    ]
    features = text(har, "features.txt").splitlines()
    assert len(features) == 561
    assert features[0] == "1 tBodyAcc-mean()-X" and features[-1] == "561 angle(Z,gravityMean)"


# ------------------------------------------------------------------------------------------ HAR format


@pytest.mark.parametrize("split", ["train", "test"])
def test_inertial_signals_are_128_fixed_16_character_fields_per_line(har, split):
    n = HAR_SIZES[f"n_{split}"]
    for name in SIGNALS:
        raw = text(har, f"{split}/Inertial Signals/{name}_{split}.txt")
        assert raw.endswith("\n") and "\r" not in raw
        lines = raw.splitlines()
        assert len(lines) == n, name
        bad = [i for i, line in enumerate(lines, 1) if not SIGNAL_LINE.fullmatch(line)]
        assert not bad, f"{name}: lines {bad[:5]} do not match the fixed 16-character format"


@pytest.mark.parametrize("split", ["train", "test"])
def test_feature_rows_have_561_fields_in_the_same_format_within_minus_one_to_one(har, split):
    raw = text(har, f"{split}/X_{split}.txt")
    lines = raw.splitlines()
    assert len(lines) == HAR_SIZES[f"n_{split}"]
    assert all(FEATURE_LINE.fullmatch(line) for line in lines)
    values = np.loadtxt(io.StringIO(raw))
    assert values.min() >= -1 and values.max() <= 1


def test_fixed16_formatting_round_trips_and_handles_carry_zero_and_tiny_values():
    values = np.array([[0.28858451, -0.020294171, 0.0, 9.999999999, -1e-5, 123456.7, 1.0, -0.1]])
    line = sample_data.format_fixed16(values).decode()
    assert line == (
        "  2.8858451e-001 -2.0294171e-002  0.0000000e+000  1.0000000e+001"
        " -1.0000000e-005  1.2345670e+005  1.0000000e+000 -1.0000000e-001\n"
    )
    rng = np.random.default_rng(7)
    random = rng.normal(0, 1, (50, 40)) * 10.0 ** rng.integers(-6, 4, (50, 40))
    parsed = np.loadtxt(io.BytesIO(sample_data.format_fixed16(random)))
    np.testing.assert_allclose(parsed, random, rtol=6e-8)


def test_fixed16_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        sample_data.format_fixed16(np.array([[np.nan]]))


# ------------------------------------------------------------------------------------------ HAR content


def test_labels_cover_1_to_6_and_subjects_split_21_train_9_test_disjoint(har):
    for split, n_subjects in (("train", 21), ("test", 9)):
        y = labels(har, split)
        assert set(y.tolist()) == {1, 2, 3, 4, 5, 6}
        subjects = labels(har, split, "subject")
        assert len(subjects) == len(y) and len(set(subjects.tolist())) == n_subjects
    assert not set(labels(har, "train", "subject")) & set(labels(har, "test", "subject"))


def test_full_size_class_counts_are_the_real_train_counts():
    plan = sample_data._split_plan(7352, sample_data.TRAIN_SUBJECTS)
    counts = np.bincount([label for _, label, n in plan for _ in range(n)], minlength=7)[1:]
    assert counts.tolist() == [1226, 1073, 986, 1286, 1374, 1407]


def test_consecutive_windows_of_one_recording_overlap_by_half(har_medium):
    x = signals(har_medium, "train")
    y, subj = labels(har_medium, "train"), labels(har_medium, "train", "subject")
    same = [i for i in range(len(y) - 1) if y[i] == y[i + 1] and subj[i] == subj[i + 1]]
    assert same
    for i in same:
        np.testing.assert_array_equal(x[i, 64:], x[i + 1, :64])


def test_total_acc_is_body_acc_plus_gravity_of_about_one_g(har):
    x = signals(har, "train")
    gravity = x[..., 0:3] - x[..., 3:6]
    norm = np.linalg.norm(gravity, axis=-1)
    assert abs(norm.mean() - 1) < 0.05 and norm.std() < 0.1


def test_class_signals_differ_clearly_walking_moves_and_laying_turns_gravity(har_medium):
    x, y = signals(har_medium, "train"), labels(har_medium, "train")
    motion = x[..., 3:6].std(axis=1).mean(axis=1)  # body_acc energy per window
    walking, static = motion[y <= 3], motion[y >= 4]
    assert walking.min() > 5 * static.max()
    gravity_x = x[..., 0].mean(axis=1)
    assert gravity_x[y == 6].max() < 0.5 < gravity_x[y != 6].min()
    cadence = {
        k: np.abs(np.fft.rfft(x[y == k, :, 3] - x[y == k, :, 3].mean(1, keepdims=True))).mean(0).argmax()
        for k in (1, 2, 3)
    }
    assert cadence[2] < cadence[1] < cadence[3]  # upstairs slowest, downstairs fastest


def test_har_is_learnable_by_nearest_centroid_but_not_perfectly(har_medium):
    def features(x):
        return np.concatenate([x[..., :3].mean(1), x[..., 3:].std(1)], axis=1)

    xtr, ytr = features(signals(har_medium, "train")), labels(har_medium, "train")
    xte, yte = features(signals(har_medium, "test")), labels(har_medium, "test")
    mu, sd = xtr.mean(0), xtr.std(0)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    centroids = np.stack([xtr[ytr == k].mean(0) for k in range(1, 7)])
    predicted = ((xte[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1) + 1
    accuracy = (predicted == yte).mean()
    assert 0.7 < accuracy < 0.99, accuracy


# ------------------------------------------------------------------------------------------ IMDB


def test_imdb_npz_has_the_keras_members_object_x_and_int64_labels(sample_archives, imdb):
    with zipfile.ZipFile(sample_archives["imdb.npz"]) as zf:
        assert sorted(zf.namelist()) == ["x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]
    for split, n in (("train", 300), ("test", 200)):
        x, y = imdb[f"x_{split}"], imdb[f"y_{split}"]
        assert x.dtype == object and x.shape == (n,)
        assert all(type(r) is list and r and all(type(t) is int for t in r) for r in x)
        assert y.dtype == np.int64 and y.shape == (n,)
        assert set(y.tolist()) == {0, 1} and abs(y.mean() - 0.5) <= 0.01


def test_imdb_x_is_pickled_as_numpy_1_wrote_it_and_refuses_to_load_without_pickle(sample_archives):
    with zipfile.ZipFile(sample_archives["imdb.npz"]) as zf:
        head = zf.read("x_train.npy")[:256]
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in head
    with np.load(sample_archives["imdb.npz"]) as f:
        with pytest.raises(ValueError, match="allow_pickle"):
            f["x_train"]


def test_imdb_ranks_start_at_1_reach_far_past_5000_and_lengths_straddle_500(imdb):
    reviews = list(imdb["x_train"]) + list(imdb["x_test"])
    ids = np.concatenate([np.array(r) for r in reviews])
    assert ids.min() >= 1 and 20_000 < ids.max() <= sample_data.IMDB_VOCAB
    assert 0.05 < (ids >= 5000).mean() < 0.3  # num_words=5000 clipping matters, but not most words
    lengths = np.array([len(r) for r in reviews])
    assert lengths.min() >= 10 and (lengths > 500).sum() >= 5 and (lengths < 500).mean() > 0.8


def test_imdb_sentiment_words_separate_the_classes(imdb):
    pos, neg = (set(a.tolist()) for a in sample_data.imdb_sentiment_words(seed=0))

    def score(reviews):
        return np.array([sum((t in pos) - (t in neg) for t in r) for r in reviews])

    for split in ("train", "test"):
        s, y = score(imdb[f"x_{split}"]), imdb[f"y_{split}"]
        assert s[y == 1].mean() > 2 + s[y == 0].mean()
        accuracy = ((s > 0) == (y == 1)).mean()
        assert 0.75 < accuracy < 0.99, accuracy


# ------------------------------------------------------------------------------------------ determinism, atomicity, CLI


def test_same_sizes_and_seed_give_identical_bytes_and_another_seed_differs(tmp_path, sample_archives):
    har = sample_data.write_har_archive(tmp_path / "a.zip", **HAR_SIZES)
    assert sha256(har) == sha256(sample_archives["har.zip"])
    imdb = sample_data.write_imdb_npz(tmp_path / "a.npz", n_train=300, n_test=200)
    assert sha256(imdb) == sha256(sample_archives["imdb.npz"])
    other = sample_data.write_imdb_npz(tmp_path / "b.npz", n_train=300, n_test=200, seed=1)
    assert sha256(other) != sha256(imdb)


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sample_data, "_write_inner", boom)
    with pytest.raises(RuntimeError):
        sample_data.write_har_archive(tmp_path / "har.zip", 12, 6)
    with pytest.raises(ValueError, match="layout"):
        sample_data.write_har_archive(tmp_path / "har.zip", 12, 6, layout="newest")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_both_archives_and_prints_sizes_hashes_and_dvc_overrides(tmp_path, capsys):
    assert sample_data.main([str(tmp_path / "out"), "--size", "tiny", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    for ds, name in (("har", "har.zip"), ("imdb", "imdb.npz")):
        path = (tmp_path / "out" / name).resolve()
        digest = sha256(path)
        assert f"{path}  {path.stat().st_size} bytes  sha256 {digest}" in printed
        assert f"-S 'data.{ds}.url={path.as_uri()}'" in printed
        assert f"-S 'data.{ds}.sha256={digest}'" in printed
    assert "dvc exp run" in printed and "SYNTHETIC" in printed
    with zipfile.ZipFile(tmp_path / "out" / "har.zip") as outer:
        assert outer.namelist() == ["UCI HAR Dataset.names", "UCI HAR Dataset.zip"]
