"""Benchmark: what Ray would cost the one-machine default, against Python's own process pool.

The training stage could run its local workers as Ray tasks too. This measures what that costs
before the first cell trains, three ways, each in a fresh process:

1. `ray.init()` with no cluster: Ray starts its own daemons (GCS, raylet, dashboard agents);
   seconds until the call returns, and the memory (RSS) of the processes it started;
2. `ray.init()` with RAY_ADDRESS set to a head started beforehand with `ray start --head` (what a
   user of a cluster pays per stage): seconds to connect;
3. a `concurrent.futures.ProcessPoolExecutor` of 2 spawned workers (what `train.workers: auto`
   uses): seconds until both have answered a trivial task.

    python bench/bench_ray_startup.py [--times 3]

Needs the cluster extra (`pip install -e '.[cluster]'`). The head of (2) is started on 127.0.0.1
by tests/ray_cluster.py and stopped by its process ids."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

LOCAL = """
import json, time, psutil, ray
before = {p.pid for p in psutil.process_iter()}
t = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
seconds = time.perf_counter() - t
me = psutil.Process()
started = [p for p in psutil.process_iter() if p.pid not in before and p.pid != me.pid]
rss = 0
for p in started:
    try:
        rss += p.memory_info().rss
    except psutil.Error:
        pass
ray.shutdown()
print(json.dumps({"seconds": seconds, "rss_mb": rss / 2**20, "processes": len(started)}))
"""

CONNECT = """
import json, time, ray
t = time.perf_counter()
ray.init(log_to_driver=False)
seconds = time.perf_counter() - t
ray.shutdown()
print(json.dumps({"seconds": seconds}))
"""

POOL = """
import concurrent.futures, json, multiprocessing, os, time
if __name__ == "__main__":
    t = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        [f.result() for f in [pool.submit(os.getpid), pool.submit(os.getpid)]]
        seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds}))
"""


def once(code: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=3)
    args = parser.parse_args()
    from ray_cluster import start_cluster

    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_USAGE_STATS_ENABLED": "0"}
    local = [once(LOCAL, base) for _ in range(args.times)]
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp), nodes=1, cpus_per_node=2)
        try:
            connect = [once(CONNECT, cluster.env(RAY_USAGE_STATS_ENABLED="0")) for _ in range(args.times)]
        finally:
            cluster.stop()
    pool = [once(POOL, base) for _ in range(args.times)]

    def span(rows, key="seconds"):
        values = [r[key] for r in rows]
        return f"{min(values):.2f}-{max(values):.2f} (median {statistics.median(values):.2f})"

    print(f"{args.times} times each, {os.cpu_count()} CPUs")
    print(f"  ray.init() starting a local Ray: {span(local)} s, its processes' RSS {span(local, 'rss_mb')} MB")
    print(f"  ray.init() joining a running head (RAY_ADDRESS): {span(connect)} s")
    print(f"  process pool of 2 spawned workers, first answers: {span(pool)} s")


if __name__ == "__main__":
    main()
