"""The fused engine: the repeats of a program trained together as one compiled JAX program.

Keras's JAX guide ("writing a training loop from scratch") trains with `model.stateless_call` and
`optimizer.stateless_apply`; the model's own `train_step(state, data)` is exactly that (its compiled
loss, Keras's optimizer, its metrics), so it is vmapped over a leading lane axis of stacked
per-repeat state, not written again. What makes each lane a true independent repeat, exactly as the
fit engine would train its seed on the JAX backend:

- initial weights: `keras.utils.set_random_seed(seed)` (engines.set_seed), then the same builder;
- dropout masks: each lane's SeedGenerator states are its own non-trainable variables; a program
  may span the dropout axis (`Program.dropouts`), each lane dropping out at its own rate (`LaneRate`);
- optimizer state and metrics: stacked per lane, reset per epoch as `fit` does;
- shuffling: each lane draws `permutation(N)` from its own NumPy stream seeded like `fit`'s global
  one (after the one draw `fit` spends building the model), batches of `batch_size`, the last one
  partial, as `fit` slices them.

A lane whose loss turns non-finite fails alone (vmapped lanes never mix); the others finish.

Memory: before training, the step is compiled for all lanes and XLA's own estimate of its buffers
(`memory_analysis`) is compared with the device's free memory; when they do not fit, the program
is split into fewer lanes in proportion (the data arrays are shared), and a RESOURCE_EXHAUSTED on
the first step halves the lanes again. Each repeat records the seeds it was trained beside (`lanes`)."""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from seqsweep import models
from seqsweep.engines import (
    EPOCH_METRICS,
    EngineUnavailable,
    OnEpoch,
    Program,
    RepeatResult,
    evaluate,
    finite_history,
    last_validation,
    set_seed,
)

MEMORY_HEADROOM = 0.8  # use at most this share of the free device memory


class TooManyLanes(Exception):
    """A program's lanes do not fit in device memory; `fitting` is how many should (at least 1)."""

    def __init__(self, message: str, fitting: int):
        super().__init__(message)
        self.fitting = fitting


def train(
    program: Program, arrays: dict[str, np.ndarray], *, on_epoch: OnEpoch, verbose: int = 0, keep_model: bool = False
) -> list[RepeatResult]:
    seeds, configs = list(program.seeds), program.configs()
    X, y = jax.device_put(arrays["X_train"]), jax.device_put(arrays["y_train"])
    lanes = len(seeds)
    results: list[RepeatResult] = []
    while len(results) < len(seeds):
        start = len(results)
        group = seeds[start : start + lanes]
        try:
            results += _train_lanes(
                program, group, configs[start : start + lanes], start, X, y, arrays, on_epoch, keep_model
            )
        except TooManyLanes as exc:
            if len(group) == 1:
                raise
            lanes = max(1, min(exc.fitting, len(group) - 1))
    return results


def _lane(program: Program, config, seed: int, n: int, x0: np.ndarray, y0: np.ndarray):
    """One repeat's model, built exactly as the fit engine builds it for `seed` and its configuration,
    with its optimizer and metric variables built as `fit` builds them; and its shuffling stream,
    advanced as `fit`'s."""
    set_seed(seed)
    model = models.build(program.dataset, program.arch, config.units, config.dropout, **program.shape)
    model._symbolic_build(data_batch=(x0, y0))  # what fit() does first (Keras's own, private, step)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    stream = np.random.RandomState(seed)  # fit shuffles with np.random, which set_random_seed seeds...
    stream.permutation(n)  # ...and spends one permutation on that build (it reads the first batch)
    return model, state, stream


def _stack(trees: list):
    """The lanes' state stacked on a leading lane axis, on the host, then put on the device. (JAX's own
    `jnp.stack`, `jnp.zeros` and `jnp.asarray` each compile a small program per shape: some twenty per
    program shape, a tenth of a second each on a CPU, at every stage's start. `device_put` compiles
    nothing.)"""
    return jax.tree.map(lambda *leaves: jax.device_put(np.stack([np.asarray(leaf) for leaf in leaves])), *trees)


def _train_lanes(
    program: Program, seeds: list[int], configs: list, offset: int, X, y, arrays, on_epoch: OnEpoch, keep_model: bool
) -> list[RepeatResult]:
    config = configs[0]  # the lanes differ at most in their dropout rate
    n, batch = len(arrays["X_train"]), config.batch_size
    x0, y0 = arrays["X_train"][:batch], arrays["y_train"][:batch]
    built = [_lane(program, c, seed, n, x0, y0) for c, seed in zip(configs, seeds, strict=True)]
    with lane_rates([m for m, _, _ in built]) as rates:
        return _train_built(program, seeds, configs, offset, built, rates, X, y, arrays, on_epoch, keep_model)


def _train_built(program, seeds, configs, offset, built, rates, X, y, arrays, on_epoch, keep_model):
    config = configs[0]
    n, batch = len(arrays["X_train"]), config.batch_size
    model = built[0][0]  # traced for every lane: its rates that differ between lanes are LaneRates
    state = _stack([s for _, s, _ in built])
    fresh_metrics = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), state[3])
    streams = [stream for _, _, stream in built]
    lane_index = jax.device_put(np.arange(len(seeds), dtype=np.int32))

    def step(lane_state, lane, index, X, y):
        with tracing(rates, lane):
            return model.train_step(lane_state, (X[index], y[index]))

    started = time.perf_counter()  # compiling counts as training, as it does inside fit()
    jitted = jax.jit(jax.vmap(step, in_axes=(0, 0, 0, None, None)), donate_argnums=0)
    full = jax.ShapeDtypeStruct((len(seeds), batch), np.int32)  # a full batch's indices
    compiled = jitted.lower(state, lane_index, full, X, y).compile()
    fitting = lanes_that_fit(compiled, len(seeds), X.nbytes + y.nbytes)
    if fitting < len(seeds):
        raise TooManyLanes(f"{len(seeds)} lanes need more than the free device memory", fitting)

    raw = [{k: [] for k in EPOCH_METRICS} for _ in seeds]
    infer = forward(model, rates)
    n_classes = program.shape.get("n_classes", 2)
    failed: set[int] = set()
    for epoch in range(1, config.epochs + 1):
        state = (state[0], state[1], state[2], jax.device_put(fresh_metrics))
        order = np.stack([stream.permutation(n) for stream in streams]).astype(np.int32)
        for start in range(0, n, batch):
            index = order[:, start : start + batch]
            run = compiled if index.shape[1] == batch else jitted
            try:
                logs, state = run(state, lane_index, index, X, y)
            except jax.errors.JaxRuntimeError as exc:
                if epoch == 1 and start == 0 and "RESOURCE_EXHAUSTED" in str(exc):
                    raise TooManyLanes(str(exc), len(seeds) // 2) from None
                raise
        values = {k: np.asarray(v, dtype=np.float64) for k, v in logs.items() if k in ("loss", "accuracy")}
        val_probs = predict(infer, state, arrays["X_val"], max(256, batch)) if "X_val" in arrays else None
        for lane in range(len(seeds)):
            if lane in failed:
                continue
            lane_logs = {k: float(v[lane]) for k, v in values.items()}
            if val_probs is not None:  # as fit's validation_data: the model in inference mode, after the epoch
                accuracy, loss, _ = evaluate(val_probs[lane], arrays["y_val"], n_classes)
                lane_logs.update(val_loss=loss, val_accuracy=accuracy)
            for key, value in lane_logs.items():
                raw[lane][key].append(value)
            on_epoch(offset + lane, epoch, lane_logs)
            if not math.isfinite(lane_logs["loss"]):
                failed.add(lane)
        if len(failed) == len(seeds):
            break
    seconds = (time.perf_counter() - started) / len(seeds)  # each repeat's share of the program

    probs = predict(infer, state, arrays["X_test"], max(256, batch))
    dropouts = tuple(c.dropout for c in configs)
    dropouts = dropouts if len(set(dropouts)) > 1 else ()
    results = []
    for lane, seed in enumerate(seeds):
        history, failure = finite_history(raw[lane])
        result = RepeatResult(seed, history, seconds, failure=failure, lanes=tuple(seeds), lane_dropouts=dropouts)
        if failure is None and not np.all(np.isfinite(probs[lane])):
            result.failure = "predictions on the test set are not finite"
        if result.failure is None:
            result.test_accuracy, result.test_loss, result.confusion = evaluate(
                probs[lane], arrays["y_test"], n_classes
            )
            last_validation(result)
            if keep_model:
                result.model = _with_weights(built[lane][0], state, lane)
        results.append(result)
    return results


RATE_ATTRIBUTES = ("rate", "dropout", "recurrent_dropout")  # Dropout's; LSTMCell's and ConvLSTMCell's


class LaneRate:
    """A dropout rate that differs between the lanes of one program. Keras's layers read a rate in two
    ways: in Python, to decide whether to drop out at all (`rate > 0`, `0.0 < rate < 1.0`, `if rate`),
    which every lane answers alike (each rate is in (0, 1)) and so this answers; and in arithmetic
    (`keep = 1.0 - rate`, then a Bernoulli mask of `keep` and `x / keep`), which gives the traced lane's
    own value, computed in Python floats per lane exactly as a constant rate is. So each lane drops out
    as `fit` does at its own rate, and the lanes are still one compiled program."""

    def __init__(self, rates: list[float]):
        self.rates = tuple(float(r) for r in rates)
        self.lane = None  # the lane index being traced (set by the step)

    def _alike(self, op, other=None):
        answers = {op(rate, other) for rate in self.rates}
        if len(answers) > 1:
            raise TypeError(f"the lanes' dropout rates {self.rates} answer a Python test of the rate differently")
        return answers.pop()

    def _per_lane(self, op, other, reflected=False):
        if self.lane is None:
            raise TypeError("a lane's dropout rate is used outside the training step")
        values = [op(other, rate) if reflected else op(rate, other) for rate in self.rates]
        return jnp.asarray(values, dtype=jnp.float32)[self.lane]

    __gt__ = functools.partialmethod(_alike, operator.gt)
    __ge__ = functools.partialmethod(_alike, operator.ge)
    __lt__ = functools.partialmethod(_alike, operator.lt)
    __le__ = functools.partialmethod(_alike, operator.le)
    __eq__ = functools.partialmethod(_alike, operator.eq)
    __ne__ = functools.partialmethod(_alike, operator.ne)
    __bool__ = functools.partialmethod(_alike, lambda rate, _: bool(rate))
    __hash__ = None

    __sub__ = functools.partialmethod(_per_lane, operator.sub)
    __rsub__ = functools.partialmethod(_per_lane, operator.sub, reflected=True)
    __mul__ = __rmul__ = functools.partialmethod(_per_lane, operator.mul)
    __truediv__ = functools.partialmethod(_per_lane, operator.truediv)
    __rtruediv__ = functools.partialmethod(_per_lane, operator.truediv, reflected=True)

    def __repr__(self):
        return f"LaneRate{self.rates}"


@contextlib.contextmanager
def lane_rates(lane_models: list):
    """On the first lane's model (the one the step traces), a LaneRate for every dropout rate that
    differs between the lanes' models (found by comparing them, layer by layer); put back after."""
    installed = []
    for layers in zip(*(m._flatten_layers(include_self=False) for m in lane_models), strict=True):
        for name in RATE_ATTRIBUTES:
            values = [vars(layer).get(name) for layer in layers]
            if not isinstance(values[0], int | float) or len(set(values)) == 1:
                continue
            if not all(0 < v < 1 for v in values):
                raise EngineUnavailable(
                    f"the fused engine trains lanes with different dropout rates only within (0, 1); "
                    f"{layers[0].name}.{name} is {values} across the lanes"
                )
            rate = LaneRate(values)
            installed.append((layers[0], name, values[0], rate))
            setattr(layers[0], name, rate)
    try:
        yield [rate for *_, rate in installed]
    finally:
        for layer, name, value, _ in installed:
            setattr(layer, name, value)


@contextlib.contextmanager
def tracing(rates: list[LaneRate], lane):
    """While one lane's computation is traced, its LaneRates give that lane's values."""
    for rate in rates:
        rate.lane = lane
    try:
        yield
    finally:
        for rate in rates:
            rate.lane = None


def forward(model, rates: list[LaneRate]):
    """Every lane's model in inference mode, compiled once: (trainable, non-trainable, lane, x) ->
    probabilities. (Keras's RNN layers draw their dropout masks even then, unused: the rates are read.)"""

    def infer(trainable, non_trainable, lane, x):
        with tracing(rates, lane):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

    return jax.jit(jax.vmap(infer, in_axes=(0, 0, 0, None)))


def predict(forward, state, X: np.ndarray, batch: int) -> np.ndarray:
    """Every lane's predicted probabilities on `X`, (lanes, N, outputs), in batches."""
    lanes = jax.device_put(np.arange(len(state[0][0]), dtype=np.int32))
    parts = [
        np.asarray(forward(state[0], state[1], lanes, jax.device_put(X[i : i + batch])))
        for i in range(0, len(X), batch)
    ]
    return np.concatenate(parts, axis=1)


def _with_weights(model, state, lane: int):
    """`model` (the lane's own, built for its seed) holding the lane's trained weights."""
    for variable, value in zip(model.trainable_variables, state[0], strict=True):
        variable.assign(value[lane])
    for variable, value in zip(model.non_trainable_variables, state[1], strict=True):
        variable.assign(value[lane])
    return model


def lanes_that_fit(compiled, lanes: int, shared_bytes: int) -> int:
    """How many of `lanes` fit in the free device memory, by XLA's own estimate of the compiled
    step's buffers; everything but the shared data arrays grows with the lanes."""
    stats = compiled.memory_analysis()
    free = free_memory()
    if stats is None or free is None:
        return lanes
    needed = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
    budget = MEMORY_HEADROOM * free
    if needed <= budget:
        return lanes
    per_lane = max(1, needed - shared_bytes) / lanes
    return max(1, int((budget - shared_bytes) // per_lane))


def free_memory() -> int | None:
    """Free bytes on the device JAX computes on (host memory for the CPU)."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
