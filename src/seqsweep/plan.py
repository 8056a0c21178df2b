"""The study before it runs: per training stage, what is left to train, how, and for how long.

    python -m seqsweep.plan [-S key=value ...] [--json] [--no-calibrate]

For the current params.yaml (with `-S` overrides in `dvc exp run -S`'s syntax, e.g.
`-S model.units=[10,100] -S train.repeats=3`), each training stage's configurations and repeats, how
many of them MLflow already holds a result for (under the same reuse keys a stage uses, so a resumed
or grown study shows only what is left), the engine, backend and workers the stage would choose and
why, and its estimated wall time and peak memory; then the study's total. It trains nothing of the
study and writes nothing but its calibration cache.

The estimate: each program the stage would run (a fit repeat, or a fused program of its lanes) costs
what a short calibration of its shape measured on this machine (seqsweep.calibration: set-up,
seconds per step, peak memory; cached per machine and library versions, so a second plan is
instant), scaled to the real epochs and data; the programs are handed to the stage's workers in the
stage's order, as its pool does; the stage adds its start-up (measured), reading and hashing the
prepared data (measured here), and MLflow's writes (constants below, measured in BENCHMARKS.md).
Stages run one after another, as `dvc repro` runs them. How close it comes is in BENCHMARKS.md.
With RAY_ADDRESS set, the cluster's CPUs are taken to be like this machine's.

`dvc repro` prints the plan's one-line total at the start of each training stage, from the cache
(`one_line`); it never calibrates there."""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seqsweep import calibration, cell, engines, grid, prepared, record, runtime, tracking, workers
from seqsweep.checksum import digest
from seqsweep.errors import exit_on_error
from seqsweep.params import load_params
from seqsweep.paths import DATASETS

# MLflow's share of a stage (SQLite store, BENCHMARKS.md "MLflow logging overhead"): opening a
# configuration's parent run and reading what it holds, starting and finishing a repeat's run, and
# one epoch's metrics of one repeat.
OPEN_SECONDS = 0.15
REPEAT_LOG_SECONDS = 0.1
EPOCH_LOG_SECONDS = 0.01
DVC_SECONDS = 2.0  # what `dvc repro` spends around each stage (hashing its deps and outs, locking)

# The published sizes (../shared/reference/study.md), for a dataset not prepared yet.
PUBLISHED = {
    "har": {"n_train": 7352, "n_test": 2947, "example": (128, 9), "classes": 6},
    "imdb": {"n_train": 25000, "n_test": 25000},
}


@dataclass
class Data:
    """What the training stages of a dataset read: sizes and shapes, and the digest of the prepared arrays."""

    dataset: str
    prepared: bool
    n_train: int  # windows an epoch covers (without the validation split)
    n_test: int
    n_val: int
    example: tuple[int, ...]
    builder: dict
    nbytes: int
    digest: str = ""
    seconds: float = 0.0  # reading and hashing them, as a stage does


@dataclass
class StagePlan:
    name: str
    dataset: str
    arch: str
    configurations: int
    repeats: int
    held: int  # repeats MLflow holds a result for
    engine: str
    backend: str
    engine_why: str
    workers: int
    workers_why: str
    programs: int
    seconds: float | None  # None: some shape is not calibrated
    peak_bytes: int | None
    missing: list[str] = field(default_factory=list)  # shapes not calibrated

    @property
    def left(self) -> int:
        return self.repeats - self.held


@dataclass
class StudyPlan:
    machine: str
    tracking_uri: str
    overrides: list[str]
    data: dict[str, Data]
    stages: list[StagePlan]

    @property
    def seconds(self) -> float | None:
        if any(s.seconds is None for s in self.stages):
            return None
        return sum(s.seconds for s in self.stages)

    @property
    def peak_bytes(self) -> int | None:
        peaks = [s.peak_bytes for s in self.stages]
        return None if None in peaks else max(peaks, default=0)

    def doc(self) -> dict:
        out = asdict(self)
        out.update(seconds=self.seconds, peak_bytes=self.peak_bytes)
        for stage, plan in zip(out["stages"], self.stages, strict=True):
            stage["left"] = plan.left
        return out


# ---- the study ----------------------------------------------------------------------------------------


def models_of(params: dict) -> list[str]:
    """Every (dataset, architecture) the study trains, as 'har:lstm', in dvc.yaml's order."""
    return [f"{dataset}:{arch}" for dataset in DATASETS for arch in params["archs"][dataset]]


# ---- what the stages read ------------------------------------------------------------------------------


def read_data(dataset: str, params: dict, folder: Path) -> Data:
    """The prepared arrays' sizes and digest, or the published sizes when they are not prepared yet."""
    from seqsweep import engines

    validation = prepared.Validation(params["train"]["validation"], params["train"]["seed"])
    if (folder / "meta.json").is_file():
        started = time.perf_counter()
        arrays, meta = prepared.load(folder, dataset, mmap=True)
        held = prepared.split(arrays, validation) if validation else None
        data_digest = prepared.data_digest(folder)
        n = len(arrays["X_train"])
        return Data(
            dataset,
            True,
            n - (len(held.val) if held else 0),
            len(arrays["X_test"]),
            len(held.val) if held else 0,
            tuple(arrays["X_train"].shape[1:]),
            engines.shape_kwargs(dataset, meta, arrays["X_train"]),
            sum(a.nbytes for a in arrays.values()),
            data_digest,
            time.perf_counter() - started,
        )
    sizes = PUBLISHED[dataset]
    if dataset == "har":
        example = sizes["example"]
        builder = {"timesteps": example[0], "channels": example[1], "n_classes": sizes["classes"]}
        item = 4 * example[0] * example[1] + 8  # float32 window, int64 label
    else:
        maxlen = params["data"]["imdb"]["maxlen"]
        example, builder = (maxlen,), {"num_words": params["data"]["imdb"]["num_words"], "maxlen": maxlen}
        item = 4 * maxlen + 8
    n_val = round(validation.share * sizes["n_train"])
    return Data(
        dataset,
        False,
        sizes["n_train"] - n_val,
        sizes["n_test"],
        n_val,
        example,
        builder,
        item * (sizes["n_train"] + sizes["n_test"]),
    )


def held_results(params: dict, root: Path, tracker: tracking.Tracker | None) -> dict[str, set[str]]:
    """Per dataset, the reuse keys of the repeats MLflow holds a result for (none when the store does
    not exist yet: the plan creates nothing)."""
    if tracker is None:
        uri = tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"], root)
        db = tracking.sqlite_path(uri)
        if db is not None and not db.is_file():
            return {}
        tracker = tracking.Tracker(uri, root)
    out = {}
    for dataset in DATASETS:
        if not params["archs"][dataset]:
            continue
        experiment = tracker.client.get_experiment_by_name(dataset)
        if experiment is None:
            continue
        repeats = tracker.find_runs(experiment.experiment_id, f"tags.{record.KIND_TAG} = 'repeat'")
        out[dataset] = set(record.trained(repeats))
    return out


# ---- the estimate ------------------------------------------------------------------------------------------


def _pending(params: dict, stage_runtime: runtime.Runtime, data: Data, arch: str, configs: list, held: set[str]):
    """Per configuration of `configs`, the repeat numbers MLflow holds no result for."""
    from seqsweep import train

    repeats, seed = params["train"]["repeats"], params["train"]["seed"]
    if not data.prepared or not held:
        return [list(range(repeats)) for _ in configs]
    code = digest(train.code_files(data.dataset, stage_runtime.engine))
    out = []
    for config in configs:
        parent = record.parent_key(
            data.dataset, arch, config.key, data.digest, code, stage_runtime.key(), seed, params["train"]["validation"]
        )
        seeds = [grid.repeat_seed(seed, data.dataset, arch, config, r) for r in range(repeats)]
        out.append([r for r, s in enumerate(seeds) if record.repeat_key(parent, r, s) not in held])
    return out


def _makespan(durations: list[float], n_workers: int) -> float:
    """Wall time of `durations` handed in order to `n_workers`, each taking the next when free."""
    free = [0.0] * max(1, n_workers)
    for seconds in durations:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def plan_stage(
    params: dict, model: str, stage_runtime: runtime.Runtime, data: Data, held: set[str], cache: calibration.Cache
) -> tuple[StagePlan, calibration.Group, list[calibration.Shape]]:
    """The stage's plan from the calibrations in `cache`, with the group and shapes it needs."""
    from seqsweep import models

    dataset, arch = model.split(":")
    train = params["train"]
    configs = grid.expand(params, models.get(dataset, arch).epochs)
    pendings = _pending(params, stage_runtime, data, arch, configs, held)
    left = sum(map(len, pendings))
    n_workers, workers_why = workers.count(train["workers"], stage_runtime.platform, left, stage_runtime.engine)
    cores = len(os.sched_getaffinity(0))
    threads = 1 if workers.on_ray() else (None if n_workers == 1 else max(1, cores // n_workers))
    group = calibration.Group(stage_runtime, threads)
    max_lanes = engines.max_lanes(stage_runtime.platform)
    programs = [
        (config, calibration.Shape(dataset, arch, config.units, config.batch_size, len(part), data.n_train,
                                   data.n_test, data.n_val, data.example, tuple(sorted(data.builder.items()))))
        for part in cell.groups(stage_runtime.engine, configs, pendings, n_workers, max_lanes)
        for config in [configs[part[0][0]]]  # the lanes share all but their dropout rates
    ]  # fmt: skip
    shapes = list(dict.fromkeys(shape for _, shape in programs))
    measured = {shape: cache.get(group, shape) for shape in shapes}
    startup = cache.startup(group)
    missing = [s for s in shapes if measured[s] is None]
    seconds = peak = None
    if not missing and (startup is not None or not programs):
        durations = [
            measured[shape].program_seconds(shape, config.epochs)
            + shape.lanes * (REPEAT_LOG_SECONDS + config.epochs * EPOCH_LOG_SECONDS)
            for config, shape in programs
        ]
        start = startup.seconds if startup else 0.0
        seconds = DVC_SECONDS + start + data.seconds + OPEN_SECONDS * len(configs) + _makespan(durations, n_workers)
        if n_workers > 1 and programs:
            seconds += start  # the pool's workers start (side by side) before their first program
        worker_peak = max((measured[s].program_bytes(s, data.nbytes) for s in shapes), default=0)
        base = (startup.rss_bytes if startup else 0) + data.nbytes
        peak = max(base, worker_peak) if n_workers == 1 else base + n_workers * worker_peak
    plan = StagePlan(
        f"train-{dataset}@{arch}",
        dataset,
        arch,
        len(configs),
        len(configs) * train["repeats"],
        len(configs) * train["repeats"] - left,
        stage_runtime.engine,
        stage_runtime.backend,
        stage_runtime.reason,
        n_workers,
        workers_why,
        len(programs),
        seconds,
        peak,
        [s.label for s in missing],
    )
    return plan, group, missing


def study(
    params: dict,
    *,
    overrides: list[str] = (),
    runtimes: dict[str, runtime.Runtime] | None = None,
    tracker: tracking.Tracker | None = None,
    root: Path | None = None,
    calibrate: bool = True,
    cache: calibration.Cache | None = None,
    say=lambda text: print(text, file=sys.stderr),
) -> StudyPlan:
    """The plan of every training stage; with `calibrate`, the shapes the cache lacks are measured
    first. `runtimes` (each model's, as `runtime.decide` gives them) and `tracker` when a stage asks."""
    root = root or tracking.repo_root()
    train = params["train"]
    names = models_of(params)
    runtimes = runtimes or runtime.decide(train["engine"], train["deterministic"], names, workers.on_ray())
    if "keras" not in sys.modules:  # the builders' epochs; this process trains nothing, any backend will do
        os.environ.setdefault(
            "KERAS_BACKEND", "jax" if any(r.backend == "jax" for r in runtimes.values()) else "tensorflow"
        )
    data = {d: read_data(d, params, root / "data" / "prepared" / d) for d in DATASETS if params["archs"][d]}
    held = held_results(params, root, tracker)
    cache = cache or calibration.Cache()

    def plans():
        return [
            plan_stage(params, m, runtimes[m], data[m.split(":")[0]], held.get(m.split(":")[0], set()), cache)
            for m in names
        ]

    planned = plans()
    todo: dict[calibration.Group, list[calibration.Shape]] = {}
    for _, group, missing in planned:
        todo.setdefault(group, []).extend(s for s in missing if s not in todo.get(group, []))
    if calibrate and any(todo.values()):
        count = sum(map(len, todo.values()))
        say(f"plan: calibrating {count} program shape{'s' * (count > 1)} on this machine (cached for the next plan)")
        for group, shapes in todo.items():
            if shapes:
                calibration.calibrate(group, shapes, cache, say)
        planned = plans()
    uri = tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"], root)
    return StudyPlan(calibration.machine(), uri, list(overrides), data, [p for p, _, _ in planned])


# ---- what people read ------------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 600:
        return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def gib(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def one_line(plan: StudyPlan, stage: str | None = None) -> str:
    """The study's total in one line (and `stage`'s own part), as a training stage prints it."""
    left = sum(s.left for s in plan.stages)
    repeats = sum(s.repeats for s in plan.stages)
    n = len(plan.stages)
    text = f"plan: {left} of {repeats} repeat{'s' * (repeats != 1)} to train in {n} stage{'s' * (n != 1)}"
    if plan.seconds is None:
        missing = sorted({m for s in plan.stages for m in s.missing})
        return (
            f"{text}; no time estimate yet: {len(missing)} program shape{'s' * (len(missing) != 1)} not calibrated "
            "on this machine (`python -m seqsweep.plan` measures them, then estimates the study)"
        )
    text += f", about {duration(plan.seconds)} on this machine"
    own = next((s for s in plan.stages if s.name == stage), None)
    if own is not None:
        text += f" (this stage: {duration(own.seconds)})"
    return text + "; details: python -m seqsweep.plan"


def table(plan: StudyPlan) -> str:
    overrides = f" with -S {' '.join(plan.overrides)}" if plan.overrides else ""
    lines = [f"seqsweep plan: params.yaml{overrides}, on {plan.machine}; MLflow at {plan.tracking_uri}"]
    for d in plan.data.values():
        if d.prepared:
            lines.append(f"  {d.dataset}: prepared, {d.n_train} training windows ({d.n_val} held out), {d.n_test} test")
        else:
            lines.append(
                f"  {d.dataset}: not prepared yet: the published sizes ({d.n_train + d.n_val} training, {d.n_test} "
                "test); every repeat counted as left"
            )
    header = (
        "stage",
        "configs",
        "repeats",
        "in MLflow",
        "to train",
        "engine",
        "workers",
        "programs",
        "time",
        "peak memory",
    )
    rows = [
        (s.name, s.configurations, s.repeats, s.held, s.left, f"{s.engine} on {s.backend}", s.workers, s.programs,
         duration(s.seconds), gib(s.peak_bytes))
        for s in plan.stages
    ]  # fmt: skip
    total = (
        "study",
        sum(s.configurations for s in plan.stages),
        sum(s.repeats for s in plan.stages),
        sum(s.held for s in plan.stages),
        sum(s.left for s in plan.stages),
        "",
        "",
        sum(s.programs for s in plan.stages),
        duration(plan.seconds),
        gib(plan.peak_bytes),
    )
    cells = [tuple(map(str, r)) for r in (header, *rows, total)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r):
        return "  ".join(
            c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    lines += ["", fmt(cells[0]), *map(fmt, cells[1:-1]), fmt(cells[-1]), ""]
    for s in plan.stages:
        lines.append(
            f"{s.name}: {s.engine} ({s.engine_why}); {s.workers} worker{'s' * (s.workers > 1)} ({s.workers_why})"
        )
        if s.missing:
            lines.append(f"  not calibrated: {', '.join(s.missing)}")
    lines.append(
        "time: the stages one after another, as `dvc repro` runs them; peak memory: the largest stage's "
        "(its process and workers)"
    )
    return "\n".join(lines)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seqsweep.plan", description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param as `dvc exp run -S` does (repeatable)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--no-calibrate", action="store_true", help="estimate only from the cache; measure nothing")
    args = parser.parse_args(argv)
    params = load_params(overrides=args.overrides)
    plan = study(params, overrides=args.overrides, calibrate=not args.no_calibrate)
    print(json.dumps(plan.doc(), indent=2) if args.json else table(plan))


if __name__ == "__main__":
    main()
