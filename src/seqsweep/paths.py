"""Where each stage reads and writes, relative to the DVC workspace root (the stage's working directory)."""

from __future__ import annotations

from pathlib import Path

DATASETS = ("har", "imdb")

RAW_DIR = Path("data/raw")
EXTRACTED_DIR = Path("data/extracted")
PREPARED_DIR = Path("data/prepared")
METRICS_DIR = Path("metrics")
TRAIN_METRICS_DIR = METRICS_DIR / "train"

RAW_FILENAMES = {"har": "har.zip", "imdb": "imdb.npz"}
PREPARED_ARRAYS = ("X_train", "y_train", "X_test", "y_test")


def raw_archive(dataset: str) -> Path:
    """The verified download of `dataset` (output of `download@<dataset>`)."""
    return RAW_DIR / RAW_FILENAMES[dataset]


def extracted_dir(dataset: str) -> Path:
    """The unpacked archive (output of `extract@<dataset>`; HAR only)."""
    return EXTRACTED_DIR / dataset


def prepared_dir(dataset: str) -> Path:
    """The cached arrays (output of `prepare@<dataset>`)."""
    return PREPARED_DIR / dataset
