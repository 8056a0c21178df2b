"""Benchmark: seconds per repeat-epoch of the fit and fused engines, per architecture, batch size,
units and lanes (R repeats per fused program), and from them the wall time of the whole default
study on this device for each engine.

Runs with keras, jax and numpy alone (a GPU host needs no TensorFlow, MLflow or DVC): each engine is
measured in its own process, since the Keras backend is fixed at import. The fit engine runs on
TensorFlow when it is installed (as `dvc repro` would run it here), else on JAX; the fused engine
runs on JAX. Data: random arrays of the prepared shapes (HAR (N, 128, 9) float32, 6 classes; IMDB
(N, 500) int32 ids < 5000, 2 classes); speed does not depend on the values.

On a CPU each engine process is pinned to --cores cores (default 1) with its TensorFlow, XLA and BLAS
threads limited to match, as a local worker of the training stage is (`train.workers: auto` runs one
per core), and the study estimate divides by the number of such workers this machine holds. On a GPU
nothing is pinned and the estimate is for one worker (one program at a time on the GPU).

Each measurement trains its repeats for 2 epochs: the first includes compilation (reported as the
per-program overhead), the second is the steady cost. Fit trains repeats one after another, so its
cost per repeat does not depend on R: it is measured once per setting (2 repeats, averaged).

    python bench/bench_engines.py                       # the whole default grid, full-size data
    python bench/bench_engines.py --n-train 512 --n-test 256 --archs har:lstm,imdb:lstm --units 100 --batch 64
    python bench/bench_engines.py --out results.json    # also write every measurement

The study estimate scales each steady repeat-epoch to the full dataset size (7352 HAR / 25000 IMDB
training examples) when --n-train is smaller: training time is linear in the number of batches."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FULL_N = {"har": 7352, "imdb": 25000}
STUDY = {
    "har": {"lstm": 15, "cnn_lstm": 25, "convlstm": 25, "cnn1d": 15, "stacked_lstm": 15},
    "imdb": {"lstm": 3, "lstm_dropout": 3, "lstm_recurrent_dropout": 3, "cnn_lstm": 3},
}
DROPOUTS, REPEATS = 2, 10  # the default grid's dropout rates and repeats per configuration


def measure(
    engine: str, dataset: str, arch: str, units: int, batch: int, lanes: int, n_train: int, n_test: int
) -> dict:
    """Train `lanes` repeats for 2 epochs with `engine` (in this process); time each epoch."""
    import numpy as np

    from seqsweep import engines
    from seqsweep.grid import Config

    rng = np.random.default_rng(0)
    if dataset == "har":
        arrays = {
            f"X_{s}": rng.normal(size=(n, 128, 9)).astype(np.float32) for s, n in (("train", n_train), ("test", n_test))
        }
        arrays.update({f"y_{s}": rng.integers(0, 6, n) for s, n in (("train", n_train), ("test", n_test))})
        shape = {"timesteps": 128, "channels": 9, "n_classes": 6}
    else:
        arrays = {
            f"X_{s}": rng.integers(1, 5000, (n, 500)).astype(np.int32)
            for s, n in (("train", n_train), ("test", n_test))
        }
        arrays.update({f"y_{s}": rng.integers(0, 2, n) for s, n in (("train", n_train), ("test", n_test))})
        shape = {"num_words": 5000, "maxlen": 500}
    program = engines.Program(dataset, arch, Config(units, batch, 0.5, 2), tuple(range(1, lanes + 1)), shape)
    marks: list[tuple[int, int, float]] = []
    started = time.perf_counter()
    engines.train(engine, program, arrays, on_epoch=lambda i, e, _: marks.append((i, e, time.perf_counter())))
    total = time.perf_counter() - started
    if engine == "fused":  # every lane reports epoch e at the same time
        first = min(t for _, e, t in marks if e == 1) - started
        steady = max(t for _, e, t in marks if e == 2) - min(t for _, e, t in marks if e == 1)
        per_repeat_epoch, overhead = steady / lanes, first - steady
    else:
        ends = {(i, e): t for i, e, t in marks}
        steady = sum(ends[i, 2] - ends[i, 1] for i in range(lanes)) / lanes
        per_repeat_epoch, overhead = steady, total / lanes - 2 * steady
    return {
        "engine": engine,
        "dataset": dataset,
        "arch": arch,
        "units": units,
        "batch": batch,
        "lanes": lanes,
        "n_train": n_train,
        "s_per_repeat_epoch": per_repeat_epoch,
        "overhead_s_per_program": max(0.0, overhead),
    }


def worker(args) -> None:
    """Run the measurements of one engine in this process and print them as JSON lines."""
    if args.pin:
        os.sched_setaffinity(0, [int(c) for c in args.pin.split(",")])
    for dataset, arch in args.archs:
        for units in args.units:
            for batch in args.batch:
                for lanes in [2] if args.engine == "fit" else args.lanes:
                    row = measure(args.engine, dataset, arch, units, batch, lanes, args.n_train, args.n_test)
                    print("ROW " + json.dumps(row), flush=True)


def _gpu() -> str | None:
    """The GPU JAX sees, or None on a CPU-only machine."""
    import jax

    device = jax.devices()[0]
    return None if device.platform == "cpu" else f"{device.platform} {device.device_kind}"


def backend_for(engine: str) -> str:
    if engine == "fused":
        return "jax"
    try:
        import importlib.util

        return "tensorflow" if importlib.util.find_spec("tensorflow") else "jax"
    except ImportError:
        return "jax"


def study_estimate(rows: list[dict], engine: str, lanes: int, gpu: bool = False) -> tuple[float, int] | None:
    """Seconds for the default study (3 units x 3 batch sizes x 2 dropouts x 10 repeats, every
    architecture) with `engine` at `lanes` repeats per program, and how many of the 81 (architecture,
    units, batch) settings were measured: a setting not measured costs its architecture's mean.
    `engine` "auto": each architecture with the engine `train.engine: auto` picks for it."""
    from seqsweep.engines import FUSED_ON_CPU

    total, measured = 0.0, 0
    for dataset, archs in STUDY.items():
        for arch, epochs in archs.items():
            picked = engine
            if engine == "auto":
                picked = "fused" if gpu or f"{dataset}:{arch}" in FUSED_ON_CPU else "fit"
            costs = []
            for row in rows:
                if (row["engine"], row["dataset"], row["arch"]) != (picked, dataset, arch):
                    continue
                if picked == "fused" and row["lanes"] != lanes:
                    continue
                scale = FULL_N[dataset] / row["n_train"]
                per_program_repeats = 1 if picked == "fit" else lanes
                programs = DROPOUTS * -(-REPEATS // per_program_repeats)
                costs.append(
                    programs
                    * (row["overhead_s_per_program"] + epochs * scale * row["s_per_repeat_epoch"] * per_program_repeats)
                )
            if not costs:
                return None
            total += 9 * sum(costs) / len(costs)
            measured += len(costs)
    return total, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archs",
        default=",".join(f"{d}:{a}" for d, archs in STUDY.items() for a in archs),
        help="dataset:arch,... (default: all nine)",
    )
    parser.add_argument("--units", default="10,100,200")
    parser.add_argument("--batch", default="16,32,64")
    parser.add_argument("--lanes", default="1,10", help="repeats per fused program")
    parser.add_argument("--n-train", type=int, default=None, help="training examples (default: full size)")
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--engines", default="fit,fused")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cores", type=int, default=1, help="cores per engine process on a CPU (default 1)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: the worker process's engine
    parser.add_argument("--pin", help=argparse.SUPPRESS)  # internal: the cores the worker process runs on
    args = parser.parse_args()
    args.archs = [tuple(a.split(":")) for a in args.archs.split(",")]
    args.units = [int(u) for u in args.units.split(",")]
    args.batch = [int(b) for b in args.batch.split(",")]
    args.lanes = [int(r) for r in args.lanes.split(",")]
    if args.engine:
        args.n_train = args.n_train
        return worker(args)

    from seqsweep.runtime import Runtime

    gpu = _gpu()
    parallel = 1 if gpu else max(1, len(os.sched_getaffinity(0)) // args.cores)
    rows = []
    for engine in args.engines.split(","):
        per_dataset = {}
        for dataset, arch in args.archs:
            per_dataset.setdefault(dataset, []).append(arch)
        for dataset, archs in per_dataset.items():
            n_train = args.n_train or FULL_N[dataset]
            cmd = [
                sys.executable,
                __file__,
                "--engine",
                engine,
                "--archs",
                ",".join(f"{dataset}:{a}" for a in archs),
                "--units",
                ",".join(map(str, args.units)),
                "--batch",
                ",".join(map(str, args.batch)),
                "--lanes",
                ",".join(map(str, args.lanes)),
                "--n-train",
                str(n_train),
                "--n-test",
                str(args.n_test),
            ]
            run_as = Runtime(engine, backend_for(engine), "gpu" if gpu else "cpu", deterministic=True)
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            if gpu is None:  # a CPU: pinned like a local worker, threads to match
                env.update(run_as.env(threads=args.cores))
            else:
                env.update(run_as.env())
                cmd += ["--pin", ",".join(map(str, sorted(os.sched_getaffinity(0))[: args.cores]))]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for line in proc.stdout:
                if line.startswith("ROW "):
                    row = json.loads(line[4:])
                    row["backend"] = env["KERAS_BACKEND"]
                    rows.append(row)
                    print(
                        f"{row['engine']:5} {row['backend']:10} {row['dataset']}:{row['arch']:22} u{row['units']:<3} "
                        f"b{row['batch']:<2} R={row['lanes']:<2} {row['s_per_repeat_epoch']:8.3f} s/repeat-epoch "
                        f"(n={row['n_train']}), overhead {row['overhead_s_per_program']:.2f} s/program",
                        flush=True,
                    )
            if proc.wait() != 0:
                sys.exit(f"{engine} measurements failed (exit {proc.returncode}): rerun with stderr to see why")

    device = gpu or f"cpu: {parallel} workers of {args.cores} core(s)"
    print(f"\ndevice: {device}; study: 9 architectures x 18 configurations x 10 repeats")
    measured = args.engines.split(",")
    for engine in measured + ["auto"] * ({"fit", "fused"} <= set(measured)):
        for lanes in [1] if engine == "fit" else [max(args.lanes)] if engine == "auto" else args.lanes:
            estimate = study_estimate(rows, engine, lanes, gpu=gpu is not None)
            estimate = estimate and (estimate[0] / parallel, estimate[1])
            if estimate:
                label = {"fit": "fit", "fused": f"fused R={lanes}", "auto": f"auto (R={lanes})"}[engine]
                print(
                    f"  {label:12} estimated wall time of the whole study: {estimate[0] / 3600:8.2f} h "
                    f"({estimate[1]} of 81 settings measured)"
                )
            else:
                print(f"  {engine}: no estimate (some architecture was not measured)")
    if args.out:
        args.out.write_text(json.dumps({"device": device, "parallel": parallel, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
