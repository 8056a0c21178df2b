"""Specification on the real UCI HAR data (`../shared/data/uci-har/`, beside the repository): through real
DVC, the published files are recognised as official by their content, parsed into the published
shapes and class counts, and a short real training learns them.

A user's own clone has no `../shared`: there these tests are skipped, saying so. Under CI (`CI=true`)
a missing `../shared` is a failure, so they always run there."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dvc_project import BIN, REPO, make_project, sh

from seqsweep.checksum import sha256_file
from seqsweep.prepared import Validation, split

pytestmark = pytest.mark.slow
REAL = REPO.parent / "shared" / "data" / "uci-har" / "uci-har-dataset.zip"
# Published per-class window counts, activities 1..6 (the data set's README; shared/data/uci-har/README.md)
TRAIN_COUNTS = [1226, 1073, 986, 1286, 1374, 1407]
TEST_COUNTS = [496, 471, 420, 491, 532, 537]
# cnn1d (units 100, batch 64, dropout 0.5), 1 repeat of 2 epochs on all 7352 windows: measured 0.872 here
# (2026-11-30; the study's 15 epochs reach about 0.91). The threshold sits well below that, for seeds and
# machines, and far above chance (1/6) and the largest class (0.18): a bug that breaks the relation
# between windows and labels (labels misaligned with their windows, train and test channels in different
# orders, a split scaled differently) leaves the test set near chance.
MIN_ACCURACY_AFTER_2_EPOCHS = 0.75


@pytest.fixture(scope="module")
def real_zip() -> Path:
    if not REAL.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{REAL} is missing: CI must run the real-data tests (shared/ beside the clone)")
        pytest.skip(f"no real UCI HAR data at {REAL} (a clone without ../shared)")
    return REAL


def real_project(root: Path, archive: Path, **params) -> Path:
    return make_project(
        root,
        {
            "data.har.url": archive.as_uri(),
            "data.har.sha256": sha256_file(archive),
            "archs.har": ["cnn1d"],
            "model.units": [100],
            "model.dropout": [0.5],
            "train.batch_size": [64],
            "train.repeats": 1,
            "train.epochs": 2,
            **params,
        },
    )


def test_the_real_archive_is_official_by_content_with_the_published_windows_classes_and_subjects(real_zip, tmp_path):
    project = real_project(tmp_path / "project", real_zip)
    out = sh(project, str(BIN / "dvc"), "repro", "prepare-har")
    assert "7352 train / 2947 test windows (official)" in out.stderr
    prepared = project / "data/prepared/har"
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["official"] is True and meta["unofficial_files"] == []
    y_train, y_test = np.load(prepared / "y_train.npy"), np.load(prepared / "y_test.npy")
    assert np.load(prepared / "X_train.npy").shape == (7352, 128, 9)
    assert np.load(prepared / "X_test.npy").shape == (2947, 128, 9)
    assert np.bincount(y_train).tolist() == TRAIN_COUNTS and np.bincount(y_test).tolist() == TEST_COUNTS
    subjects = {split: np.load(prepared / f"subject_{split}.npy") for split in ("train", "test")}
    assert (len(set(subjects["train"])), len(set(subjects["test"]))) == (21, 9)
    assert not set(subjects["train"]) & set(subjects["test"])
    # train.validation 0.2 on the real data: whole volunteers, within a subject's windows of the share
    held = split({"y_train": y_train, "subject_train": subjects["train"]}, Validation(0.2, seed=42))
    assert abs(len(held.val) - 0.2 * 7352) < 409  # the largest subject has 409 windows
    assert not set(subjects["train"][held.val]) & set(subjects["train"][held.train])

    # The same files re-zipped (another packaging, another checksum): official too, and nothing changes
    # downstream: the prepared folder is byte for byte the same.
    repacked = tmp_path / "repacked.zip"
    with zipfile.ZipFile(real_zip) as source, zipfile.ZipFile(repacked, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if not info.is_dir():
                target.writestr(info.filename, source.read(info), compresslevel=1)
    other = real_project(tmp_path / "other", repacked)
    sh(other, str(BIN / "dvc"), "repro", "prepare-har")
    assert sha256_file(repacked) != sha256_file(real_zip)
    for name in ("meta.json", "X_train.npy", "y_test.npy"):
        assert sha256_file(other / "data/prepared/har" / name) == sha256_file(prepared / name), name

    # One published file changed: unofficial, and the label names it.
    root = project / "data/extracted/har/UCI HAR Dataset"
    changed = root / "test" / "Inertial Signals" / "body_acc_x_test.txt"
    changed.write_bytes(changed.read_bytes().replace(b"e-001", b"e-002", 1))
    shutil.rmtree(prepared)
    from seqsweep import prepare_har

    meta = prepare_har.prepare(project / "data/extracted/har", prepared)
    assert meta["unofficial_files"] == ["test/Inertial Signals/body_acc_x_test.txt"]
    assert "body_acc_x_test.txt differs from the published file" in prepare_har.data_label(meta)


def test_a_short_real_training_learns_the_real_data(real_zip, tmp_path):
    project = real_project(tmp_path / "project", real_zip)
    sh(project, str(BIN / "dvc"), "repro", "train-har@cnn1d")
    doc = json.loads((project / "runs/har-cnn1d.json").read_text())
    assert doc["synthetic"] is False
    (config,) = doc["configs"].values()
    assert config["n"] == 1 and config["epochs"] == 2
    accuracy = config["repeats"][0]["test_accuracy"]
    assert accuracy > MIN_ACCURACY_AFTER_2_EPOCHS, f"test accuracy {accuracy} after 2 epochs on real HAR"
