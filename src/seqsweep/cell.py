"""A cell: some repeats of one configuration, or for the fused engine of configurations that differ only
in their dropout rate, trained by one engine call wherever a worker runs it (the stage's own process,
a local pool worker, a Ray task), each repeat logged to its own MLflow child run under its
configuration's parent run. The stage plans cells (`groups`); workers run them (`run_cell`); both
import this module.

Idempotent: a cell run again (a retried Ray task) reuses what its first attempt finished and marks
KILLED the runs that attempt left RUNNING. An exception during training marks the cell's new runs
KILLED with the cause (`seqsweep.record`: a crash is not a result) and is raised again as CellError."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from seqsweep import engines, grid, prepared, record, tracking
from seqsweep.errors import SeqsweepError
from seqsweep.runtime import Runtime, requirements, seen
from seqsweep.stopping import check_stop, stop_deferred


@dataclass
class Timing:
    """Where a stage's time went: training (inside the engines) and writing to MLflow."""

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
    """Everything a worker, here or on another machine, needs to train and log some repeats."""

    dataset: str
    arch: str
    configs: tuple[grid.Config, ...]  # each repeat's configuration
    repeats: tuple[int, ...]  # each repeat's number within its configuration
    seeds: tuple[int, ...]
    run_keys: tuple[str, ...]  # each repeat's reuse key
    parent_ids: tuple[str, ...]  # each repeat's configuration's parent run
    experiment_id: str
    runtime: Runtime
    shape: dict  # the builder's shape keywords (engines.shape_kwargs)
    tags: dict  # tags every run of the stage carries
    inputs: list = field(repr=False)  # MLflow dataset inputs
    tracking_uri: str = ""
    owner: str = ""  # host:pid of the stage process that planned the cell
    verbose: int = 0
    save_model: bool = False
    validation: prepared.Validation = prepared.Validation()  # held out of the training set (train.validation)

    @property
    def label(self) -> str:
        """e.g. `lstm u10-b64-d0p25-e15 repeats 0-4, u10-b64-d0p5-e15 repeats 0-4`."""
        parts = []
        for config in dict.fromkeys(self.configs):
            mine = [r for c, r in zip(self.configs, self.repeats, strict=True) if c == config]
            first, last = mine[0], mine[-1]
            parts.append(f"{config.key} repeat{'s' * (first != last)} {first}{f'-{last}' * (first != last)}")
        return f"{self.arch} {', '.join(parts)}"

    def program(self, indices: list[int]) -> engines.Program:
        """The engine's program for these of the cell's repeats."""
        configs = [self.configs[i] for i in indices]
        dropouts = tuple(c.dropout for c in configs)
        return engines.Program(
            self.dataset,
            self.arch,
            configs[0] if configs else self.configs[0],
            tuple(self.seeds[i] for i in indices),
            self.shape,
            dropouts if len(set(dropouts)) > 1 else (),
        )


@dataclass
class CellResult:
    rows: list[dict]  # one per repeat of the cell, in its order
    timing: Timing


class CellError(SeqsweepError):
    """Training a cell raised; its repeats were marked KILLED and the next run trains them again."""

    @classmethod
    def crashed(cls, cell: Cell, cause: str) -> CellError:
        return cls(
            f"training crashed in {cell.label}: {cause}; its repeats are marked KILLED in MLflow and "
            "the next `dvc repro` trains them again"
        )


def family(config: grid.Config) -> tuple:
    """What configurations trained in one fused program share: all but a dropout rate in (0, 1)
    (each lane drops out at its own rate; a rate of 0 or 1 changes the model's variables)."""
    return (config.units, config.batch_size, config.epochs, None if 0 < config.dropout < 1 else config.dropout)


def groups(
    engine: str, configs: list[grid.Config], pendings: list[list[int]], workers: int, max_lanes: int | None = None
) -> list[list[tuple]]:
    """How the configurations' pending repeats (`pendings`, one list per configuration) are split into
    cells, each a list of (configuration index, repeat): one per repeat for the fit engine (repeats
    are independent programs, so workers can share them out); for the fused engine one compiled
    program of all the repeats of configurations that differ only in dropout (the dropout axis fused),
    split into equal programs of at most `max_lanes` (engines.max_lanes: on a CPU a configuration's
    10 repeats), and into as many as it takes for every worker to have one when there are fewer such
    families than workers (a program also splits itself if its lanes do not fit in device memory)."""
    if engine == "fit":
        return [[(c, r)] for c, pending in enumerate(pendings) for r in pending]
    families: dict[tuple, list[tuple]] = {}
    for c, (config, pending) in enumerate(zip(configs, pendings, strict=True)):
        families.setdefault(family(config), []).extend((c, r) for r in pending)
    members = [m for m in families.values() if m]
    parts = -(-workers // max(1, len(members)))
    out = []
    for family_members in members:
        n = len(family_members)
        programs = min(n, max(parts, -(-n // max_lanes) if max_lanes else 1))
        size = -(-n // programs)
        out += [family_members[i : i + size] for i in range(0, n, size)]
    return out


def run_cell(cell: Cell, arrays: dict[str, np.ndarray], tracker: tracking.Tracker | None = None) -> CellResult:
    """Train the cell's repeats that MLflow does not hold a result for yet, each in its own child run.
    A failure of the store raises StoreError naming it, wherever the cell runs."""
    with tracking.store_errors(cell.tracking_uri):
        tracker = tracker or tracking.Tracker(cell.tracking_uri)
        return _run_cell(cell, arrays, tracker)


def _run_cell(cell: Cell, arrays: dict[str, np.ndarray], tracker: tracking.Tracker) -> CellResult:
    # where this cell trains (maybe on another machine) and what its training code actually runs with
    where = {"device": tracking.device_name(), "worker": f"{socket.gethostname()}:{os.getpid()}", **seen()}
    timing = Timing()
    before = tracker.seconds
    parents = dict.fromkeys(cell.parent_ids)
    children = [run for parent in parents for run in tracker.children(cell.experiment_id, parent)]
    tracker.retire_stale(children, owner=cell.owner, keys=set(cell.run_keys))
    done = record.trained(children)
    todo = [i for i, key in enumerate(cell.run_keys) if key not in done]
    rows = {
        i: record.read_row(tracker.client, done[key], cell.repeats[i], cell.seeds[i])
        for i, key in enumerate(cell.run_keys)
        if key in done
    }
    run_ids: dict[int, str] = {}
    try:
        for i in todo:
            run_ids[i] = _start_repeat(tracker, cell, i, where)
        program = cell.program(todo)

        told: dict[int, float] = {}  # lane -> when its epochs_done tag was last written

        def on_epoch(index: int, epoch: int, logs: dict) -> None:
            check_stop()  # a stop request that a library swallowed stops the cell here
            # the progress tag (read every 2 s by the stage) at most once a second per repeat, and at
            # the last epoch: on SQLite it adds 40% to the epoch's write (4 ms), which short epochs feel
            now = time.monotonic()
            tags = None
            if epoch == program.config.epochs or now - told.get(index, -1.0) >= 1.0:
                tags, told[index] = {record.EPOCHS_TAG: epoch}, now
            tracker.log_metrics(run_ids[todo[index]], logs, step=epoch, tags=tags)

        results = []
        if todo:
            results = engines.train(
                cell.runtime.engine,
                program,
                prepared.with_validation(arrays, cell.validation),
                on_epoch=on_epoch,
                verbose=cell.verbose,
                keep_model=cell.save_model,
            )
            check_stop()  # stopped during the last epoch: none of it is a result
    except BaseException as exc:
        store_failed = isinstance(exc, tracking.StoreError) or tracking.is_store_error(exc)
        kind, reason = record.crash(exc)
        if not store_failed:  # (a store that stopped answering would make each write wait out its retries)
            try:
                with stop_deferred(then_check=False):  # the clean-up of a stop, not stopped by it
                    for run_id in run_ids.values():
                        tracker.finish(run_id, record.STATUS[kind], reason, kind)
            except Exception:  # the original error is what the user needs; the next run retires them
                pass
        if kind == record.CRASHED and not isinstance(exc, SeqsweepError) and not store_failed:
            raise CellError.crashed(cell, reason) from exc
        raise
    model_requirements = requirements(cell.runtime.backend) if cell.save_model else []
    for i, result in zip(todo, results, strict=True):
        rows[i] = record.log_result(tracker, run_ids[i], cell.repeats[i], result, model_requirements)
        timing.train_seconds += result.train_seconds
    timing.mlflow_seconds = tracker.seconds - before
    return CellResult([rows[i] for i in range(len(cell.run_keys))], timing)


def _start_repeat(tracker: tracking.Tracker, cell: Cell, i: int, where: dict) -> str:
    run_id = tracker.start_run(
        cell.experiment_id,
        f"r{cell.repeats[i]} · {cell.arch} {cell.configs[i].label}",  # the repeat first: the UI cuts long names
        cell.run_keys[i],
        "repeat",
        {
            "dataset": cell.dataset,
            "arch": cell.arch,
            **cell.configs[i].as_params(),
            "repeat": cell.repeats[i],
            "seed": cell.seeds[i],
        },
        {**cell.tags, **where},
        parent_id=cell.parent_ids[i],
        owner=cell.owner,
    )
    tracker.log_inputs(run_id, cell.inputs)
    return run_id
