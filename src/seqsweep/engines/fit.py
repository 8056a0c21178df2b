"""The fit engine: one Keras `model.fit` per repeat, the tutorials' way, on any backend.

Each repeat seeds Python, NumPy and the backend with its seed, builds and compiles its model, fits
it (evaluating the validation split after every epoch, when there is one) and predicts the test set once."""

from __future__ import annotations

import time

import keras
import numpy as np

from seqsweep import models
from seqsweep.engines import (
    EPOCH_METRICS,
    OnEpoch,
    Program,
    RepeatResult,
    evaluate,
    finite_history,
    last_validation,
    set_seed,
)
from seqsweep.grid import Config


class _EpochCallback(keras.callbacks.Callback):
    def __init__(self, on_epoch: OnEpoch, index: int):
        super().__init__()
        self.on_epoch, self.index = on_epoch, index

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.on_epoch(self.index, epoch + 1, {k: float(logs[k]) for k in EPOCH_METRICS if k in logs})


def train(
    program: Program, arrays: dict[str, np.ndarray], *, on_epoch: OnEpoch, verbose: int = 0, keep_model: bool = False
) -> list[RepeatResult]:
    return [
        _repeat(program, config, i, seed, arrays, on_epoch, verbose, keep_model)
        for i, (seed, config) in enumerate(zip(program.seeds, program.configs(), strict=True))
    ]


def _repeat(
    program: Program,
    config: Config,
    index: int,
    seed: int,
    arrays: dict[str, np.ndarray],
    on_epoch: OnEpoch,
    verbose: int,
    keep_model: bool,
) -> RepeatResult:
    set_seed(seed)
    model = models.build(program.dataset, program.arch, config.units, config.dropout, **program.shape)
    started = time.perf_counter()
    fit = model.fit(
        arrays["X_train"],
        arrays["y_train"],
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_data=(arrays["X_val"], arrays["y_val"]) if "X_val" in arrays else None,
        validation_batch_size=max(256, config.batch_size),
        verbose=verbose,
        callbacks=[keras.callbacks.TerminateOnNaN(), _EpochCallback(on_epoch, index)],
    )
    seconds = time.perf_counter() - started
    history, failure = finite_history({k: [float(v) for v in fit.history.get(k, [])] for k in EPOCH_METRICS})
    lanes = (seed,)
    if failure is not None:
        return RepeatResult(seed, history, seconds, failure=failure, lanes=lanes)
    probs = np.asarray(model.predict(arrays["X_test"], batch_size=max(256, config.batch_size), verbose=0))
    if not np.all(np.isfinite(probs)):
        return RepeatResult(seed, history, seconds, failure="predictions on the test set are not finite", lanes=lanes)
    accuracy, loss, confusion = evaluate(probs, arrays["y_test"], program.shape.get("n_classes", 2))
    result = RepeatResult(
        seed,
        history,
        seconds,
        test_accuracy=accuracy,
        test_loss=loss,
        confusion=confusion,
        lanes=lanes,
        model=model if keep_model else None,
    )
    last_validation(result)
    return result
