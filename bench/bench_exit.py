"""Benchmark: what a training process spends ending, with and without `freeze_at_exit`
(seqsweep.errors: `gc.freeze()` after the atexit handlers, so the interpreter's teardown does not run
the garbage collector over every object the libraries created).

A fresh process imports what a stage or a pool worker imports (Keras with its backend, JAX, MLflow and
its SQL store), builds one HAR lstm, then ends; the CPU from its last line to its exit is measured
(the process's own CPU at its last line, against the parent's count of its children's CPU once it has
ended). Each backend, both ways, side by side in one run.

    python bench/bench_exit.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

PROCESS = r"""
import os, sys, time
from seqsweep.errors import freeze_at_exit
from seqsweep.models import build, import_keras
keras = import_keras()
import jax, mlflow
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
build("har", "lstm", 100, 0.5, timesteps=128, channels=9, n_classes=6)
if sys.argv[1] == "frozen":
    freeze_at_exit()
cpu = os.times()
print(cpu.user + cpu.system, time.time(), flush=True)
"""


def measure(backend: str, how: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) the process spent after its last line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", PROCESS, how], env=env, capture_output=True, text=True, timeout=600)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{backend} {how}: {proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_at_last_line, last_line = map(float, proc.stdout.split()[-2:])
    children = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return children - cpu_at_last_line, ended - last_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("backend     exit        CPU s   wall s")
    for _ in range(args.repeats):
        for backend in ("jax", "tensorflow"):
            for how in ("collected", "frozen"):
                cpu, wall = measure(backend, how)
                print(f"{backend:11} {how:10} {cpu:6.2f}   {wall:6.2f}")


if __name__ == "__main__":
    main()
