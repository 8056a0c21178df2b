"""Full-size HAR-shaped prepared arrays for the stage benchmarks: 7352 x 128 x 9 train and 2947 test
windows of random values with 6 classes, and the meta.json the training stage reads. Training
speed does not depend on the values, so no archive needs to be generated and prepared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]


def write_prepared_har(root: Path) -> Path:
    """Write root/data/prepared/har as the prepare stage would lay it out; returns the folder."""
    rng = np.random.default_rng(0)
    folder = root / "data/prepared/har"
    folder.mkdir(parents=True)
    for split, n in (("train", 7352), ("test", 2947)):
        np.save(folder / f"X_{split}.npy", rng.normal(size=(n, 128, 9)).astype(np.float32))
        np.save(folder / f"y_{split}.npy", rng.integers(0, 6, n))
    (folder / "meta.json").write_text(json.dumps({"official": False, "classes": CLASSES}))
    return folder
