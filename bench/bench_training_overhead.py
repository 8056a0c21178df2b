"""Benchmark: MLflow logging overhead of the train stage, and the cost of deterministic kernels.

Runs the real stage (`python -m seqsweep.train har lstm`) in a scratch workspace on full-size
HAR-shaped arrays (7352 x 128 x 9 train, 2947 test; random content: speed does not depend on it),
LSTM(100), batch 64, dropout 0.5, once with train.deterministic true and once false, each in a fresh
process (the switch must be set before Keras loads). The stage itself times every MLflow write
(lock waits included) against the time spent in model.fit and records both in its run file.

    python bench/bench_training_overhead.py [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from har_arrays import write_prepared_har

REPO = Path(__file__).resolve().parents[1]


def make_workspace(root: Path, epochs: int, repeats: int, deterministic: bool) -> None:
    write_prepared_har(root)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(units=100, dropout=0.5)
    params["train"].update(batch_size=64, repeats=repeats, epochs=epochs, deterministic=deterministic)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def run(epochs: int, repeats: int, deterministic: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_workspace(root, epochs, repeats, deterministic)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "seqsweep.train", "har", "lstm", "data/prepared/har", "runs/har-lstm.json"],
            cwd=root,
            env=env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - started
        doc = json.loads((root / "runs/har-lstm.json").read_text())
    fits = epochs * repeats
    return {
        "deterministic": deterministic,
        "wall_s": wall,
        **doc["timing"],
        "s_per_epoch": doc["timing"]["train_seconds"] / fits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(
        f"HAR lstm(100), batch 64, {args.repeats} repeats x {args.epochs} epochs, full-size arrays, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'deterministic':>13} {'fit s':>8} {'s/epoch':>8} {'mlflow s':>9} {'overhead':>9} {'wall s':>7}")
    for deterministic in (True, False):
        r = run(args.epochs, args.repeats, deterministic)
        print(
            f"{str(r['deterministic']):>13} {r['train_seconds']:8.1f} {r['s_per_epoch']:8.2f} "
            f"{r['mlflow_seconds']:9.3f} {100 * r['mlflow_overhead']:8.2f}% {r['wall_s']:7.1f}"
        )


if __name__ == "__main__":
    main()
