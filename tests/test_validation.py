"""Specification of the validation split (`train.validation`): which training windows are held out to
choose configurations on, for HAR by subject and for IMDB stratified by class, the same for every
configuration and repeat of a study."""

from __future__ import annotations

import numpy as np
import pytest

from seqsweep.errors import SeqsweepError
from seqsweep.prepared import Validation, split, with_validation


def har_like(subjects: int = 21, seed: int = 0) -> dict[str, np.ndarray]:
    """Training windows of `subjects` volunteers with unequal numbers of windows, as in UCI HAR (281-409)."""
    rng = np.random.default_rng(seed)
    per_subject = rng.integers(281, 410, subjects)
    subject = np.repeat(np.arange(1, subjects + 1), per_subject)
    y = rng.integers(0, 6, len(subject))
    X = rng.normal(size=(len(subject), 4, 3)).astype(np.float32)
    return {"X_train": X, "y_train": y, "subject_train": subject, "X_test": X[:10], "y_test": y[:10]}


def imdb_like(n: int = 1000, positive: float = 0.3) -> dict[str, np.ndarray]:
    y = (np.arange(n) < positive * n).astype(np.int64)
    return {"X_train": np.arange(n * 5, dtype=np.int32).reshape(n, 5), "y_train": y, "X_test": None, "y_test": None}


def test_har_holds_out_whole_subjects_so_no_subject_is_on_both_sides():
    arrays = har_like()
    held = split(arrays, Validation(0.2, seed=42))
    subjects = arrays["subject_train"]
    assert not set(subjects[held.train]) & set(subjects[held.val])
    assert sorted([*held.train, *held.val]) == list(range(len(subjects)))
    assert 0.15 < len(held.val) / len(subjects) < 0.25  # whole subjects: the share as near as they allow
    named = {int(s) for s in held.held_out.removeprefix("subjects ").split(", ")}
    assert named == set(subjects[held.val])


def test_the_split_is_the_same_for_the_same_seed_and_differs_for_another():
    arrays = har_like()
    first, again, other = (split(arrays, Validation(0.2, seed)) for seed in (42, 42, 7))
    assert np.array_equal(first.val, again.val) and first.digest == again.digest
    assert first.digest != other.digest


def test_imdb_holds_out_the_same_share_of_each_class_at_random():
    arrays = imdb_like()
    held = split(arrays, Validation(0.2, seed=1))
    y = arrays["y_train"]
    assert np.bincount(y[held.val]).tolist() == [140, 60]  # 20% of 700 negatives and of 300 positives
    assert not np.array_equal(held.val[y[held.val] == 1], np.arange(60))  # at random, not the first of the class
    assert not set(held.train) & set(held.val)


def test_with_validation_trains_on_the_rest_and_moves_the_held_out_windows_to_val():
    arrays = har_like(subjects=5)
    out = with_validation(arrays, Validation(0.2, seed=3))
    held = split(arrays, Validation(0.2, seed=3))
    assert np.array_equal(out["X_val"], arrays["X_train"][held.val])
    assert np.array_equal(out["y_train"], arrays["y_train"][held.train])
    assert out["X_test"] is arrays["X_test"]
    assert with_validation(arrays, Validation(0.0, seed=3)) is arrays  # off: exactly as prepared


def test_a_split_that_leaves_one_side_empty_is_refused_naming_the_parameter():
    one_subject = har_like(subjects=1)
    with pytest.raises(SeqsweepError, match="train.validation.*1 subject"):
        split(one_subject, Validation(0.2, seed=0))
    tiny = imdb_like(n=4, positive=0.5)
    with pytest.raises(SeqsweepError, match="train.validation = 0.1 leaves no validation window"):
        split(tiny, Validation(0.1, seed=0))
