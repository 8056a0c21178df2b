"""GPU check: how fast the fused JAX engine trains the study on one GPU, whether it learns what the fit
engine learns there, and how it sizes its programs to the device's memory. One process, at most
--budget-s seconds (8 minutes) on one GPU, compilation included:

1. parity: har lstm on learnable synthetic windows, the same seeds trained by the fused engine (one
   program of 5 lanes) and by the fit engine on JAX (5 `model.fit`), on the same device; Welch's
   test on their test accuracies (seqsweep.stats, as the report runs it).
2. lane split: the fused engine told the device has room for about 4 of 10 lanes (the free memory
   it reads is pretended, XLA's estimate of the program is real): the programs it chose.
3. speed, per architecture of params.yaml's `archs`, at the slowest settings (batch 16, units 200):
   seconds per repeat-epoch of the fused engine at 10 lanes (one configuration's repeats) and at 20
   (both dropout rates' repeats of one (units, batch size), each lane at its own rate: the program the
   training stage runs) and of one fit-style repeat on JAX (`model.fit`). Timing data is RANDOM, of the
   full shapes (HAR windows of 128 x 9, 6 classes; IMDB reviews of 500 ids < 5000, binary): speed does
   not depend on the values. Each engine runs as the training stage runs it (seqsweep.engines.train),
   for 2 epochs over `steps` full batches and the partial last batch of the real training set (7352 HAR
   / 25000 IMDB windows): the first epoch (building the lanes, compiling, warm-up) is reported as
   overhead, the second is timed and scaled to the steps of a full epoch. XLA's estimate of each fused
   program's memory (what the engine compares with the free memory) is shown beside the measured peak,
   where the device reports one (not on a CPU) and the program raised the process's peak.
4. the whole study (params.yaml's grid: units 10/100/200 x batch 16/32/64 x dropout 0.25/0.5, 10
   repeats, each architecture's epochs): repeat-epochs x the measured seconds per repeat-epoch, plus
   each program's overhead, with the most lanes measured for the architecture (20: as the stage groups a
   (units, batch size)'s repeats; 10 where the 20-lane program was skipped). Every configuration is
   charged the slowest settings' figure, so it is an upper bound; a second figure scales by the batches
   per epoch (per-step time taken as independent of batch size and units, which holds for these small
   models on a GPU only roughly).

Runs with keras 3, jax and numpy alone (no TensorFlow, MLflow, DVC, pandas or yaml; jax brings
scipy): it imports only seqsweep modules that need nothing else and puts the repository's src/ on
sys.path itself, so a checkout is enough. On the GPU machine, from the repository root:

    pip install -U "jax[cuda13]" keras           # if they are not there
    python bench/gpu_check.py --out gpu.json     # prints one table, writes everything as JSON

    python bench/gpu_check.py --smoke --out smoke.json   # the same code paths on the CPU at tiny sizes,
                                                         # about 25 s on 2 cores (tests/test_gpu_check.py)

What the study estimate needs is measured first (every architecture's 10-lane program and fit repeat),
the 20-lane programs after; programs the budget leaves no time for are skipped and listed, and a
failed one is listed with its error (exit status 1) without stopping the others."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

STARTED = time.perf_counter()
SRC = Path(__file__).resolve().parents[1] / "src"

# params.yaml's defaults, written out: the GPU host has no yaml to read it (tests/test_gpu_check.py
# checks that they still agree).
ARCHS = {
    "har": ("lstm", "cnn_lstm", "convlstm", "cnn1d", "stacked_lstm"),
    "imdb": ("lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm"),
}
GRID = {"units": [10, 100, 200], "batch_size": [16, 32, 64], "dropout": [0.25, 0.5], "repeats": 10, "seed": 42}


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the real shapes on a GPU, or tiny ones for the smoke run on a CPU."""

    n_train: dict[str, int]  # the training set an epoch covers (steps per epoch = ceil(n_train / batch))
    shape: dict[str, dict]  # the builders' shape keywords
    units: int
    batch: int
    dropout: float
    lanes: tuple[int, ...]  # fused programs timed: one configuration's repeats, then more lanes spanning the
    # grid's dropout rates (the stage's program: every rate's repeats of one (units, batch size))
    steps: int  # full batches timed per epoch (plus the partial last one, as in a real epoch)
    n_test: int  # the test set the engines predict at the end (not timed)
    parity: dict = field(default_factory=dict)
    split: tuple[int, int] = (10, 4)  # lanes asked for, lanes the pretended free memory has room for
    archs: tuple[tuple[str, str], ...] = tuple((d, a) for d, archs in ARCHS.items() for a in archs)


FULL = Sizes(
    n_train={"har": 7352, "imdb": 25000},
    shape={"har": {"timesteps": 128, "channels": 9, "n_classes": 6}, "imdb": {"num_words": 5000, "maxlen": 500}},
    units=200,
    batch=16,
    dropout=0.5,
    lanes=(10, 20),
    steps=20,
    n_test=64,
    parity={"n_train": 2048, "n_test": 1024, "timesteps": 128, "units": 100, "batch": 64, "epochs": 5, "repeats": 5},
)
# Every compilation costs seconds on a CPU, so the smoke run compiles as few programs as cover every
# code path: one architecture per dataset, no partial last batch (a multiple of the batch).
SMOKE = Sizes(
    n_train={"har": 96, "imdb": 64},
    shape={"har": {"timesteps": 32, "channels": 9, "n_classes": 6}, "imdb": {"num_words": 100, "maxlen": 16}},
    units=8,
    batch=8,
    dropout=0.5,
    lanes=(2, 3),
    steps=2,
    n_test=16,
    parity={"n_train": 96, "n_test": 96, "timesteps": 32, "units": 8, "batch": 32, "epochs": 2, "repeats": 2},
    split=(2, 1),
    archs=(("har", "lstm"), ("imdb", "lstm")),
)


def random_arrays(dataset: str, n_train: int, n_test: int, shape: dict, seed: int = 0) -> dict:
    """Random arrays of the prepared shapes and dtypes (HAR float32 windows, IMDB int32 ids)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        if dataset == "har":
            arrays[f"X_{split}"] = rng.normal(size=(n, shape["timesteps"], shape["channels"])).astype(np.float32)
            arrays[f"y_{split}"] = rng.integers(0, shape["n_classes"], n)
        else:
            arrays[f"X_{split}"] = rng.integers(1, shape["num_words"], (n, shape["maxlen"])).astype(np.int32)
            arrays[f"y_{split}"] = rng.integers(0, 2, n)
    return arrays


def learnable_har(n_train: int, n_test: int, timesteps: int, seed: int = 3) -> dict:
    """HAR-shaped windows whose class shifts the mean of the first channel, buried in unit noise, so
    that an ideal classifier is right about 3 times in 4 and a few epochs leave repeats spread
    below it. (seqsweep.tools.sample_data's generator needs yaml through seqsweep.checksum.)"""
    import numpy as np

    rng = np.random.default_rng(seed)
    shift = 2.0 / math.sqrt(timesteps)  # adjacent classes 2 standard deviations apart in the window's mean
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 6, n)
        X = rng.normal(size=(n, timesteps, 9))
        X[:, :, 0] += shift * (y[:, None] - 2.5)
        arrays[f"X_{split}"], arrays[f"y_{split}"] = X.astype(np.float32), y
    return arrays


@contextlib.contextmanager
def memory_watch(room_for: int | None = None):
    """Record XLA's estimate of every fused program the engine compiles (its `lanes_that_fit` calls);
    with `room_for`, pretend the device's free memory holds about that many lanes of the first one."""
    from seqsweep.engines import fused

    real_fit, real_free = fused.lanes_that_fit, fused.free_memory
    seen: dict = {"calls": []}

    def watched(compiled, lanes, shared):
        stats = compiled.memory_analysis()
        needed = None
        if stats is not None:
            needed = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
        if room_for is not None and "pretended_free" not in seen:
            if needed is None:
                raise RuntimeError("XLA gives no memory estimate on this platform: no lane split to exercise")
            seen["pretended_free"] = (shared + (room_for + 0.5) * (needed - shared) / lanes) / fused.MEMORY_HEADROOM
            fused.free_memory = lambda: seen["pretended_free"]
        fitting = real_fit(compiled, lanes, shared)
        seen["calls"].append({"lanes": lanes, "fitting": fitting, "estimate_bytes": needed, "shared_bytes": shared})
        return fitting

    fused.lanes_that_fit = watched
    try:
        yield seen
    finally:
        fused.lanes_that_fit, fused.free_memory = real_fit, real_free


def memory_stats() -> dict | None:
    """The device's allocator statistics (None on a CPU)."""
    import jax

    device = jax.devices()[0]
    return device.memory_stats() if device.platform != "cpu" else None


def time_program(engine: str, dataset: str, arch: str, lanes: int, sizes: Sizes) -> dict:
    """Train `lanes` repeats (fit: one) for 2 epochs of `sizes.steps` full batches plus the partial last
    batch of the real training set, through seqsweep.engines.train; time each epoch."""
    from seqsweep import engines, grid

    n_full, batch = sizes.n_train[dataset], sizes.batch
    n_timed = sizes.steps * batch + n_full % batch
    arrays = random_arrays(dataset, n_timed, sizes.n_test, sizes.shape[dataset])
    config = grid.Config(sizes.units, batch, sizes.dropout, 2)
    seeds = tuple(grid.repeat_seed(GRID["seed"], dataset, arch, config, r) for r in range(lanes))
    dropouts = ()  # more lanes than one configuration's: the grid's rates, each for an equal share of them
    if engine == "fused" and lanes > sizes.lanes[0]:
        dropouts = tuple(GRID["dropout"][i * len(GRID["dropout"]) // lanes] for i in range(lanes))
    program = engines.Program(dataset, arch, config, seeds, sizes.shape[dataset], dropouts)
    marks: list[tuple[int, float]] = []
    gc.collect()  # the previous programs' Keras models hold device buffers in reference cycles
    before = memory_stats()
    started = time.perf_counter()
    with memory_watch() as memory:
        results = engines.train(
            engine, program, arrays, on_epoch=lambda _, e, __: marks.append((e, time.perf_counter()))
        )
    seconds = time.perf_counter() - started
    after = memory_stats()
    first, second = (max(t for e, t in marks if e == epoch) for epoch in (1, 2))
    steady = second - first
    steps_timed, steps_full = -(-n_timed // batch), -(-n_full // batch)
    row = {
        "lanes": lanes,
        "dropouts": sorted(set(dropouts)) or [sizes.dropout],
        "s_per_repeat_epoch": steady * steps_full / steps_timed / lanes,
        "overhead_s": (first - started) - steady,  # building the lanes, compiling, first steps
        "steady_epoch_s": steady,
        "seconds": seconds,
        "failures": [r.failure for r in results if r.failure],
    }
    if any(len(r.lanes) != lanes for r in results):  # the device could not hold the program: not timed
        row.update(s_per_repeat_epoch=None, split_by_engine=sorted({len(r.lanes) for r in results}))
    if engine == "fused":
        row["xla_estimate_bytes"] = memory["calls"][0]["estimate_bytes"]
        row["peak_bytes"] = None  # exact only when this program raised the process's peak
        if before and after and after.get("peak_bytes_in_use", 0) > before.get("peak_bytes_in_use", 0):
            row["peak_bytes"] = after["peak_bytes_in_use"] - before["bytes_in_use"]
    return row


def parity(sizes: Sizes) -> dict:
    """The same seeds trained by the fused engine (one program) and by fit on JAX, on this device."""
    from seqsweep import engines, grid, stats

    p = sizes.parity
    arrays = learnable_har(p["n_train"], p["n_test"], p["timesteps"])
    config = grid.Config(p["units"], p["batch"], 0.5, p["epochs"])
    seeds = tuple(grid.repeat_seed(GRID["seed"], "har", "lstm", config, r) for r in range(p["repeats"]))
    program = engines.Program("har", "lstm", config, seeds, dict(sizes.shape["har"], timesteps=p["timesteps"]))
    out = {"model": "har:lstm", "config": config.label, **p, "data": "learnable synthetic (class shifts channel 0)"}
    for engine in ("fused", "fit"):
        started = time.perf_counter()
        accuracies = [r.test_accuracy for r in engines.train(engine, program, arrays)]
        out[engine] = {"accuracies": accuracies, "seconds": time.perf_counter() - started}
    fused, fit = out["fused"]["accuracies"], out["fit"]["accuracies"]
    if None in fused or None in fit:
        out["p_value"] = None
        return out
    out["p_value"] = stats.welch_p(fused, fit)
    out["max_same_seed_difference"] = max(abs(a - b) for a, b in zip(fused, fit, strict=True))
    for engine in ("fused", "fit"):
        summary = stats.summarise(out[engine]["accuracies"])
        out[engine].update(mean=summary.mean, std=summary.std)
    return out


def lane_split(sizes: Sizes) -> dict:
    """The fused engine with `split[0]` lanes on a device pretended to have room for about `split[1]`."""
    from seqsweep import engines, grid

    asked, room = sizes.split
    p = sizes.parity
    arrays = learnable_har(4 * p["batch"], p["batch"], p["timesteps"])
    config = grid.Config(p["units"], p["batch"], 0.5, 1)
    program = engines.Program(
        "har", "lstm", config, tuple(range(asked)), dict(sizes.shape["har"], timesteps=p["timesteps"])
    )
    with memory_watch(room_for=room) as memory:
        results = engines.train("fused", program, arrays)
    programs = [len(r.lanes) for i, r in enumerate(results) if i == 0 or r.lanes != results[i - 1].lanes]
    return {
        "lanes_asked": asked,
        "room_for": room,
        "pretended_free_bytes": memory["pretended_free"],
        "programs": programs,
        "lanes_that_fit": [(c["lanes"], c["fitting"]) for c in memory["calls"]],
        "failures": [r.failure for r in results if r.failure],
    }


def study_estimate(rows: list[dict], sizes: Sizes) -> dict:
    """Seconds for params.yaml's whole grid on this device: for each measured architecture, every
    configuration's repeat-epochs times the measured seconds per repeat-epoch, plus each program's
    overhead, for programs of the most lanes measured for it (a (units, batch size)'s repeats of every
    dropout rate in ceil(repeats x rates / lanes) programs)."""
    from seqsweep import grid, models

    repeats, rates = GRID["repeats"], len(GRID["dropout"])
    params = {"model": {k: GRID[k] for k in ("units", "dropout")}, "train": {"batch_size": GRID["batch_size"]}}
    params["train"]["epochs"] = None  # null: the study's epochs per architecture
    totals = {"fused_upper_s": 0.0, "fit_upper_s": 0.0, "fused_batch_scaled_s": 0.0, "fit_batch_scaled_s": 0.0}
    per_arch, repeat_epochs = [], 0
    for row in rows:
        timed = [n for n in sizes.lanes if (row["fused"].get(str(n)) or {}).get("s_per_repeat_epoch") is not None]
        if not timed or row["fit"]["s_per_repeat_epoch"] is None:
            continue
        lanes = max(timed)
        fused, fit = row["fused"][str(lanes)], row["fit"]
        configs = grid.expand(params, models.get(row["dataset"], row["arch"]).epochs)
        steps_measured = -(-sizes.n_train[row["dataset"]] // sizes.batch)
        arch = {"model": row["model"], "configurations": len(configs), "epochs": configs[0].epochs, "lanes": lanes}
        arch["repeat_epochs"] = sum(c.epochs for c in configs) * repeats
        arch["programs"] = len(configs) // rates * -(-repeats * rates // lanes)
        for scaled in (False, True):
            fused_s = arch["programs"] * fused["overhead_s"]
            fit_s = 0.0
            for c in configs:
                scale = -(-sizes.n_train[row["dataset"]] // c.batch_size) / steps_measured if scaled else 1.0
                fused_s += repeats * c.epochs * fused["s_per_repeat_epoch"] * scale
                fit_s += repeats * (fit["overhead_s"] + c.epochs * fit["s_per_repeat_epoch"] * scale)
            kind = "batch_scaled" if scaled else "upper"
            arch[f"fused_{kind}_s"], arch[f"fit_{kind}_s"] = fused_s, fit_s
            totals[f"fused_{kind}_s"] += fused_s
            totals[f"fit_{kind}_s"] += fit_s
        repeat_epochs += arch["repeat_epochs"]
        per_arch.append(arch)
    measured = {a["model"] for a in per_arch}
    missing = [f"{d}:{a}" for d, archs in ARCHS.items() for a in archs if f"{d}:{a}" not in measured]
    return {
        "lanes_per_program": sorted({a["lanes"] for a in per_arch}),
        "repeats": repeats,
        "repeat_epochs": repeat_epochs,
        **totals,
        "architectures": per_arch,
        "missing": missing,
        "grid": GRID,
        "archs": {dataset: list(archs) for dataset, archs in ARCHS.items()},
    }


def environment(smoke: bool, deterministic: bool) -> None:
    """Before JAX or Keras is imported: the repository's src/ first on sys.path, and the runtime the
    training stage would apply (Keras on JAX; XLA's deterministic flags as train.deterministic: true).
    The smoke run: on the CPU, one thread, XLA's CPU backend without optimisations (a third of the
    compile time; speed is not what the smoke run checks)."""
    sys.path.insert(0, str(SRC))
    from seqsweep.runtime import DETERMINISTIC_XLA, SINGLE_THREAD_XLA, Runtime

    ours = (DETERMINISTIC_XLA, SINGLE_THREAD_XLA)
    user_flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in ours]
    if smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
        user_flags.append("--xla_backend_optimization_level=0")
    runtime = Runtime("fused", "jax", "", deterministic, user_xla_flags=" ".join(user_flags))
    runtime.apply(**({"threads": 1} if smoke else {}))


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "keras", "numpy", "jax-cuda13-plugin", "jax-cuda12-plugin"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def attempt(what: str, measure, *args) -> dict:
    """`measure(*args)`, or {"error": ...} when it raised: one failure must not cost the rest of a GPU lease."""
    try:
        return measure(*args)
    except Exception as exc:  # reported in the table, the JSON and the exit status
        print(f"  {what} failed: {type(exc).__name__}: {exc}", flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}


def measure_all(sizes: Sizes, budget_s: float) -> tuple[list[dict], list[dict]]:
    """One row per architecture of `sizes.archs`, in their order, and what was skipped (failed, or no
    time left). What the study estimate needs comes first: every architecture's fused program at the
    fewest lanes with its fit repeat, IMDB's (500 steps) first; then the programs of more lanes. Each
    program is predicted to cost what the dearest of its kind (dataset, engine, lanes) cost so far,
    else the dearest of its engine and lanes, else the dearest of any."""
    first, more = sizes.lanes[0], sizes.lanes[1:]
    archs = sorted(sizes.archs, key=lambda m: m[0] != "imdb")
    plan = [(d, a, [("fused", first), ("fit", 1)]) for d, a in archs]
    plan += [(d, a, [("fused", n)]) for n in more for d, a in archs]
    rows = {f"{d}:{a}": {"model": f"{d}:{a}", "dataset": d, "arch": a, "fused": {}, "fit": None} for d, a in archs}
    skipped, cost = [], {}

    def kinds(dataset, engine, lanes):
        return [(dataset, engine, lanes), (engine, lanes), "any"]

    for dataset, arch, programs in plan:
        row = rows[f"{dataset}:{arch}"]
        label = f"{row['model']} " + " + ".join(e + (f" R={n}" if e == "fused" else "") for e, n in programs)
        if more and programs[0][1] in more and row["fit"] is None:
            continue  # its first programs were skipped: so is the row
        elapsed = time.perf_counter() - STARTED
        predicted = sum(max(next((cost[k] for k in kinds(dataset, e, n) if k in cost), [0.0])) for e, n in programs)
        if elapsed + predicted > budget_s:
            reason = f"budget: {elapsed:.0f} s spent, about {predicted:.0f} s more needed, {budget_s:.0f} s allowed"
            skipped.append({"programs": label, "reason": reason, "failed": False})
            print(f"  {label}: skipped ({reason})", flush=True)
            continue
        step = time.perf_counter()
        for engine, lanes in programs:
            started = time.perf_counter()
            result = attempt(f"{row['model']} {engine} R={lanes}", time_program, engine, dataset, arch, lanes, sizes)
            if "error" in result:
                skipped.append({"programs": label, "reason": result["error"], "failed": True})
                break
            for kind in kinds(dataset, engine, lanes):
                cost.setdefault(kind, []).append(time.perf_counter() - started)
            if engine == "fit":
                row["fit"] = result
            else:
                row["fused"][str(lanes)] = result
        print(f"  {label}: {time.perf_counter() - step:.0f} s", flush=True)
    measured = [rows[f"{d}:{a}"] for d, a in sizes.archs]
    return [row for row in measured if row["fit"] and str(first) in row["fused"]], skipped


def fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}" if value < 100 else f"{value:.0f}"


def fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}" if value < 2**24 else f"{value / 2**20:.0f}"


def print_report(doc: dict, sizes: Sizes) -> None:
    """The table (one row per architecture), then one line each: skipped, parity, lane split, study."""
    lanes = [str(n) for n in sizes.lanes]
    few, many = lanes[0], lanes[-1]
    device = doc["device"]
    libraries = ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if k != "python")
    print(f"\n{doc['mode']} run, {device['kind']} ({device['platform']}), {libraries}, {doc['date']}")
    partial = any(sizes.n_train[d] % sizes.batch for d in sizes.n_train)
    har, imdb = sizes.shape["har"], sizes.shape["imdb"]
    print(
        f"timing data RANDOM: har {sizes.n_train['har']} windows of {har['timesteps']} x {har['channels']}, imdb "
        f"{sizes.n_train['imdb']} reviews of {imdb['maxlen']} ids; batch {sizes.batch}, units {sizes.units}, "
        f"dropout {sizes.dropout} (fused R={many}: {' and '.join(map(str, GRID['dropout']))}, a share each), "
        f"deterministic kernels {str(doc['deterministic']).lower()}; seconds per "
        f"repeat-epoch: {sizes.steps} full batch(es){' + the partial last one' if partial else ''} timed after a "
        "warm-up epoch, scaled to the batches of a full epoch"
    )
    print(
        f"{'model':28}{'batches':>8}"
        + "".join(f"{'fused R=' + n:>12}" for n in lanes)
        + f"{'fit (JAX)':>12}{'fit/fused':>10}{'overhead s':>16}{'XLA est MB':>12}{'peak MB':>9}"
    )
    print(
        f"{'':28}{'/epoch':>8}"
        + "".join(f"{'s/rep-epoch':>12}" for _ in lanes)
        + f"{'s/rep-epoch':>12}{'R=' + few:>10}{'R=' + few + ' / fit':>16}{'R=' + many:>12}{'R=' + many:>9}"
    )
    for row in doc["rows"]:
        fused, fit = row["fused"], row["fit"]
        ratio = "n/a"
        if fit["s_per_repeat_epoch"] and fused[few]["s_per_repeat_epoch"]:
            ratio = f"{fit['s_per_repeat_epoch'] / fused[few]['s_per_repeat_epoch']:.1f}x"
        overhead = f"{fused[few]['overhead_s']:.1f} / {fit['overhead_s']:.1f}"
        seconds = [fmt_s(fused[n]["s_per_repeat_epoch"]) if n in fused else "skipped" for n in lanes]
        memory = [fmt_mb(fused[many][k]) if many in fused else "skipped" for k in ("xla_estimate_bytes", "peak_bytes")]
        print(
            f"{row['model']:28}{-(-sizes.n_train[row['dataset']] // sizes.batch):>8}"
            + "".join(f"{s:>12}" for s in seconds)
            + f"{fmt_s(fit['s_per_repeat_epoch']):>12}{ratio:>10}{overhead:>16}{memory[0]:>12}{memory[1]:>9}"
        )
    for skipped in doc["skipped"]:
        print(f"{'failed' if skipped['failed'] else 'skipped'} {skipped['programs']}: {skipped['reason']}")
    p = doc["parity"]
    if "error" in p or p["p_value"] is None:
        print(f"parity: failed: {p.get('error') or [p['fused']['accuracies'], p['fit']['accuracies']]}")
    else:
        fused, fit = p["fused"], p["fit"]
        print(
            f"parity, {p['model']} {p['config']}, {p['repeats']} repeats each, {p['data']}, {p['n_train']} / "
            f"{p['n_test']} windows: fused {100 * fused['mean']:.2f} +/- {100 * fused['std']:.2f} %, fit on JAX "
            f"{100 * fit['mean']:.2f} +/- {100 * fit['std']:.2f} %; Welch p = {p['p_value']:.3f}; largest "
            f"difference of the same seed {100 * p['max_same_seed_difference']:.2f} points"
        )
    s = doc["split"]
    if "error" in s:
        print(f"lane split: failed: {s['error']}")
    else:
        print(
            f"lane split: {s['lanes_asked']} lanes, free memory pretended {fmt_mb(s['pretended_free_bytes'])} MB "
            f"(room for about {s['room_for']} by XLA's estimate): programs of {s['programs']} lanes "
            f"(lanes_that_fit: " + ", ".join(f"{a} -> {b}" for a, b in s["lanes_that_fit"]) + ")"
        )
    e = doc["study"]
    hours = {k: e[k] / 3600 for k in e if k.endswith("_s")}
    print(
        f"study ({e['repeat_epochs']} repeat-epochs of {len(e['architectures'])} architectures, programs of "
        f"{' or '.join(map(str, e['lanes_per_program'])) or 'no'} lanes): fused {hours['fused_upper_s']:.2f} h, "
        f"fit on JAX {hours['fit_upper_s']:.2f} h: upper bounds, every configuration at the batch "
        f"{sizes.batch} / units {sizes.units} figure; scaled by batches per epoch: fused "
        f"{hours['fused_batch_scaled_s']:.2f} h, fit {hours['fit_batch_scaled_s']:.2f} h"
        + (f"; missing {', '.join(e['missing'])}" if e["missing"] else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON (atomically)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU in seconds (CI)")
    parser.add_argument("--budget-s", type=float, default=480, help="time no new shape past this (default: 8 min)")
    parser.add_argument("--archs", help="dataset:arch,... to time (default: params.yaml's archs; smoke: 2)")
    parser.add_argument("--steps", type=int, help="batches timed per epoch (default: 20; smoke: 2)")
    parser.add_argument("--nondeterministic", action="store_true", help="without XLA's deterministic kernels")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    if args.archs:
        sizes = replace(sizes, archs=tuple(tuple(m.split(":")) for m in args.archs.split(",")))
    if args.steps:
        sizes = replace(sizes, steps=args.steps)

    environment(args.smoke, deterministic=not args.nondeterministic)
    import jax

    from seqsweep.atomic import write_json

    device = jax.devices()[0]
    doc = {
        "check": "bench/gpu_check.py",
        "mode": "smoke" if args.smoke else "full",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": {"platform": device.platform, "kind": device.device_kind, "count": len(jax.devices())},
        "versions": versions(),
        "deterministic": not args.nondeterministic,
        "xla_flags": os.environ["XLA_FLAGS"],
        "timing_data": "random arrays of the shapes in settings: speed does not depend on the values",
        "settings": {**asdict(sizes), "archs": [f"{d}:{a}" for d, a in sizes.archs]},
        "budget_s": args.budget_s,
    }
    print(f"gpu_check ({doc['mode']}) on {device.device_kind}: parity, lane split, then speed per architecture")
    doc["parity"] = attempt("parity", parity, sizes)
    doc["split"] = attempt("lane split", lane_split, sizes)
    doc["rows"], doc["skipped"] = measure_all(sizes, args.budget_s)
    doc["study"] = study_estimate(doc["rows"], sizes)
    doc["wall_s"] = time.perf_counter() - STARTED
    print_report(doc, sizes)
    write_json(args.out, doc)
    print(f"wrote {args.out} ({doc['wall_s']:.0f} s in all)")
    failed = "error" in doc["parity"] or "error" in doc["split"] or any(s["failed"] for s in doc["skipped"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
