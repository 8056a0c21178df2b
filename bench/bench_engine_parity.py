"""Benchmark: does the fused engine learn what the fit engine learns, at full size? And how far does a
lane trained beside others drift from the same lane trained alone?

Full-size SYNTHETIC HAR (seqsweep.tools.sample_data: 7352 train / 2947 test windows in the exact UCI
layout, prepared by the real stage code), lstm, units 100, batch 64, dropout 0.5, 15 epochs:

1. the fit engine as `dvc repro` runs it on CPU (TensorFlow), --fit-repeats repeats;
2. the fused engine (JAX), --repeats seeds as one program (the first --fit-repeats are fit's seeds);
3. --alone of those seeds again, each alone (a 1-lane program), to measure the drift: batched
   kernels may round differently from unbatched ones, and training amplifies it;
4. --fit-jax of those seeds with the fit engine on JAX: the fused engine's definition says each
   lane is that training, batched, so any difference between (1) and (2) beyond chance is then the
   backend's (TensorFlow against JAX), not the fused engine's.

    python bench/bench_engine_parity.py [--repeats 10] [--fit-repeats 10] [--alone 2] [--fit-jax 2]
                                        [--epochs 15] [--workdir DIR]

Every training run is kept in --workdir (keyed by the data's digest, engine, backend, seeds and
epochs), so a rerun with more repeats trains only the new ones; use a fresh --workdir after changing
the engines. Prints mean +/- std of each engine, Welch's p, the drift of the lanes trained alone,
and how far fit on JAX is from the same lanes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from seqsweep import atomic

SCRIPT = """
import json, sys, time
import numpy as np
from seqsweep import engines, grid, prepared
arrays, meta = prepared.load(sys.argv[1], "har")
engine, seeds, epochs = sys.argv[2], tuple(int(s) for s in sys.argv[3].split(",")), int(sys.argv[4])
program = engines.Program("har", "lstm", grid.Config(100, 64, 0.5, epochs), seeds,
                          engines.shape_kwargs("har", meta, arrays["X_train"]))
started = time.perf_counter()
results = engines.train(engine, program, arrays)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "results": [{"seed": r.seed, "accuracy": r.test_accuracy, "loss": r.history["loss"]}
                              for r in results]}))
"""


def run(prepared: Path, engine: str, seeds: list[int], epochs: int, backend: str) -> dict:
    """One engine call in its own process (the backend is fixed at import), kept in prepared/../runs."""
    digest = json.loads((prepared / "meta.json").read_text())["source_sha256"][:12]
    kept = prepared.parent / "runs" / f"{digest}-{engine}-{backend}-{'_'.join(map(str, seeds))}-{epochs}.json"
    if kept.exists():
        return json.loads(kept.read_text())
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(prepared), engine, ",".join(map(str, seeds)), str(epochs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    kept.parent.mkdir(exist_ok=True)
    atomic.write_json(kept, result)  # a run killed mid-write is never taken as kept
    return result


def fit_runs(prepared: Path, seeds: list[int], epochs: int, backend: str) -> dict:
    """The fit engine, one process per seed (so each is kept on its own): seconds summed."""
    runs = [run(prepared, "fit", [seed], epochs, backend) for seed in seeds]
    return {"seconds": sum(r["seconds"] for r in runs), "results": [r["results"][0] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="fused lanes (repeats) in the program")
    parser.add_argument("--fit-repeats", type=int, default=10, help="fit repeats (the first seeds of the lanes)")
    parser.add_argument("--alone", type=int, default=2, help="lanes trained again alone, for the drift")
    parser.add_argument("--fit-jax", type=int, default=2, help="lanes trained again with fit on JAX")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the data and every run (default: a temp dir)")
    args = parser.parse_args()
    if min(args.repeats, args.fit_repeats) < 2:
        parser.error("--repeats and --fit-repeats must be at least 2 (a std and Welch's test need two)")

    import numpy as np

    from seqsweep import extract, prepare_har, stats
    from seqsweep.checksum import sha256_file
    from seqsweep.tools import sample_data

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.workdir or Path(scratch)
        if not (tmp / "prepared" / "meta.json").exists():
            t0 = time.perf_counter()
            archive = sample_data.write_har_archive(tmp / "har.zip")
            extract.extract_har(archive, tmp / "extracted")
            prepare_har.prepare(tmp / "extracted", tmp / "prepared", sha256_file(archive))
            print(f"full-size SYNTHETIC HAR prepared in {time.perf_counter() - t0:.0f} s")
        seeds = list(range(1000, 1000 + args.repeats))
        fit = fit_runs(tmp / "prepared", seeds[: args.fit_repeats], args.epochs, "tensorflow")
        fused = run(tmp / "prepared", "fused", seeds, args.epochs, "jax")
        alone = [run(tmp / "prepared", "fused", [seed], args.epochs, "jax") for seed in seeds[: args.alone]]
        fit_jax = fit_runs(tmp / "prepared", seeds[: args.fit_jax], args.epochs, "jax")

    fit_acc = [100 * r["accuracy"] for r in fit["results"]]
    fused_acc = [100 * r["accuracy"] for r in fused["results"]]
    a, b = stats.summarise(fit_acc), stats.summarise(fused_acc)
    print(
        textwrap.dedent(f"""
        HAR lstm u100 b64 d0.5, {args.epochs} epochs, seeds {seeds[0]}.. (fit: the first {args.fit_repeats})
          fit   (TensorFlow): {a.mean:.2f} +/- {a.std:.2f} %   ({fit["seconds"]:.0f} s)
            {[round(x, 2) for x in fit_acc]}
          fused (JAX, {args.repeats} lanes): {b.mean:.2f} +/- {b.std:.2f} %   ({fused["seconds"]:.0f} s)
            {[round(x, 2) for x in fused_acc]}
          Welch's p = {stats.welch_p(fit_acc, fused_acc):.3f}; difference of means {b.mean - a.mean:+.2f} points
        drift of a lane trained alone against the same lane beside {args.repeats - 1} others:""")
    )
    lanes = {r["seed"]: r for r in fused["results"]}
    for lane in [single["results"][0] for single in alone]:
        grouped = lanes[lane["seed"]]
        loss_gap = np.max(np.abs(np.array(lane["loss"]) - np.array(grouped["loss"])))
        print(
            f"  seed {lane['seed']}: test accuracy {100 * lane['accuracy']:.2f} % alone vs "
            f"{100 * grouped['accuracy']:.2f} % in the program; largest per-epoch loss difference {loss_gap:.2e}"
        )
    print(f"fit on JAX against the same lanes of the fused program ({fit_jax['seconds']:.0f} s):")
    for repeat in fit_jax["results"]:
        grouped = lanes[repeat["seed"]]
        loss_gap = np.max(np.abs(np.array(repeat["loss"]) - np.array(grouped["loss"])))
        print(
            f"  seed {repeat['seed']}: test accuracy {100 * repeat['accuracy']:.2f} % with fit vs "
            f"{100 * grouped['accuracy']:.2f} % fused; largest per-epoch loss difference {loss_gap:.2e}"
        )


if __name__ == "__main__":
    main()
