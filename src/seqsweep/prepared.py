"""The prepared arrays of a dataset as the training stages read them: `X_train`, `y_train`, `X_test`,
`y_test` (`.npy`), HAR's `subject_train` and `subject_test`, and `meta.json`, in the folder a prepare
stage wrote; their digests; and the validation split (`train.validation`) held out of the training set.

The validation split is the same for every configuration, architecture and repeat of a study (seeded
by `train.seed`), so configurations are chosen on the same held-out windows:
- HAR by subject: whole volunteers are held out, because the windows of one recording overlap by half
  and a random split would put a window's neighbours on both sides;
- IMDB stratified at random: the same share of each class."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqsweep import paths
from seqsweep.checksum import digest
from seqsweep.errors import MissingInputError, SeqsweepError


def files(folder: Path) -> dict[str, Path]:
    """The arrays in `folder`: the four every dataset has, and the subject arrays where there are some."""
    folder = Path(folder)
    names = [*paths.PREPARED_ARRAYS, *(n for n in paths.SUBJECT_ARRAYS if (folder / f"{n}.npy").is_file())]
    return {name: folder / f"{name}.npy" for name in names}


def load(folder: Path, dataset: str = "", mmap: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """The prepared arrays and meta.json in `folder` (memory-mapped read-only with `mmap`, as local
    workers share them); a missing file names the stage that makes it."""
    folder = Path(folder)
    needed = [*(folder / f"{name}.npy" for name in paths.PREPARED_ARRAYS), folder / "meta.json"]
    for path in needed:
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


@dataclass(frozen=True)
class Validation:
    """`share` of the training windows held out for choosing configurations (0: none), drawn with `seed`."""

    share: float = 0.0
    seed: int = 0

    def __bool__(self) -> bool:
        return self.share > 0


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices into the prepared training set, ascending
    val: np.ndarray
    held_out: str  # what was held out, in words (e.g. "subjects 3, 7, 11")

    @property
    def digest(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.val, dtype=np.int64).tobytes()).hexdigest()[:16]

    def describe(self) -> str:
        n = len(self.train) + len(self.val)
        return f"{len(self.val)} of {n} training windows ({100 * len(self.val) / n:.1f}%): {self.held_out}"


def split(arrays: dict[str, np.ndarray], validation: Validation) -> Split:
    """The held-out validation windows: whole subjects when the arrays name them (the subjects whose
    windows come closest to the share, in a seeded random order), otherwise the share of each class."""
    y = np.asarray(arrays["y_train"]).ravel()
    rng = np.random.default_rng([validation.seed, 0x5E95])  # a stream of its own, apart from the repeats'
    if "subject_train" in arrays:
        subjects = np.asarray(arrays["subject_train"]).ravel()
        order = rng.permutation(np.unique(subjects))
        if len(order) < 2:
            raise SeqsweepError(
                f"train.validation: the training set has {len(order)} subject; a split by subject needs 2"
            )
        counts = np.cumsum([np.count_nonzero(subjects == s) for s in order])
        k = int(np.argmin(np.abs(counts[:-1] - validation.share * len(y)))) + 1  # at least one subject each side
        held = sorted(int(s) for s in order[:k])
        mask = np.isin(subjects, held)
        held_out = f"subject{'s' * (k > 1)} {', '.join(map(str, held))}"
    else:
        mask = np.zeros(len(y), dtype=bool)
        for label in np.unique(y):
            members = np.flatnonzero(y == label)
            mask[rng.permutation(members)[: round(validation.share * len(members))]] = True
        held_out = "the same share of each class, at random"
    if mask.all() or not mask.any():
        raise SeqsweepError(
            f"train.validation = {validation.share:g} leaves {'no' if mask.all() else 'no validation'} "
            f"window{'s' * (len(y) != 1)} of {len(y)} for {'training' if mask.all() else 'validation'}"
        )
    return Split(np.flatnonzero(~mask), np.flatnonzero(mask), held_out)


def with_validation(arrays: dict[str, np.ndarray], validation: Validation) -> dict[str, np.ndarray]:
    """The arrays an engine trains on: without validation, as prepared; with it, `X_train`/`y_train`
    without the held-out windows, which become `X_val`/`y_val`."""
    if not validation:
        return arrays
    held = split(arrays, validation)
    out = {k: v for k, v in arrays.items() if not k.endswith("_train")}
    for name in ("X", "y"):
        full = np.asarray(arrays[f"{name}_train"])
        out[f"{name}_train"], out[f"{name}_val"] = full[held.train], full[held.val]
    return out
