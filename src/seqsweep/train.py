"""Stage train-<dataset>@<arch>: train every configuration of the grid `train.repeats` times, log each
repeat to MLflow, and write runs/<dataset>-<arch>.json (format: seqsweep.record).

    python -m seqsweep.train <dataset> <arch> <prepared folder> <run file>

The stage, top to bottom (`train_arch`):
  1. `runtime.resolve`: engine, backend, platform and flags, before Keras is imported;
  2. `describe_stage`: the data and code digests, the tags and dataset inputs every run carries;
  3. `open_configurations`: a parent MLflow run per configuration, the repeats MLflow already holds
     a result for (reused), and the cells of work left;
  4. `train_cells`: the cells, in this process, a local worker pool or on Ray (seqsweep.workers),
     each trained by an engine (seqsweep.engines) and logged by seqsweep.cell;
  5. `close_configurations`: each parent's summary, and the run file's document.

Resumable: a repeat whose MLflow child run holds a result (FINISHED, or FAILED as diverged) under the
same reuse key is not trained again. A crash is not a result: its repeats are marked KILLED with the
cause, the stage stops naming it, and the next run trains them again (seqsweep.record)."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqsweep import atomic, cell, engines, grid, paths, plan, prepared, record, runtime, stopping, tracking, workers
from seqsweep.checksum import digest
from seqsweep.errors import SeqsweepError, exit_on_error
from seqsweep.params import load_params

PACKAGE_DIR = Path(__file__).resolve().parent


def code_files(dataset: str, engine: str) -> list[Path]:
    """The source files that decide a repeat's result; their digest is part of every reuse key."""
    names = ("engines/__init__.py", f"engines/{engine}.py", "grid.py", "models/__init__.py", f"models/{dataset}.py")
    return [PACKAGE_DIR / name for name in names]


@dataclass
class Stage:
    """What every configuration of one training stage shares."""

    dataset: str
    arch: str
    params: dict
    runtime: runtime.Runtime
    tracker: tracking.Tracker
    arrays: dict[str, np.ndarray]
    meta: dict
    prepared: Path
    validation: prepared.Validation = prepared.Validation()
    held_out: prepared.Split | None = None  # the validation split, when there is one
    data_digest: str = ""
    code_digest: str = ""
    tags: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    @property
    def name(self) -> str:
        return f"train-{self.dataset}@{self.arch}"

    @property
    def synthetic(self) -> bool:
        return not self.meta.get("official", False)


@dataclass
class Configuration:
    """One configuration of the grid: its parent run, seeds, reuse keys and the rows known so far."""

    config: grid.Config
    parent_id: str
    seeds: list[int]
    keys: list[str]
    rows: dict[int, dict]  # repeat -> row of the run file

    @property
    def pending(self) -> list[int]:
        return [r for r in range(len(self.seeds)) if r not in self.rows]


def check_store(tracking_uri: str) -> None:
    if workers.on_ray() and not tracking_uri.startswith(("http://", "https://")):
        raise SeqsweepError(
            f"RAY_ADDRESS is set but MLflow logs to {tracking_uri}, which workers on other machines "
            "cannot write: serve one store with `mlflow server` and set MLFLOW_TRACKING_URI to it "
            "(README, Scaling out)"
        )


def describe_stage(stage: Stage) -> None:
    """The digests that key reuse, the tags every run carries and the MLflow dataset inputs."""
    stage.data_digest = prepared.data_digest(stage.prepared)
    stage.code_digest = digest(code_files(stage.dataset, stage.runtime.engine))
    stage.held_out = prepared.split(stage.arrays, stage.validation) if stage.validation else None
    stage.tags = {
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
        "git_commit": tracking.git_commit(stage.tracker.root),
        "data_digest": stage.data_digest,
        "code_digest": stage.code_digest,
        **stage.runtime.tags(),
        "data_synthetic": str(stage.synthetic).lower(),
        "validation": stage.held_out.describe() if stage.held_out else "none",
    }
    stage.inputs = tracking.dataset_inputs(
        stage.dataset,
        stage.params["data"][stage.dataset]["url"],
        stage.synthetic,
        train=(stage.arrays["X_train"], stage.arrays["y_train"], prepared.split_digest(stage.prepared, "train")),
        test=(stage.arrays["X_test"], stage.arrays["y_test"], prepared.split_digest(stage.prepared, "test")),
    )


def open_configurations(stage: Stage, configs: list[grid.Config], experiment_id: str) -> list[Configuration]:
    """A parent run per configuration (the existing one with the same key, or a new one), with the
    repeats MLflow already holds a result for read back; runs left RUNNING by a dead stage are KILLED."""
    train = stage.params["train"]
    tracker = stage.tracker
    out = []
    for config in configs:
        parent_key = record.parent_key(
            stage.dataset,
            stage.arch,
            config.key,
            stage.data_digest,
            stage.code_digest,
            stage.runtime.key(),
            train["seed"],
            stage.validation.share,
        )
        base = {"dataset": stage.dataset, "arch": stage.arch, **config.as_params()}
        parent_id = tracker.open_parent(
            experiment_id, f"{stage.arch} {config.label}", parent_key, base, stage.tags, owner=stage.owner
        )
        tracker.log_inputs(parent_id, stage.inputs)
        children = tracker.children(experiment_id, parent_id)
        tracker.retire_stale(children)
        done = record.trained(children)
        seeds = [grid.repeat_seed(train["seed"], stage.dataset, stage.arch, config, r) for r in range(train["repeats"])]
        keys = [record.repeat_key(parent_key, r, seed) for r, seed in enumerate(seeds)]
        rows = {r: record.read_row(tracker.client, done[k], r, seeds[r]) for r, k in enumerate(keys) if k in done}
        out.append(Configuration(config, parent_id, seeds, keys, rows))
    return out


def plan_cells(
    stage: Stage, configurations: list[Configuration], experiment_id: str, n_workers: int
) -> list[cell.Cell]:
    """The cells of the configurations' pending repeats, grouped as `cell.groups` says."""
    todo = [c for c in configurations if c.pending]
    template = functools.partial(
        cell.Cell,
        stage.dataset,
        stage.arch,
        experiment_id=experiment_id,
        runtime=stage.runtime,
        shape=engines.shape_kwargs(stage.dataset, stage.meta, stage.arrays["X_train"]),
        tags=stage.tags,
        inputs=stage.inputs,
        tracking_uri=stage.tracker.uri,
        owner=stage.owner,
        verbose=stage.params["train"]["verbose"],
        save_model=stage.params["train"]["save_model"],
        validation=stage.validation,
    )
    split = cell.groups(
        stage.runtime.engine,
        [c.config for c in todo],
        [c.pending for c in todo],
        n_workers,
        engines.max_lanes(stage.runtime.platform),
    )
    return [
        template(
            configs=tuple(todo[c].config for c, _ in members),
            repeats=tuple(r for _, r in members),
            seeds=tuple(todo[c].seeds[r] for c, r in members),
            run_keys=tuple(todo[c].keys[r] for c, r in members),
            parent_ids=tuple(todo[c].parent_id for c, _ in members),
        )
        for members in split
    ]


def train_cells(
    stage: Stage, configurations: list[Configuration], cells: list[cell.Cell], n_workers: int
) -> cell.Timing:
    """Train the cells, with a progress bar of repeat-epochs; each cell's rows land in its configuration.
    If training stops (a crash, a dead worker, a signal), the runs this stage left RUNNING are KILLED."""
    by_parent = {c.parent_id: c for c in configurations}
    where = "Ray" if workers.on_ray() else f"{n_workers} worker{'s' * (n_workers > 1)}"
    timing = cell.Timing()
    with EpochProgress(stage, configurations, cells, f"{len(cells)} cells of {stage.runtime.engine} on {where}") as bar:
        try:
            for done, result in workers.run(
                cells, stage.arrays, stage.prepared, n_workers, stage.runtime, stage.tracker
            ):
                timing.add(result.timing)
                for parent_id, row in zip(done.parent_ids, result.rows, strict=True):
                    by_parent[parent_id].rows[row["repeat"]] = row
                bar.cell_done(done, result.rows)
        except BaseException as exc:
            _retire_unfinished(stage, configurations, exc)
            if isinstance(exc, cell.CellError):
                raise cell.CellError(f"{stage.name}: {exc}") from exc
            raise
    return timing


class EpochProgress:
    """The stage's progress bar, in repeat-epochs: those of finished cells, plus the epochs the stage's
    RUNNING repeats have logged so far (their `epochs_done` tag, read from the store every few seconds:
    they train in this process, in pool workers or as Ray tasks alike, and each logs its epochs there).
    A fused cell's repeats finish together, so counting repeats alone would sit at 0 for its whole run."""

    EVERY = 2.0  # seconds between two reads of the store

    def __init__(self, stage: Stage, configurations: list[Configuration], cells: list[cell.Cell], where: str):
        from tqdm import tqdm

        self.stage, self.where = stage, where
        self.repeats = sum(len(c.seeds) for c in configurations)
        self.repeats_done = self.repeats - sum(len(c.repeats) for c in cells)
        total = sum(len(c.seeds) * c.config.epochs for c in configurations)
        self.finished = total - sum(config.epochs for c in cells for config in c.configs)
        self.in_flight: dict[str, int] = {}  # run id -> epochs, as last read
        self.done_ids: set[str] = set()  # runs of finished cells (a read may predate their end)
        self.bar = tqdm(
            total=total, initial=self.finished, desc=stage.name, unit="epoch", file=sys.stderr, dynamic_ncols=True
        )
        self.query = (
            f"tags.{record.OWNER_TAG} = '{stage.owner}' and tags.{record.KIND_TAG} = 'repeat' "
            "and attributes.status = 'RUNNING'"
        )
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="epoch-progress", daemon=True)
        self._show()

    def __enter__(self) -> EpochProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # not joined: a read in flight when the store stopped answering would hold the stage's exit for
        # the client's whole retry window (a minute with the default retries); the thread is a daemon
        with self.bar.get_lock():
            self.stopped.set()
            self.bar.close()

    def cell_done(self, done: cell.Cell, rows: list[dict]) -> None:
        with self.bar.get_lock():
            self.done_ids.update(row["mlflow_run_id"] for row in rows)
            self.finished += sum(config.epochs for config in done.configs)
            self.repeats_done += len(done.repeats)
            self._show()

    def _watch(self) -> None:
        experiment_id = None
        while not self.stopped.wait(self.EVERY):
            try:  # best effort: a store that fails shows in the training itself
                experiment_id = (
                    experiment_id or self.stage.tracker.client.get_experiment_by_name(self.stage.dataset).experiment_id
                )
                runs = self.stage.tracker.client.search_runs([experiment_id], self.query, max_results=5000)
            except Exception:
                continue
            with self.bar.get_lock():
                if self.stopped.is_set():  # the bar is closed
                    return
                self.in_flight = {r.info.run_id: int(r.data.tags.get(record.EPOCHS_TAG, 0)) for r in runs}
                self._show()

    def _show(self) -> None:
        running = sum(epochs for run_id, epochs in self.in_flight.items() if run_id not in self.done_ids)
        self.bar.n = min(self.bar.total, self.finished + running)
        self.bar.set_postfix_str(f"{self.repeats_done}/{self.repeats} repeats done, {self.where}", refresh=True)


def _retire_unfinished(stage: Stage, configurations: list[Configuration], exc: BaseException) -> None:
    """Mark KILLED what this stage's workers left RUNNING (a worker that died cannot)."""
    if isinstance(exc, tracking.StoreError) or tracking.is_store_error(exc):
        return  # the store is what failed: the next run retires them
    kind, reason = record.crash(exc)
    kind = record.INTERRUPTED if kind == record.INTERRUPTED else record.KILLED  # stopped, not crashed themselves
    try:
        with stopping.stop_deferred(then_check=False):  # the clean-up of a stop, not stopped by it
            experiment_id = stage.tracker.experiment_id(stage.dataset)
            for c in configurations:
                children = stage.tracker.children(experiment_id, c.parent_id)
                stage.tracker.retire_stale(
                    children, owner=stage.owner, keys=set(c.keys), why=f"stage stopped: {reason}", kind=kind
                )
    except Exception:  # best effort: the store may be what failed; a rerun retires them
        pass


def close_configurations(stage: Stage, configurations: list[Configuration]) -> dict:
    """Each parent's summary of its repeats, and the run file's `configs`."""
    docs = {}
    for c in configurations:
        doc = record.config_doc(c.config, [c.rows[r] for r in range(len(c.seeds))], c.parent_id)
        stage.tracker.log_metrics(
            c.parent_id,
            {
                "test_accuracy_mean": doc["mean"],
                "test_accuracy_std": doc["std"],
                "test_accuracy_min": doc["min"],
                "test_accuracy_max": doc["max"],
                "n_finished": doc["n"],
                "n_failed": doc["n_failed"],
                **({"val_accuracy_mean": doc["val_mean"]} if doc["val_mean"] is not None else {}),
                **({"val_accuracy_std": doc["val_std"]} if doc["val_std"] is not None else {}),
            },
        )
        finished = doc["n"] > 0
        stage.tracker.finish(
            c.parent_id,
            "FINISHED" if finished else "FAILED",
            None if finished else "no repeat of this configuration finished",
        )
        docs[c.config.key] = doc
    return docs


def train_arch(dataset: str, arch: str, prepared_dir: Path, params: dict) -> dict:
    """Run the grid for one (dataset, architecture); returns the run file's document."""
    train = params["train"]
    root = tracking.repo_root()
    tracking_uri = tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"], root)
    check_store(tracking_uri)
    model = f"{dataset}:{arch}"
    runtimes = runtime.decide(
        train["engine"], train["deterministic"], [*plan.models_of(params), model], workers.on_ray()
    )
    rt = runtimes[model]
    rt.apply()  # before Keras is imported, below
    if not rt.reason.startswith("asked for"):
        print(f"train-{dataset}@{arch}: engine {rt.engine} on {rt.backend} ({rt.reason})", file=sys.stderr)
    # A new model per repeat makes TensorFlow warn about retracing; expected here, so only errors show.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    arrays, meta = prepared.load(prepared_dir, dataset)

    from seqsweep import models

    configs = grid.expand(params, models.get(dataset, arch).epochs)
    tracker = tracking.Tracker(tracking_uri, root)
    print(study_line(params, runtimes, tracker, root, f"train-{dataset}@{arch}"), file=sys.stderr)
    validation = prepared.Validation(train["validation"], train["seed"])
    stage = Stage(dataset, arch, params, rt, tracker, arrays, meta, Path(prepared_dir), validation)
    describe_stage(stage)

    started = tracker.seconds
    experiment_id = tracker.experiment_id(dataset)
    configurations = open_configurations(stage, configs, experiment_id)
    opening = tracker.seconds - started
    pending = sum(len(c.pending) for c in configurations)
    n_workers, _ = workers.count(train["workers"], rt.platform, pending, rt.engine)
    cells = plan_cells(stage, configurations, experiment_id, n_workers)
    timing = train_cells(stage, configurations, cells, n_workers)

    started = tracker.seconds
    configs_doc = close_configurations(stage, configurations)
    timing.mlflow_seconds += opening + tracker.seconds - started
    return {
        "dataset": dataset,
        "arch": arch,
        "synthetic": stage.synthetic,
        "classes": meta.get("classes"),
        "data_digest": stage.data_digest,
        "code_digest": stage.code_digest,
        "runtime": rt.key(),
        "engine": rt.engine,
        "repeats": train["repeats"],
        "timing": timing.doc(),
        "validation": validation_doc(stage),
        "configs": configs_doc,
    }


def study_line(params: dict, runtimes: dict, tracker: tracking.Tracker, root: Path, stage: str) -> str:
    """The plan's one line for the whole study, from the calibration cache (seqsweep.plan)."""
    try:
        return plan.one_line(plan.study(params, runtimes=runtimes, tracker=tracker, root=root, calibrate=False), stage)
    except SeqsweepError as exc:  # the plan only informs; what it could not read, training reports
        return f"plan: no estimate ({exc})"


def validation_doc(stage: Stage) -> dict | None:
    """The run file's record of the validation split (None without one)."""
    held = stage.held_out
    if held is None:
        return None
    return {
        "share": stage.validation.share,
        "held_out": held.held_out,
        "n_train": len(held.train),
        "n_val": len(held.val),
        "digest": held.digest,
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
    own_process = __name__ == "__main__"  # the stage's own process (not a caller's, e.g. a test's)
    if own_process:
        stopping.stop_on_signals()  # a killed `dvc repro` stops training as Ctrl-C does
        runtime.drop_stderr_lines()  # TensorFlow's one meaningless error line per fit, and only that
    stage = f"train-{args.dataset}@{args.arch}"
    try:
        with tracking.store_errors(tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"])):
            doc = train_arch(args.dataset, args.arch, args.prepared, params)
    except KeyboardInterrupt as exc:
        message = (
            f"{stage}: interrupted ({exc or 'Ctrl-C'}); finished repeats are kept in MLflow, the interrupted "
            "ones are marked KILLED and the next `dvc repro` trains them again"
        )
        if own_process:  # a JAX computation may still run: no teardown (seqsweep.stopping)
            print(f"error: {message}", file=sys.stderr)
            stopping.exit_now(1)
        raise SeqsweepError(message) from None
    atomic.write_json(args.output, doc)
    empty = [key for key, c in doc["configs"].items() if c["n"] == 0]
    timing = doc["timing"]
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
