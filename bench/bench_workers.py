"""Benchmark: repeats per hour of the training stage with `train.workers: auto` against `workers: 1`,
for each engine.

Runs the real stage (`python -m seqsweep.train har lstm ...`) in scratch workspaces on full-size
HAR-shaped arrays (7352 x 128 x 9 train, 2947 test; random values, speed does not depend on them):
LSTM(100), batch 64, dropout 0.25 and 0.5, 3 repeats each, a few epochs. Each setting runs in a
fresh process with its own SQLite MLflow store; the wall time includes everything the stage does
(imports, worker start-up, logging).

    python bench/bench_workers.py [--epochs 3] [--repeats 3] [--engines fit,fused]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from har_arrays import write_prepared_har

REPO = Path(__file__).resolve().parents[1]
STAGE = ["-m", "seqsweep.train", "har", "lstm", "data/prepared/har", "runs/har-lstm.json"]


def workspace(root: Path, epochs: int, repeats: int, workers, engine: str) -> None:
    write_prepared_har(root)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(units=100, dropout=[0.25, 0.5])
    params["train"].update(batch_size=64, repeats=repeats, epochs=epochs, workers=workers, engine=engine)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def run(epochs: int, repeats: int, workers, engine: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        workspace(root, epochs, repeats, workers, engine)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "RAY_ADDRESS")}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, *STAGE], cwd=root, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - started
    where = next((line.split(" on ")[-1].rstrip("]") for line in done.stderr.splitlines()[::-1] if " on " in line), "?")
    return wall, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default="fit,fused")
    args = parser.parse_args()
    n = 2 * args.repeats
    print(f"HAR lstm(100) b64, {n} repeats x {args.epochs} epochs, full-size arrays, {os.cpu_count()} CPUs")
    results = {}
    for engine in args.engines.split(","):
        for workers in (1, "auto"):
            wall, where = run(args.epochs, args.repeats, workers, engine)
            results[engine, workers] = wall
            print(
                f"  {engine:5} workers: {workers!s:4} -> {where}: {wall:6.1f} s, {3600 * n / wall:6.0f} repeats/hour",
                flush=True,
            )
        print(f"  {engine}: auto over 1 worker: {results[engine, 1] / results[engine, 'auto']:.2f}x", flush=True)
    if ("fit", 1) in results and ("fused", "auto") in results:
        print(f"  fused with auto workers over fit with 1: {results['fit', 1] / results['fused', 'auto']:.2f}x")


if __name__ == "__main__":
    main()
