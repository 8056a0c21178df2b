"""Train and evaluate one repeat of one configuration: seed everything, build, fit, predict once.

Everything that decides a repeat's result lives here, in seqsweep.grid and in seqsweep.models; the
trainer hashes exactly these files into each repeat's reuse key (see train.CODE_FILES)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from seqsweep import models
from seqsweep.grid import Config

EPSILON = 1e-7  # Keras's clipping for cross-entropy on probabilities


@dataclass
class RepeatResult:
    """What one repeat produced; `failure` is None when it finished."""

    history: dict[str, list[float]]
    train_seconds: float
    test_accuracy: float | None = None
    test_loss: float | None = None
    confusion: list[list[int]] | None = None
    failure: str | None = None
    model: object = field(default=None, repr=False)


def shape_kwargs(dataset: str, meta: dict, X_train: np.ndarray) -> dict:
    """The builder's input-shape arguments, from the prepared arrays and their meta.json."""
    if dataset == "har":
        return {"timesteps": X_train.shape[1], "channels": X_train.shape[2], "n_classes": len(meta["classes"])}
    return {"num_words": meta["num_words"], "maxlen": X_train.shape[1]}


def _evaluate(probs: np.ndarray, y: np.ndarray, n_classes: int):
    """Accuracy, cross-entropy and confusion matrix from one pass of predictions (rows: true, cols: predicted)."""
    y = y.astype(np.int64).ravel()
    if probs.shape[-1] == 1:  # binary, sigmoid output
        p = np.clip(probs.astype(np.float64).ravel(), EPSILON, 1 - EPSILON)
        pred = (p > 0.5).astype(np.int64)
        loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        n_classes = 2
    else:
        p = np.clip(probs.astype(np.float64), EPSILON, 1.0)
        pred = probs.argmax(axis=-1)
        loss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    confusion = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    return float(np.mean(pred == y)), loss, confusion.tolist()


def run_repeat(
    dataset: str,
    arch: str,
    config: Config,
    seed: int,
    arrays: dict[str, np.ndarray],
    shape: dict,
    *,
    callbacks: list | None = None,
    verbose: int = 0,
    keep_model: bool = False,
) -> RepeatResult:
    """Seed Python, NumPy and the backend with `seed`, then build, fit and evaluate one model."""
    keras.utils.set_random_seed(seed)
    model = models.build(dataset, arch, config.units, config.dropout, **shape)
    started = time.perf_counter()
    fit = model.fit(
        arrays["X_train"],
        arrays["y_train"],
        epochs=config.epochs,
        batch_size=config.batch_size,
        verbose=verbose,
        callbacks=[keras.callbacks.TerminateOnNaN(), *(callbacks or [])],
    )
    seconds = time.perf_counter() - started
    raw = {k: [float(v) for v in fit.history.get(k, [])] for k in ("loss", "accuracy")}
    history = {k: [v if math.isfinite(v) else None for v in values] for k, values in raw.items()}  # JSON-safe
    bad = [i for i, v in enumerate(raw["loss"]) if not math.isfinite(v)]
    if bad:
        return RepeatResult(history, seconds, failure=f"loss became {raw['loss'][bad[0]]} at epoch {bad[0] + 1}")
    probs = np.asarray(model.predict(arrays["X_test"], batch_size=max(256, config.batch_size), verbose=0))
    if not np.all(np.isfinite(probs)):
        return RepeatResult(history, seconds, failure="predictions on the test set are not finite")
    n_classes = shape.get("n_classes", 2)
    accuracy, loss, confusion = _evaluate(probs, arrays["y_test"], n_classes)
    return RepeatResult(history, seconds, accuracy, loss, confusion, model=model if keep_model else None)
