"""Benchmark: what logging one repeat's model to MLflow costs (`train.save_model: true`), with the
requirements MLflow infers against the ones seqsweep passes (seqsweep.runtime.requirements).

Without `pip_requirements`, `mlflow.keras.log_model` infers them: it saves the model, then loads it in
a fresh Python process and records which packages that process imported. Each repeat of each
configuration pays that. For each backend, in a fresh process per measurement, side by side in one
run: the HAR lstm (units 100, as the study trains it) logged to a scratch SQLite store both ways;
prints wall seconds, CPU seconds of the process and its children, and the requirements logged.

    python bench/bench_log_model.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

MEASURE = r"""
import json, os, sys, time
from seqsweep.models import build, import_keras
keras = import_keras()
import mlflow, mlflow.keras
from seqsweep.runtime import requirements
root = sys.argv[1]
mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
model = build("har", "lstm", 100, 0.5, timesteps=128, channels=9, n_classes=6)
passed = {"pip_requirements": requirements(keras.backend.backend())} if sys.argv[2] == "passed" else {}
before, started = os.times(), time.perf_counter()
with mlflow.start_run() as run:
    mlflow.keras.log_model(model, name="model", **passed)
after = os.times()
cpu = sum(after[:4]) - sum(before[:4])  # user + system, of this process and its children
required = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model/requirements.txt").split()
print(json.dumps({"seconds": time.perf_counter() - started, "cpu": cpu, "required": required}))
"""


def measure(backend: str, how: str) -> dict:
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(
            [sys.executable, "-c", MEASURE, root, how], cwd=root, env=env, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            raise SystemExit(f"{backend} {how}: {proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print("backend     requirements  wall s  CPU s  logged requirements")
    for _ in range(args.repeats):
        for backend in ("tensorflow", "jax"):
            for how in ("inferred", "passed"):
                m = measure(backend, how)
                print(f"{backend:11} {how:12} {m['seconds']:6.1f} {m['cpu']:6.1f}  {' '.join(m['required'])}")


if __name__ == "__main__":
    main()
