"""Stage train-<dataset>@<arch>: train every configuration of the grid `train.repeats` times, log each
repeat to MLflow, and write runs/<dataset>-<arch>.json: per configuration n, mean, std, min, max and
n_failed of test accuracy, and every repeat's accuracy, seed, status, learning curves and confusion
matrix (the report reads it; the format is documented in seqsweep.results).

    python -m seqsweep.train <dataset> <arch> <prepared folder> <run file>

The path of a repeat, top to bottom:
  1. this stage: which configurations and seeds, a parent MLflow run per configuration, which
     repeats are already finished (resume), the results file;
  2. `run_cell`: one cell of work (some repeats of one configuration) with its MLflow child runs;
  3. `seqsweep.engines.train`: the engine (fit or fused) trains the cell's repeats.

Resumable: a repeat whose MLflow child run already FINISHED (or FAILED on NaN) under the same reuse
key (data digest, code digest, Keras version, backend and engine, configuration, seed) is not
trained again, by this stage or by a cell run twice."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from seqsweep import atomic, engines, grid, paths, tracking, workers
from seqsweep.errors import MissingInputError, SeqsweepError, exit_on_error
from seqsweep.params import load_params

PACKAGE_DIR = Path(__file__).resolve().parent
HISTORY_TAG = "seqsweep_history"
CONFUSION_TAG = "seqsweep_confusion"
LANES_TAG = "lanes"  # the seeds trained in the same compiled program, in lane order


def code_files(dataset: str, engine: str) -> list[Path]:
    """The source files that decide a repeat's result; their digest is part of every reuse key."""
    names = ("engines/__init__.py", f"engines/{engine}.py", "grid.py", "models/__init__.py", f"models/{dataset}.py")
    return [PACKAGE_DIR / name for name in names]


def digest_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def prepared_files(folder: Path) -> dict[str, Path]:
    return {name: Path(folder) / f"{name}.npy" for name in paths.PREPARED_ARRAYS}


def load_prepared(folder: Path, dataset: str = "", mmap: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """The prepared arrays and meta.json in `folder` (memory-mapped read-only with `mmap`, as local
    workers share them); a missing file names the stage that makes it."""
    folder = Path(folder)
    for path in [*prepared_files(folder).values(), folder / "meta.json"]:
        if not path.is_file():
            raise MissingInputError(f"{path} is missing: run `dvc repro prepare-{dataset or folder.name}` first")
    arrays = {
        name: np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        for name, path in prepared_files(folder).items()
    }
    return arrays, json.loads((folder / "meta.json").read_text())


def configure_backend(choice: engines.Choice, deterministic: bool) -> None:
    """Before Keras is imported: its backend, deterministic kernels, quiet logs."""
    engines.use(choice)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A new model per repeat makes TensorFlow warn about retracing; expected here, so only errors show.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if deterministic:
        os.environ["TF_DETERMINISTIC_OPS"] = "1"
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_deterministic_ops=true").strip()


def summarise(accuracies: list[float]) -> dict:
    """n, mean, std (sample, ddof=1; undefined for n < 2), min, max of the finished repeats."""
    a = np.asarray(accuracies, dtype=np.float64)
    return {
        "n": int(a.size),
        "mean": float(a.mean()) if a.size else None,
        "std": float(a.std(ddof=1)) if a.size > 1 else None,
        "min": float(a.min()) if a.size else None,
        "max": float(a.max()) if a.size else None,
    }


def _key(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


@dataclass
class Timing:
    """Where the stage's time went: training (inside the engines) and writing to MLflow."""

    train_seconds: float = 0.0
    mlflow_seconds: float = 0.0

    def add(self, other: Timing) -> None:
        self.train_seconds += other.train_seconds
        self.mlflow_seconds += other.mlflow_seconds

    def doc(self) -> dict:
        overhead = self.mlflow_seconds / self.train_seconds if self.train_seconds else None
        return {
            "train_seconds": round(self.train_seconds, 3),
            "mlflow_seconds": round(self.mlflow_seconds, 3),
            "mlflow_overhead": None if overhead is None else round(overhead, 5),
        }


@dataclass(frozen=True)
class Cell:
    """Some repeats of one configuration, trained by one engine call (in one worker), each logged to
    its own MLflow child run. Holds everything that needs, so a worker elsewhere can run it."""

    dataset: str
    arch: str
    config: grid.Config
    repeats: tuple[int, ...]  # repeat numbers within the configuration
    seeds: tuple[int, ...]
    run_keys: tuple[str, ...]  # each repeat's reuse key
    parent_id: str
    experiment_id: str
    engine: str
    shape: dict
    tags: dict  # tags every run of the stage carries
    inputs: list = field(repr=False)  # MLflow dataset inputs
    tracking_uri: str = ""
    owner: str = ""  # host:pid of the stage process that planned the cell
    verbose: int = 0
    save_model: bool = False

    @property
    def base_params(self) -> dict:
        return {"dataset": self.dataset, "arch": self.arch, **self.config.as_params()}


@dataclass
class CellResult:
    rows: list[dict]  # one per repeat of the cell, in its order
    timing: Timing


def run_cell(cell: Cell, arrays: dict[str, np.ndarray], tracker: tracking.Tracker | None = None) -> CellResult:
    """Train the cell's repeats that MLflow does not hold finished yet, each in its own child run.

    Idempotent: a cell run again (a retried worker) reuses what finished, and marks KILLED the runs a
    previous attempt of this same cell left RUNNING (the stage runs each cell once at a time). A
    failure of the store raises StoreError naming it, wherever the cell runs."""
    with tracking.store_errors(cell.tracking_uri):
        tracker = tracker or tracking.Tracker(cell.tracking_uri)
        return _run_cell(cell, arrays, tracker)


def _run_cell(cell: Cell, arrays: dict[str, np.ndarray], tracker: tracking.Tracker) -> CellResult:
    # where this cell trains: a worker process, maybe on another machine
    where = {"device": tracking.device_name(), "worker": f"{socket.gethostname()}:{os.getpid()}"}
    timing = Timing()
    before = tracker.seconds
    children = tracker.children(cell.experiment_id, cell.parent_id)
    tracker.retire_stale(children, owner=cell.owner, keys=set(cell.run_keys))
    done = finished_children(children)
    todo = [i for i, key in enumerate(cell.run_keys) if key not in done]
    run_ids = {}
    for i in todo:
        run_ids[i] = tracker.start_run(
            cell.experiment_id,
            f"{cell.arch} {cell.config.key} r{cell.repeats[i]}",
            cell.run_keys[i],
            "repeat",
            {**cell.base_params, "repeat": cell.repeats[i], "seed": cell.seeds[i]},
            {**cell.tags, **where},
            parent_id=cell.parent_id,
            owner=cell.owner,
        )
        tracker.log_inputs(run_ids[i], cell.inputs)
    rows: dict[int, dict] = {
        i: _reused(done[key], cell.repeats[i], cell.seeds[i]) for i, key in enumerate(cell.run_keys) if key in done
    }
    if todo:
        program = engines.Program(cell.dataset, cell.arch, cell.config, tuple(cell.seeds[i] for i in todo), cell.shape)

        def on_epoch(index: int, epoch: int, logs: dict) -> None:
            tracker.log_metrics(run_ids[todo[index]], logs, step=epoch)

        try:
            results = engines.train(
                cell.engine, program, arrays, on_epoch=on_epoch, verbose=cell.verbose, keep_model=cell.save_model
            )
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            with contextlib.suppress(Exception):  # best effort: the store itself may be what failed
                for run_id in run_ids.values():
                    tracker.finish(run_id, status, f"{type(exc).__name__}: {exc}")
            raise
        for i, result in zip(todo, results, strict=True):
            rows[i] = _log_result(tracker, run_ids[i], cell, cell.repeats[i], result)
            timing.train_seconds += result.train_seconds
    timing.mlflow_seconds = tracker.seconds - before
    return CellResult([rows[i] for i in range(len(cell.run_keys))], timing)


def finished_children(children: list) -> dict:
    """The child runs that count as trained (FINISHED, or FAILED on a NaN loss), by reuse key."""
    return {c.data.tags.get(tracking.KEY_TAG): c for c in children if c.info.status in ("FINISHED", "FAILED")}


def _log_result(tracker: tracking.Tracker, run_id: str, cell: Cell, repeat: int, result: engines.RepeatResult) -> dict:
    row = {
        "repeat": repeat,
        "seed": result.seed,
        "status": "FINISHED" if result.failure is None else "FAILED",
        "test_accuracy": result.test_accuracy,
        "mlflow_run_id": run_id,
        "reused": False,
    }
    tags = {HISTORY_TAG: json.dumps(result.history, separators=(",", ":")), LANES_TAG: ",".join(map(str, result.lanes))}
    if result.failure is None:
        tags[CONFUSION_TAG] = json.dumps(result.confusion, separators=(",", ":"))
        tracker.log_metrics(
            run_id,
            {
                "test_accuracy": result.test_accuracy,
                "test_loss": result.test_loss,
                "train_seconds": result.train_seconds,
            },
        )
        if result.model is not None:
            tracker.log_model(run_id, result.model)
    else:
        row["reason"] = result.failure
        tracker.log_metrics(run_id, {"train_seconds": result.train_seconds})
    tracker.set_tags(run_id, tags)
    tracker.finish(run_id, row["status"], result.failure)
    row["history"], row["confusion"] = result.history, result.confusion
    return row


def _reused(run, repeat: int, seed: int) -> dict:
    """A finished or failed repeat read back from its MLflow child run."""
    status = run.info.status
    row = {
        "repeat": repeat,
        "seed": seed,
        "status": status,
        "test_accuracy": run.data.metrics.get("test_accuracy") if status == "FINISHED" else None,
        "mlflow_run_id": run.info.run_id,
        "reused": True,
    }
    if status != "FINISHED":
        row["reason"] = run.data.tags.get(tracking.REASON_TAG)
    row["history"] = json.loads(run.data.tags.get(HISTORY_TAG, "{}"))
    row["confusion"] = json.loads(run.data.tags.get(CONFUSION_TAG, "null"))
    return row


def plan_cells(template: Cell, pending: list[int], seeds: list[int], keys: list[str], parts: int = 1) -> list[Cell]:
    """The cells of one configuration's pending repeats: one per repeat for the fit engine (repeats
    are independent programs, so workers can share them out); for the fused engine one compiled
    program of all of them, or `parts` programs when there are fewer configurations than workers (it
    also splits itself if its lanes do not fit in device memory)."""
    if template.engine == "fit":
        groups = [[i] for i in pending]
    else:
        size = -(-len(pending) // max(1, min(parts, len(pending))))
        groups = [pending[i : i + size] for i in range(0, len(pending), size)]
    return [
        replace(template, repeats=tuple(g), seeds=tuple(seeds[i] for i in g), run_keys=tuple(keys[i] for i in g))
        for g in groups
    ]


def train_arch(dataset: str, arch: str, prepared: Path, params: dict) -> dict:
    """Run the grid for one (dataset, architecture); returns the run file's document."""
    train_params = params["train"]
    stage = f"train-{dataset}@{arch}"
    root = tracking.repo_root()
    tracking_uri = tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"], root)
    if workers.on_ray() and not tracking_uri.startswith(("http://", "https://")):
        raise SeqsweepError(
            f"RAY_ADDRESS is set but MLflow logs to {tracking_uri}, which workers on other machines "
            "cannot write: serve one store with `mlflow server` and set MLFLOW_TRACKING_URI to it "
            "(README, Scaling out)"
        )
    platform = workers.cluster_platform() if workers.on_ray() else engines.local_platform()
    choice = engines.choose(train_params["engine"], platform, f"{dataset}:{arch}")
    if not choice.reason.startswith("asked for"):
        print(f"{stage}: engine {choice.engine} on {choice.backend} ({choice.reason})", file=sys.stderr)
    configure_backend(choice, train_params["deterministic"])
    arrays, meta = load_prepared(prepared, dataset)
    files = prepared_files(prepared)

    import keras
    from tqdm import tqdm

    from seqsweep import models

    architecture = models.get(dataset, arch)
    configs = grid.expand(params, architecture.epochs)
    repeats = train_params["repeats"]
    data_digest = digest_files([*files.values(), Path(prepared) / "meta.json"])
    code_digest = digest_files(code_files(dataset, choice.engine))
    runtime = (
        f"keras-{keras.__version__}-{keras.backend.backend()}-{choice.engine}-det{int(train_params['deterministic'])}"
    )
    synthetic = not meta.get("official", False)

    tracker = tracking.Tracker(tracking_uri, root)
    common_tags = {
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
        "git_commit": tracking.git_commit(root),
        "data_digest": data_digest,
        "code_digest": code_digest,
        "runtime": runtime,
        "engine": choice.engine,
        "backend": keras.backend.backend(),
        "data_synthetic": str(synthetic).lower(),
    }
    inputs = tracking.dataset_inputs(
        dataset,
        params["data"][dataset]["url"],
        synthetic,
        train=(arrays["X_train"], arrays["y_train"], digest_files([files["X_train"], files["y_train"]])),
        test=(arrays["X_test"], arrays["y_test"], digest_files([files["X_test"], files["y_test"]])),
    )
    experiment_id = tracker.experiment_id(dataset)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    template = Cell(
        dataset,
        arch,
        configs[0],
        (),
        (),
        (),
        "",
        experiment_id,
        choice.engine,
        engines.shape_kwargs(dataset, meta, arrays["X_train"]),
        common_tags,
        inputs,
        tracking_uri,
        owner,
        train_params["verbose"],
        train_params["save_model"],
    )

    timing = Timing()
    started = tracker.seconds
    parents, plans, rows = {}, [], {}
    for config in configs:
        base = {"dataset": dataset, "arch": arch, **config.as_params()}
        parent_key = _key(dataset, arch, config.key, data_digest, code_digest, runtime, train_params["seed"])
        parents[config.key] = tracker.open_parent(
            experiment_id, f"{arch} {config.key}", parent_key, base, common_tags, owner=owner
        )
        tracker.log_inputs(parents[config.key], inputs)
        children = tracker.children(experiment_id, parents[config.key])
        tracker.retire_stale(children)
        done = finished_children(children)
        seeds = [grid.repeat_seed(train_params["seed"], dataset, arch, config, r) for r in range(repeats)]
        keys = [_key(parent_key, r, seed) for r, seed in enumerate(seeds)]
        rows[config.key] = {r: _reused(done[k], r, seeds[r]) for r, k in enumerate(keys) if k in done}
        pending = [r for r in range(repeats) if keys[r] not in done]
        if pending:
            plans.append((replace(template, config=config, parent_id=parents[config.key]), pending, seeds, keys))
    timing.mlflow_seconds += tracker.seconds - started

    total = len(configs) * repeats
    n_workers = workers.count(train_params["workers"], platform, sum(len(p[1]) for p in plans), choice.engine)
    parts = -(-n_workers // max(1, len(plans)))  # fused programs split so that every worker has one
    cells = [cell for plan in plans for cell in plan_cells(*plan, parts=parts)]
    where = "Ray" if workers.on_ray() else f"{n_workers} worker{'s' * (n_workers > 1)}"
    done = total - sum(len(c.repeats) for c in cells)
    with tqdm(total=total, initial=done, desc=stage, unit="repeat", file=sys.stderr, dynamic_ncols=True) as progress:
        progress.set_postfix_str(f"{len(cells)} cells of {choice.engine} on {where}")
        for cell, result in workers.run(cells, arrays, Path(prepared), n_workers, platform, tracker):
            timing.add(result.timing)
            rows[cell.config.key].update({row["repeat"]: row for row in result.rows})
            progress.update(len(cell.repeats))

    started = tracker.seconds
    configs_doc = {}
    for config in configs:
        config_rows = [rows[config.key][r] for r in range(repeats)]
        finished = [row["test_accuracy"] for row in config_rows if row["status"] == "FINISHED"]
        stats = summarise(finished)
        n_failed = repeats - stats["n"]
        parent_id = parents[config.key]
        tracker.log_metrics(
            parent_id,
            {
                "test_accuracy_mean": stats["mean"],
                "test_accuracy_std": stats["std"],
                "test_accuracy_min": stats["min"],
                "test_accuracy_max": stats["max"],
                "n_finished": stats["n"],
                "n_failed": n_failed,
            },
        )
        tracker.finish(
            parent_id,
            "FINISHED" if finished else "FAILED",
            None if finished else "no repeat of this configuration finished",
        )
        configs_doc[config.key] = {
            **config.as_params(),
            **stats,
            "n_failed": n_failed,
            "mlflow_parent_run_id": parent_id,
            "repeats": config_rows,
        }
    timing.mlflow_seconds += tracker.seconds - started
    return {
        "dataset": dataset,
        "arch": arch,
        "synthetic": synthetic,
        "classes": meta.get("classes"),
        "data_digest": data_digest,
        "code_digest": code_digest,
        "runtime": runtime,
        "engine": choice.engine,
        "repeats": repeats,
        "timing": timing.doc(),
        "configs": configs_doc,
    }


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seqsweep.train", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=paths.DATASETS)
    parser.add_argument("arch", help="an architecture listed in archs.<dataset>")
    parser.add_argument("prepared", type=Path, help="the prepared arrays (e.g. data/prepared/har)")
    parser.add_argument("output", type=Path, help="the run file to write (e.g. runs/har-lstm.json)")
    args = parser.parse_args(argv)
    params = load_params()
    with tracking.store_errors(tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"])):
        doc = train_arch(args.dataset, args.arch, args.prepared, params)
    atomic.write_json(args.output, doc)
    empty = [key for key, c in doc["configs"].items() if c["n"] == 0]
    timing = doc["timing"]
    stage = f"train-{args.dataset}@{args.arch}"
    if timing["mlflow_overhead"] is not None:
        print(
            f"{stage}: MLflow logging took {timing['mlflow_seconds']:.2f} s, "
            f"{100 * timing['mlflow_overhead']:.2f}% of {timing['train_seconds']:.1f} s training",
            file=sys.stderr,
        )
    if empty:
        raise SeqsweepError(
            f"{stage}: no repeat finished for configuration(s) {', '.join(empty)} "
            f"(see failure_reason in MLflow; results written to {args.output})"
        )


if __name__ == "__main__":
    main()
