"""Engines: how the repeats of one configuration are trained. The training stage hands an engine a
`Program` (these seeds of this configuration) and gets back one `RepeatResult` per seed; MLflow,
resume and the grid stay in the stage.

- `fit`: one Keras `model.fit` per repeat, on whatever backend Keras runs (TensorFlow by default):
  the tutorials' way.
- `fused`: all repeats of a program as one compiled JAX program: the model's own `train_step`
  (its loss, Keras's optimizer through `stateless_apply`, its metrics) vmapped over stacked
  per-repeat variables. Each lane is initialised, shuffled and dropped out exactly as `fit` would
  for its seed on the JAX backend, so a fused repeat is the fit repeat of the same seed, batched.
- `auto`: fused where it was measured faster (a GPU; on a CPU the architectures in
  `FUSED_ON_CPU`), fit elsewhere (see `choose`).

The backend is fixed when Keras is first imported, so `choose` runs before that (seqsweep.runtime
applies its choice); nothing here imports Keras or JAX at module level."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from seqsweep.errors import SeqsweepError
from seqsweep.grid import Config
from seqsweep.models import import_keras, modules_hidden

ENGINES = ("fit", "fused")
EPSILON = 1e-7  # Keras's clipping for cross-entropy on probabilities
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")  # per epoch; val_ only with a validation split

# Where the fused engine trains more repeats per hour than the fit engine on a CPU, at the full data
# shapes with the workers `auto` gives each (fused: one per core; fit: one of all cores), side by side
# (bench/bench_auto_vs_fit.py -S train.engine=fused, BENCHMARKS.md): every recurrent model, whose many
# small steps XLA compiles into one loop (1.5x to 3.5x). The convolutional HAR models stay on fit:
# convlstm trains 8x slower fused, cnn1d 1.6x slower.
FUSED_ON_CPU = frozenset(
    {
        "har:lstm",
        "har:cnn_lstm",
        "har:stacked_lstm",
        "imdb:lstm",
        "imdb:lstm_dropout",
        "imdb:lstm_recurrent_dropout",
        "imdb:cnn_lstm",
    }
)

# The most lanes one fused program holds on a CPU: a (units, batch size)'s 2 dropout rates x 10 repeats
# trained 5-7% slower per repeat-epoch as one program of 20 lanes than as two of 10, one core each
# (bench/bench_dropout_axis.py, BENCHMARKS.md): more than the compilation one program saves at full
# size. On an accelerator lanes are nearly free (not measured yet): no limit but the device's memory.
CPU_MAX_LANES = 10


def max_lanes(platform: str) -> int | None:
    """The most lanes a fused program is given on `platform` (None: as many as its memory holds)."""
    return CPU_MAX_LANES if platform == "cpu" else None


# (index of the repeat in its program, epoch from 1, {"loss": ..., "accuracy": ...} and, with a
# validation split, "val_loss" and "val_accuracy") after every epoch
OnEpoch = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class Program:
    """Repeats that one engine call trains (the fused engine: together): of one configuration, or of
    configurations that differ only in their dropout rate (`dropouts`: each seed's rate, in order;
    empty when every seed trains `config.dropout`)."""

    dataset: str
    arch: str
    config: Config
    seeds: tuple[int, ...]
    shape: dict  # the builder's shape keywords (shape_kwargs)
    dropouts: tuple[float, ...] = ()

    def configs(self) -> list[Config]:
        """Each seed's configuration, in order."""
        rates = self.dropouts or (self.config.dropout,) * len(self.seeds)
        assert len(rates) == len(self.seeds), "one dropout rate per seed"
        return [replace(self.config, dropout=rate) for rate in rates]


@dataclass
class RepeatResult:
    """What one repeat produced; `failure` is None when it finished. `lanes`: the seeds of the
    repeats trained in the same compiled program (rerunning this repeat exactly needs the same), and
    `lane_dropouts` their rates when they differ (the program spanned the dropout axis)."""

    seed: int
    history: dict[str, list[float | None]]
    train_seconds: float
    test_accuracy: float | None = None
    test_loss: float | None = None
    confusion: list[list[int]] | None = None
    val_accuracy: float | None = None  # at the last epoch, with a validation split (history: per epoch)
    val_loss: float | None = None
    failure: str | None = None
    lanes: tuple[int, ...] = ()
    lane_dropouts: tuple[float, ...] = ()
    model: object = field(default=None, repr=False)


@dataclass(frozen=True)
class Choice:
    """The engine that trains, the Keras backend it runs on, and why (printed when it is not asked for)."""

    engine: str
    backend: str
    reason: str


class EngineUnavailable(SeqsweepError):
    """train.engine asks for an engine this machine or environment cannot run."""


def _jax_platform() -> str | None:
    """'gpu', 'tpu' or 'cpu' for the JAX installed here, None without JAX (imports JAX, not Keras)."""
    if importlib.util.find_spec("jax") is None:
        return None
    import jax

    return jax.default_backend()


@dataclass(frozen=True)
class Here:
    """What this process offers the engines: KERAS_BACKEND as set, the backend an already imported Keras
    runs on, and JAX's platform (None without JAX). Read once (`here`) and handed to `choose`, so every
    stage of a study is decided from the same facts, before anything changes them."""

    forced: str | None
    loaded: str | None
    jax: str | None


def here() -> Here:
    """What this process offers now (imports JAX, not Keras)."""
    loaded = sys.modules.get("keras")
    loaded_backend = loaded.backend.backend() if loaded is not None and hasattr(loaded, "backend") else None
    return Here(os.environ.get("KERAS_BACKEND") or None, loaded_backend, _jax_platform())


def choose(requested: str, platform: str | None = None, model: str = "", found: Here | None = None) -> Choice:
    """Resolve train.engine (`auto`, `fit` or `fused`) for `model` ('har:lstm') on `platform` (where
    the cells will train: this machine by default, or a Ray cluster's 'gpu'/'cpu'), before Keras is
    imported, from what this process offers (`found`; default: read now).

    auto picks fused on an accelerator, where one repeat leaves the device mostly idle and the lanes
    fill it; on a CPU, fused for the models in FUSED_ON_CPU and fit for the others, as measured.
    A backend forced with KERAS_BACKEND, a missing JAX or an already-imported Keras on another
    backend make auto fall back to fit; an explicit `fused` that cannot run is an error before any
    training."""
    found = found or here()
    forced, loaded_backend = found.forced, found.loaded
    if requested == "fit":
        return Choice("fit", loaded_backend or forced or "tensorflow", "asked for (train.engine: fit)")
    blocker = None
    if loaded_backend not in (None, "jax"):
        blocker = f"Keras is already running on {loaded_backend} in this process"
    elif forced not in (None, "jax"):
        blocker = f"KERAS_BACKEND={forced} is set and the fused engine needs jax"
    elif found.jax is None:
        blocker = "JAX is not installed (pip install -e . brings it; '.[gpu]' brings CUDA JAX)"
    platform = platform or found.jax
    if requested == "fused":
        if blocker:
            raise EngineUnavailable(f"train.engine: fused cannot run here: {blocker}")
        return Choice("fused", "jax", "asked for (train.engine: fused)")
    if blocker:
        return Choice("fit", loaded_backend or forced or "tensorflow", f"auto: fit, because {blocker}")
    if platform == "cpu":
        if model in FUSED_ON_CPU:
            return Choice("fused", "jax", f"auto: fused, measured faster for {model} on a CPU")
        return Choice("fit", forced or "tensorflow", f"auto: fit, measured as fast or faster for {model} on a CPU")
    return Choice("fused", "jax", f"auto: fused on the {platform.upper()} (many repeats per compiled program)")


def train(
    engine: str,
    program: Program,
    arrays: dict[str, np.ndarray],
    *,
    on_epoch: OnEpoch | None = None,
    verbose: int = 0,
    keep_model: bool = False,
) -> list[RepeatResult]:
    """Train every repeat of `program` with `engine`; one result per seed, in the program's order."""
    if engine not in ENGINES:
        raise SeqsweepError(f"unknown engine {engine!r}; expected one of {list(ENGINES)}")
    import_keras()
    module = importlib.import_module(f"seqsweep.engines.{engine}")
    results = module.train(
        program, arrays, on_epoch=on_epoch or (lambda *_: None), verbose=verbose, keep_model=keep_model
    )
    assert [r.seed for r in results] == list(program.seeds), "an engine returns one result per seed, in order"
    return results


def set_seed(seed: int) -> None:
    """`keras.utils.set_random_seed(seed)`: Python's, NumPy's and Keras's global seeds, exactly. On a
    backend other than TensorFlow it does not import TensorFlow to seed it: Keras does so "if TF is
    installed" for tf.data pipelines, which the JAX path never builds (NumPy arrays in, NumPy batches
    out), and the import costs every JAX stage, pool worker and Ray task about 3 s and hundreds of MB.
    Keras then treats TensorFlow as unavailable in that process, which on JAX it is not used for."""
    keras = import_keras()
    with modules_hidden(*(() if keras.backend.backend() == "tensorflow" else ("tensorflow",))):
        keras.utils.set_random_seed(seed)


def shape_kwargs(dataset: str, meta: dict, X_train: np.ndarray) -> dict:
    """The builder's input-shape arguments, from the prepared arrays and their meta.json."""
    if dataset == "har":
        return {"timesteps": X_train.shape[1], "channels": X_train.shape[2], "n_classes": len(meta["classes"])}
    return {"num_words": meta["num_words"], "maxlen": X_train.shape[1]}


def last_validation(result: RepeatResult) -> None:
    """Set the repeat's final validation accuracy and loss from its history (a finished repeat's)."""
    if result.failure is None and result.history.get("val_accuracy"):
        result.val_accuracy, result.val_loss = result.history["val_accuracy"][-1], result.history["val_loss"][-1]


def evaluate(probs: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[float, float, list[list[int]]]:
    """Accuracy, cross-entropy and confusion matrix (rows: true, cols: predicted) from one pass of
    predictions on the test set: the same for every engine."""
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


def finite_history(raw: dict[str, list[float]]) -> tuple[dict[str, list[float | None]], str | None]:
    """The per-epoch history with non-finite values as None (JSON-safe), and the failure (first
    non-finite loss) or None. Validation curves are kept only when there was a validation split."""
    import math

    history = {
        k: [float(v) if math.isfinite(v) else None for v in values]
        for k, values in raw.items()
        if values or not k.startswith("val_")
    }
    bad = [i for i, v in enumerate(raw.get("loss", [])) if not math.isfinite(v)]
    failure = f"loss became {raw['loss'][bad[0]]} at epoch {bad[0] + 1}" if bad else None
    return history, failure
