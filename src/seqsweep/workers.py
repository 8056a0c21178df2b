"""Where the training stage's cells run: side by side on this machine, or as Ray tasks on a cluster.

- `train.workers: 1`: in the stage's own process, one cell after another.
- `train.workers: N` or `auto`: a pool of N local worker processes (Python's ProcessPoolExecutor);
  each is pinned to its share of the cores (CPU affinity, and TensorFlow, XLA, OpenMP and BLAS
  threads set to match) or, on a GPU, to its share of the GPU's memory. `auto`, as measured on a
  2-core CPU (BENCHMARKS.md): for the fused engine one worker per core (a JAX program on one core
  each did 1.67x the repeats per hour of one program on both); for the fit engine one per two cores
  (TensorFlow's fit halves its epoch time from one thread to two, so two workers of one core each
  did no more than one of two). Capped by memory (about 1.5 GiB per worker) and by the number of
  cells; one worker per GPU (several processes per GPU were not measured).
- `RAY_ADDRESS` set (Ray's own variable): every cell is a Ray task on that cluster, asking for one
  CPU, or one GPU for a fused program when the cluster has GPUs; the prepared arrays travel once
  through Ray's object store, the code ships with the tasks (`py_modules`), and a task whose worker
  dies is retried by Ray. Ray is not used for the one-machine default: starting it cost 4.4 s and
  680 MB of daemons per stage here (BENCHMARKS.md) and is an optional install (`.[cluster]`).

Every cell logs its own MLflow runs (`seqsweep.cell.run_cell`), so results, resume and reuse are
the same wherever it ran; `run` yields each cell's result as it completes. Every place a cell trains
gets the stage's runtime explicitly (`seqsweep.runtime`): the pool's initializer applies it with the
worker's share before anything imports Keras, and each Ray task gets it as its runtime environment.
A cell that raises stops the stage with CellError naming the cell and the cause."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from seqsweep import prepared as prepared_data
from seqsweep.cell import Cell, CellError, run_cell
from seqsweep.errors import SeqsweepError, freeze_at_exit
from seqsweep.runtime import Runtime

GIB = 1 << 30
MEMORY_PER_WORKER = 1.5 * GIB  # a worker holding TensorFlow or JAX, a model and the data, measured ~1 GiB
RAY_RETRIES = 3  # attempts Ray makes again when a cell's worker process dies
# What a Ray worker elsewhere needs from the stage's environment to log as it would (how it trains
# comes with each task: Runtime.env).
FORWARDED_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


def on_ray() -> bool:
    """Whether cells go to a Ray cluster: RAY_ADDRESS is set, as Ray itself reads it."""
    return bool(os.environ.get("RAY_ADDRESS"))


def cluster_platform() -> str:
    """'gpu' when the Ray cluster has GPUs (fused cells then go to GPU nodes), else 'cpu'."""
    ray = _ray()
    return "gpu" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def count(setting: int | str, platform: str, cells: int, engine: str) -> tuple[int, str]:
    """How many cells train side by side, and why: `train.workers` resolved for this machine and
    `engine`, or on a Ray cluster the CPUs (GPUs for a GPU cluster) it offers; never more than there
    are cells (`cells`: the repeats left to train)."""
    if on_ray():
        kind = "GPU" if platform == "gpu" else "CPU"
        offered = int(_ray().cluster_resources().get(kind, 1))
        return max(1, min(offered, cells)), f"Ray: the cluster's {offered} {kind}s"
    if cells <= 1:
        return 1, "one repeat left" if cells else "nothing left to train"
    if setting != "auto":
        n = max(1, min(int(setting), cells))
        return n, f"train.workers: {setting}" + (f", {cells} repeats left" if n < int(setting) else "")
    if platform != "cpu":
        return 1, f"auto: one per {platform.upper()}"
    cores = len(os.sched_getaffinity(0))
    per_worker = 2 if engine == "fit" else 1  # cores one worker uses well (see the module's docstring)
    by_memory = int(_available_memory() // MEMORY_PER_WORKER)
    n = max(1, min(cores // per_worker, by_memory, cells))
    why = f"auto: one per {'two cores' if per_worker == 2 else 'core'} for {engine} ({cores} cores)"
    if n == by_memory < cores // per_worker:
        why += f", {by_memory} by free memory"
    return n, why


def _available_memory() -> float:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return float("inf")


def run(
    cells: list[Cell], arrays: dict[str, np.ndarray], prepared: Path, workers: int, runtime: Runtime, tracker
) -> Iterator[tuple[Cell, object]]:
    """Train `cells` with `runtime`; yield (cell, CellResult) as each completes, wherever it ran."""
    if on_ray():
        yield from _on_ray(cells, arrays, runtime)
    elif workers <= 1:
        for cell in cells:
            yield cell, run_cell(cell, arrays, tracker)
    else:
        yield from _on_pool(cells, prepared, workers, runtime)


def _cell_error(cell: Cell, exc: BaseException) -> SeqsweepError:
    """What the stage says when a cell's worker failed: the cell's own error, or what killed it."""
    cause = getattr(exc, "cause", None) or exc  # a Ray task's error wraps the cell's
    if isinstance(cause, SeqsweepError):
        return cause
    if isinstance(cause, concurrent.futures.process.BrokenProcessPool):
        return CellError.crashed(cell, "its worker process died (killed, or out of memory)")
    text = str(cause).strip().splitlines()
    return CellError.crashed(cell, f"{type(cause).__name__}: {text[0] if text else ''}"[:500])


# ---- a pool of local worker processes ----------------------------------------------------------

_WORKER: dict = {}  # in a pool worker: its arrays and tracker


def shares(workers: int, platform: str) -> list[dict]:
    """Each worker's share of this machine, as Runtime.env takes it: threads (and the cores they are
    pinned to) on a CPU, a memory fraction on a GPU."""
    if platform != "cpu":
        return [{"gpu_memory_fraction": round(0.9 / workers, 3)} for _ in range(workers)]
    cores = sorted(os.sched_getaffinity(0))
    return [{"cores": cores[i::workers]} for i in range(workers)]


def _init_worker(runtime: Runtime, slots, prepared: str) -> None:
    freeze_at_exit()
    share = slots.get()
    if "cores" in share:
        os.sched_setaffinity(0, share["cores"])
        runtime.apply(threads=len(share["cores"]))
    else:
        runtime.apply(gpu_memory_fraction=share["gpu_memory_fraction"])
    _WORKER["arrays"], _ = prepared_data.load(Path(prepared), mmap=True)


def _in_worker(cell: Cell):
    from seqsweep import tracking

    if "tracker" not in _WORKER:
        _WORKER["tracker"] = tracking.Tracker(cell.tracking_uri)
    return run_cell(cell, _WORKER["arrays"], _WORKER["tracker"])


def _on_pool(cells: list[Cell], prepared: Path, workers: int, runtime: Runtime):
    context = multiprocessing.get_context("spawn")  # fresh interpreters: Keras and threads set up anew
    slots = context.Queue()
    for share in shares(workers, runtime.platform):
        slots.put(share)
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(runtime, slots, str(prepared))
    ) as pool:
        futures = {pool.submit(_in_worker, cell): cell for cell in cells}
        try:
            for future in concurrent.futures.as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:
                    raise _cell_error(futures[future], exc) from exc
                yield futures[future], result
        except BaseException:
            for future in futures:
                future.cancel()
            # Stop the cells still training now rather than wait for them (the pool has no public way);
            # the stage marks the runs they leave RUNNING as KILLED.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            raise


# ---- Ray -------------------------------------------------------------------------------------------


def _ray():
    try:
        import ray
    except ImportError:
        raise SeqsweepError("RAY_ADDRESS is set but Ray is not installed: pip install -e '.[cluster]'") from None
    if not ray.is_initialized():
        package = Path(__file__).resolve().parent
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        ray.init(
            runtime_env={"py_modules": [str(package)], "env_vars": env}, log_to_driver=False, logging_level="ERROR"
        )
    return ray


def _on_ray(cells: list[Cell], arrays: dict[str, np.ndarray], runtime: Runtime):
    ray = _ray()
    arrays_ref = ray.put(arrays)  # once per stage; every task reads it from the object store
    # Each cell asks for one CPU (its thread pools sized to match) and, for a fused program on a GPU
    # cluster, one GPU; the stage's runtime is its environment (Ray merges it with the job's).
    gpus = 1 if runtime.engine == "fused" and runtime.platform == "gpu" else 0
    task = ray.remote(run_cell).options(
        num_cpus=1,
        num_gpus=gpus,
        max_retries=RAY_RETRIES,
        retry_exceptions=False,
        runtime_env={"env_vars": runtime.env(threads=1, on_ray_node=True)},
    )
    pending = {task.remote(cell, arrays_ref): cell for cell in cells}
    try:
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done)
            try:
                result = ray.get(done)
            except ray.exceptions.RayError as exc:
                raise _cell_error(cell, exc) from exc
            yield cell, result
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        print(f"workers: {len(cells) - len(pending)} of {len(cells)} cells done on Ray", file=sys.stderr)
