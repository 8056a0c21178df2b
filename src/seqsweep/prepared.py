"""The prepared arrays of a dataset as the training stages read them: `X_train`, `y_train`, `X_test`,
`y_test` (`.npy`) and `meta.json`, in the folder a prepare stage wrote, and their digests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seqsweep import paths
from seqsweep.checksum import digest
from seqsweep.errors import MissingInputError


def files(folder: Path) -> dict[str, Path]:
    return {name: Path(folder) / f"{name}.npy" for name in paths.PREPARED_ARRAYS}


def load(folder: Path, dataset: str = "", mmap: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """The prepared arrays and meta.json in `folder` (memory-mapped read-only with `mmap`, as local
    workers share them); a missing file names the stage that makes it."""
    folder = Path(folder)
    for path in [*files(folder).values(), folder / "meta.json"]:
        if not path.is_file():
            raise MissingInputError(f"{path} is missing: run `dvc repro prepare-{dataset or folder.name}` first")
    arrays = {
        name: np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None) for name, path in files(folder).items()
    }
    return arrays, json.loads((folder / "meta.json").read_text())


def data_digest(folder: Path) -> str:
    """The digest of everything a training stage reads from `folder`: part of every reuse key."""
    return digest([*files(folder).values(), Path(folder) / "meta.json"])


def split_digest(folder: Path, split: str) -> str:
    """The digest of one split (`train` or `test`): its MLflow dataset input's digest."""
    return digest([Path(folder) / f"X_{split}.npy", Path(folder) / f"y_{split}.npy"])
