"""Calibration: what one training program costs on this machine, measured briefly, for seqsweep.plan.

A `Shape` is what decides a program's speed: the dataset's array shapes and sizes, the architecture,
its units, the batch size, and how many repeats the program trains together (lanes; 1 for `fit`).
Each is measured through the engine itself (seqsweep.engines.train, as a stage trains) on random
arrays of the real shapes: 3 epochs over a few full batches plus the real training set's partial
last batch, and one batch of test predictions. The epochs after the first give the seconds per
step; the rest of the run (building, compiling, warming up, the first predictions) is the
program's set-up. The process's peak memory while training it is read from the kernel (VmHWM,
reset before each shape) with the bytes of the arrays it held.

Shapes are measured in a child process per runtime and worker share (`Group`: engine, backend,
threads), set up as a worker of that kind is: the runtime's environment (seqsweep.runtime) and, for a
worker's share of the cores, its CPU affinity. The parent times the child's start-up (Python,
MLflow, Keras and its backend) as a stage's or worker's start-up.

Results are cached in $XDG_CACHE_HOME/seqsweep/calibration.json (default ~/.cache), keyed on the
machine (CPU model and cores), the runtime (library versions, backend, device, engine, determinism),
the threads and the shape: a second plan is instant; another machine, JAX or Keras measures again.

Not measured, taken from the shape's own step (and checked against whole runs in BENCHMARKS.md):
predicting or validating one example costs a third of training on it (a forward pass without the
backward pass)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from seqsweep import atomic, paths
from seqsweep.errors import SeqsweepError, freeze_at_exit
from seqsweep.models import import_keras
from seqsweep.runtime import Runtime

STEPS = 8  # full batches per calibration epoch (a tiny training set: all of it)
EPOCHS = 3  # the first compiles; the others are timed
FORWARD_SHARE = 1 / 3  # predicting an example, as a share of training on it
CHILD_TIMEOUT = 3600  # seconds a calibration child may take in all before it is stopped
VERSION = 1  # of the cache's format


@dataclass(frozen=True)
class Shape:
    """One kind of program: what its speed depends on."""

    dataset: str
    arch: str
    units: int
    batch_size: int
    lanes: int  # repeats trained together (1 for fit)
    n_train: int  # windows an epoch covers
    n_test: int
    n_val: int  # held-out windows predicted after every epoch (train.validation)
    example: tuple[int, ...]  # one window's shape, e.g. (128, 9) or (500,)
    builder: tuple[tuple[str, int], ...]  # the builder's shape keywords (engines.shape_kwargs), sorted

    @property
    def label(self) -> str:
        lanes = f" x{self.lanes} lanes" if self.lanes > 1 else ""
        return f"{self.dataset}:{self.arch} u{self.units} b{self.batch_size}{lanes}"

    @property
    def steps(self) -> int:
        """Steps of a real epoch."""
        return -(-self.n_train // self.batch_size)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Group:
    """Where shapes are measured: a process set up as a worker with this runtime and share."""

    runtime: Runtime
    threads: int | None  # a pool worker's cores; None: the stage's own process, all of them

    def key(self) -> str:
        return f"{machine()} | {self.runtime.key()} | threads {self.threads or 'all'}"


@dataclass(frozen=True)
class Measure:
    """What a shape cost: per step, once per program, and in memory."""

    step_seconds: float  # one full batch of every lane
    setup_seconds: float  # once per program: building, compiling, the first test predictions
    predicted: int  # test windows the set-up included predictions of
    peak_bytes: int  # the process's peak resident memory while training it
    held_bytes: int  # the calibration arrays' bytes included in that peak

    def program_seconds(self, shape: Shape, epochs: int) -> float:
        """Seconds one program of `shape` trains for `epochs`, its test predictions included."""
        forward = FORWARD_SHARE * self.step_seconds / shape.batch_size  # one example, every lane
        predicting = epochs * shape.n_val + max(0, shape.n_test - self.predicted)
        return self.setup_seconds + epochs * shape.steps * self.step_seconds + predicting * forward

    def program_bytes(self, shape: Shape, data_bytes: int) -> int:
        """Peak memory of a process training `shape` on arrays of `data_bytes`: the measured peak, with
        the real arrays in place of the calibration's, twice (the host copy and the backend's)."""
        return self.peak_bytes + 2 * max(0, data_bytes - self.held_bytes)


@dataclass(frozen=True)
class Startup:
    """A training process's start-up: imports of MLflow, Keras and its backend, and its memory then."""

    seconds: float
    rss_bytes: int


def machine() -> str:
    """This machine, as calibrations are keyed: its CPU model and the cores this process may use."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{len(os.sched_getaffinity(0))}"


def cache_path() -> Path:
    return paths.user_cache() / "calibration.json"


class Cache:
    """The calibrations made on this machine (cache_path()); a damaged file counts as empty."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_path()
        try:
            doc = json.loads(self.path.read_text())
            ok = isinstance(doc, dict) and doc.get("version") == VERSION
        except (OSError, ValueError):
            ok = False
        self.doc = doc if ok else {"version": VERSION, "shapes": {}, "startup": {}}

    def get(self, group: Group, shape: Shape) -> Measure | None:
        found = self.doc["shapes"].get(f"{group.key()} | {shape.key()}")
        return Measure(**found) if found else None

    def startup(self, group: Group) -> Startup | None:
        found = self.doc["startup"].get(group.key())
        return Startup(**found) if found else None

    def put(self, group: Group, startup: Startup, measures: dict[Shape, Measure]) -> None:
        self.doc["startup"][group.key()] = asdict(startup)
        for shape, measure in measures.items():
            self.doc["shapes"][f"{group.key()} | {shape.key()}"] = asdict(measure)
        atomic.write_json(self.path, self.doc)


def calibrate(group: Group, shapes: list[Shape], cache: Cache, say=print) -> None:
    """Measure `shapes` in a child process set up as `group` says, and cache what it measured. The
    child's error, if it fails, is raised naming the shape it was measuring."""
    env = {**os.environ, **group.runtime.env(**({"threads": group.threads} if group.threads else {}))}
    env["SEQSWEEP_CALIBRATION_THREADS"] = str(group.threads or 0)
    env["SEQSWEEP_CALIBRATION_ENGINE"] = group.runtime.engine
    started = time.perf_counter()
    errors = tempfile.TemporaryFile(mode="w+")  # not a pipe: a chatty child must never block on it
    child = subprocess.Popen(
        [sys.executable, "-m", "seqsweep.calibration"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    watchdog = threading.Timer(CHILD_TIMEOUT, child.kill)  # a hung child is stopped, and named below
    watchdog.start()
    startup, measures = None, {}
    try:
        child.stdin.write(json.dumps([asdict(s) for s in shapes]))
        child.stdin.close()
        for line in child.stdout:  # one JSON line when ready, then one per shape
            doc = json.loads(line)
            if startup is None:
                startup = Startup(time.perf_counter() - started, doc["rss_bytes"])
                continue
            shape = shapes[len(measures)]
            measures[shape] = Measure(**doc)
            say(f"  calibrated {shape.label}: {measures[shape].step_seconds * 1000:.1f} ms/step")
        if child.wait() != 0 or startup is None:
            where = shapes[len(measures)].label if len(measures) < len(shapes) else "its end"
            errors.seek(0)
            lines = [line for line in errors.read().strip().splitlines() if line.strip()]
            cause = lines[-1] if lines else f"exit status {child.returncode}"
            if not watchdog.is_alive():
                cause = f"no result within {CHILD_TIMEOUT} s, stopped"
            if startup is not None and measures:
                cache.put(group, startup, measures)  # what was measured need not be measured again
            raise SeqsweepError(f"calibration failed at {where}: {cause}")
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        errors.close()
    cache.put(group, startup, measures)


# ---- the child process ----------------------------------------------------------------------------


def _peak_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: resets VmHWM to the current RSS
        f.write("5")


def _memory(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def random_arrays(shape: Shape, n_train: int, n_test: int, n_val: int) -> dict:
    """Random arrays of the prepared shapes and dtypes (HAR float32 windows, IMDB int32 word ids)."""
    import numpy as np

    rng = np.random.default_rng(0)
    dims = dict(shape.builder)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test), ("val", n_val)):
        if n == 0:
            continue
        if shape.dataset == "har":
            arrays[f"X_{split}"] = rng.normal(size=(n, *shape.example)).astype(np.float32)
            arrays[f"y_{split}"] = rng.integers(0, dims["n_classes"], n)
        else:
            arrays[f"X_{split}"] = rng.integers(1, dims["num_words"], (n, *shape.example)).astype(np.int32)
            arrays[f"y_{split}"] = rng.integers(0, 2, n)
    return arrays


def measure(engine: str, shape: Shape) -> Measure:
    """Train one program of `shape` briefly through the engine and time it (see the module's docstring)."""
    from seqsweep import engines, grid

    batch = shape.batch_size
    n = shape.n_train if shape.n_train <= STEPS * batch else STEPS * batch + shape.n_train % batch
    predict_batch = max(256, batch)  # the engines predict in batches of this size
    arrays = random_arrays(shape, n, min(shape.n_test, predict_batch), min(shape.n_val, predict_batch))
    program = engines.Program(
        shape.dataset,
        shape.arch,
        grid.Config(shape.units, batch, 0.25, EPOCHS),
        tuple(range(1, shape.lanes + 1)),
        dict(shape.builder),
    )
    ends: dict[int, float] = {}  # epoch -> when its last lane ended
    _peak_reset()
    started = time.perf_counter()
    engines.train(engine, program, arrays, on_epoch=lambda _, epoch, __: ends.__setitem__(epoch, time.perf_counter()))
    seconds = time.perf_counter() - started
    steady = (ends[EPOCHS] - ends[1]) / (EPOCHS - 1)  # one epoch without compiling
    return Measure(
        step_seconds=steady / -(-n // batch),
        setup_seconds=max(0.0, seconds - EPOCHS * steady),
        predicted=len(arrays["X_test"]),
        peak_bytes=_memory("VmHWM"),
        held_bytes=sum(a.nbytes for a in arrays.values()),
    )


def _child() -> None:
    """Measure the shapes given as JSON on stdin, in this process set up by `calibrate`."""
    freeze_at_exit()
    threads = int(os.environ.get("SEQSWEEP_CALIBRATION_THREADS", "0"))
    if threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    shapes = json.loads(sys.stdin.read())
    import_keras()  # what every training process imports before its first cell

    from seqsweep import cell  # noqa: F401  (MLflow, as a worker imports it)

    print(json.dumps({"rss_bytes": _memory("VmRSS")}), flush=True)
    for raw in shapes:
        shape = Shape(**{**raw, "example": tuple(raw["example"]), "builder": tuple(map(tuple, raw["builder"]))})
        print(json.dumps(asdict(measure(os.environ["SEQSWEEP_CALIBRATION_ENGINE"], shape))), flush=True)


if __name__ == "__main__":
    _child()
