"""File names shared by more than one module. Where each stage reads and writes is named in its
`cmd` in dvc.yaml; these are the conventions inside those folders."""

from __future__ import annotations

import os
from pathlib import Path

DATASETS = ("har", "imdb")

RAW_FILENAMES = {"har": "har.zip", "imdb": "imdb.npz"}  # what download@<dataset> writes under data/raw/
PREPARED_ARRAYS = ("X_train", "y_train", "X_test", "y_test")  # <name>.npy in a prepared folder, + meta.json
SUBJECT_ARRAYS = ("subject_train", "subject_test")  # HAR's also: the volunteer of each window
PLOT_TEMPLATES_DIR = Path(".dvc/plots")  # the Vega-Lite templates dvc.yaml's plots use


def run_file(runs_dir: Path, dataset: str, arch: str) -> Path:
    """The results of one training stage (train-<dataset>@<arch>)."""
    return Path(runs_dir) / f"{dataset}-{arch}.json"


def user_cache() -> Path:
    """seqsweep's folder in the user's cache ($XDG_CACHE_HOME, default ~/.cache): what this machine has
    measured or compiled, never results."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seqsweep"
