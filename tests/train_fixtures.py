"""Tiny prepared datasets for the training tests: learnable, a few dozen samples, written as the
prepare stages write them (arrays + meta.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HAR_CLASSES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]


def write_prepared_har(ws: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> None:
    """Windows of 8 training subjects (1-8, 8 windows each at the default size) and 4 test subjects (9-12)."""
    rng = np.random.default_rng(seed)
    folder = ws / "data/prepared/har"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, first in (("train", n_train, 1), ("test", n_test, 9)):
        y = rng.integers(0, 6, n)
        X = (rng.normal(size=(n, 128, 9)) + y[:, None, None] * 0.5).astype(np.float32)
        np.save(folder / f"X_{split}.npy", X)
        np.save(folder / f"y_{split}.npy", y)
        np.save(folder / f"subject_{split}.npy", first + np.arange(n) * (8 if split == "train" else 4) // n)
    (folder / "meta.json").write_text(json.dumps({"dataset": "har", "official": False, "classes": HAR_CLASSES}))


def write_prepared_imdb(ws: Path, n_train: int = 64, n_test: int = 32, maxlen: int = 40, num_words: int = 50) -> None:
    rng = np.random.default_rng(1)
    folder = ws / "data/prepared/imdb"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 2, n)
        X = rng.integers(3, num_words, size=(n, maxlen)).astype(np.int32)
        X[:, :5] = np.where(y[:, None] == 1, 4, 5)  # a sentiment-bearing token
        np.save(folder / f"X_{split}.npy", X)
        np.save(folder / f"y_{split}.npy", y)
    (folder / "meta.json").write_text(
        json.dumps({"dataset": "imdb", "official": False, "num_words": num_words, "maxlen": maxlen})
    )
