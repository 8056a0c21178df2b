"""Benchmark prepare-har's loader against the tutorials' reference loader on full-size HAR Inertial Signals.

The data is SYNTHETIC (seqsweep.tools.sample_data) but full-size (7352 train / 2947 test windows) and in the
published byte format, so parse times and memory match the real files'. Both loaders read the 9 signal
files and the labels of both splits. Time: best of --repeats in this process. Memory: each loader once in
a fresh subprocess: tracemalloc peak (Python + numpy allocations) and growth of peak RSS (VmHWM).

Usage: python bench/bench_prepare_har.py [--workdir DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from seqsweep import prepare_har
from seqsweep.tools.sample_data import write_har_archive

SPLITS = prepare_har.SPLITS


def reference_load(root: Path) -> dict[str, np.ndarray]:
    """The tutorials' loader: pandas.read_csv(header=None, sep=r"\\s+") per file, numpy dstack, labels - 1."""
    import pandas as pd

    out = {}
    for split in SPLITS:
        frames = [
            pd.read_csv(prepare_har.signal_path(root, split, c), header=None, sep=r"\s+").values
            for c in prepare_har.CHANNELS
        ]
        out[f"X_{split}"] = np.dstack(frames)
        out[f"y_{split}"] = pd.read_csv(root / split / f"y_{split}.txt", header=None, sep=r"\s+").values[:, 0] - 1
    return out


def our_load(root: Path) -> dict[str, np.ndarray]:
    """prepare-har's loader (validating, float32)."""
    out = {}
    for split in SPLITS:
        out[f"X_{split}"], out[f"y_{split}"] = prepare_har.load_split(root, split)
    return out


LOADERS = {"seqsweep": our_load, "pandas reference": reference_load}


def make_data(workdir: Path) -> Path:
    """Write a full-size synthetic legacy-layout archive and unpack its labels and Inertial Signals."""
    archive = write_har_archive(workdir / "har-legacy.zip", layout="legacy")
    with zipfile.ZipFile(archive) as zf:
        wanted = [
            n
            for n in zf.namelist()
            if n.startswith(prepare_har.ROOT_NAME + "/") and ("Inertial Signals/" in n or Path(n).name.startswith("y_"))
        ]
        zf.extractall(workdir, members=wanted)
    archive.unlink()
    return workdir / prepare_har.ROOT_NAME


def peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux VmHWM; ru_maxrss, which survives exec, elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def child(loader: str, root: Path) -> None:
    """Run one loader once in this fresh process and print its memory figures as JSON."""
    import tracemalloc

    import pandas  # noqa: F401  (import cost is not part of the measurement for either loader)

    before = peak_rss()
    tracemalloc.start()
    result = LOADERS[loader](root)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    output = sum(a.nbytes for a in result.values())
    print(json.dumps({"peak_traced": peak, "rss_growth": peak_rss() - before, "output": output}))


def best_times(root: Path, repeats: int) -> dict[str, float]:
    """Best wall time of each loader over `repeats` rounds, the loaders interleaved so load drifts hit both."""
    times: dict[str, list[float]] = {name: [] for name in LOADERS}
    for _ in range(repeats):
        for name, fn in LOADERS.items():
            start = time.perf_counter()
            fn(root)
            times[name].append(time.perf_counter() - start)
    return {name: min(ts) for name, ts in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to write the data (default: a temporary directory)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=sorted(LOADERS), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.root)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        start = time.perf_counter()
        root = make_data(Path(tmp))
        text_bytes = sum(p.stat().st_size for p in root.rglob("*.txt"))
        largest = max(p.stat().st_size for p in root.rglob("*.txt"))
        print(
            f"generated {text_bytes / 1e6:.1f} MB of text (largest file {largest / 1e6:.1f} MB) "
            f"in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )

        ours, ref = our_load(root), reference_load(root)
        for name in ours:  # the benchmark is only meaningful if both loaders agree
            np.testing.assert_array_equal(ours[name], ref[name].astype(ours[name].dtype), err_msg=name)

        rows = []
        best = best_times(root, args.repeats)
        for name, seconds in best.items():
            proc = subprocess.run(
                [sys.executable, __file__, "--child", name, "--root", str(root)],
                check=True,
                capture_output=True,
                text=True,
            )
            mem = json.loads(proc.stdout)
            rows.append((name, seconds, mem))

    print(
        f"machine: {cpu_model()}, {len_cpus()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pandas_version()}"
    )
    print(
        f"data: {text_bytes / 1e6:.1f} MB text, 18 signal files + 2 label files; output arrays "
        f"{rows[0][2]['output'] / 1e6:.1f} MB (seqsweep, float32)\n"
    )
    print(f"| loader | best of {args.repeats} (s) | tracemalloc peak (MB) | max RSS growth (MB) | output (MB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds, mem in rows:
        print(
            f"| {name} | {seconds:.3f} | {mem['peak_traced'] / 1e6:.1f} | {mem['rss_growth'] / 1e6:.1f} "
            f"| {mem['output'] / 1e6:.1f} |"
        )
    print(f"\nspeed-up: {rows[1][1] / rows[0][1]:.2f}x")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def len_cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def pandas_version() -> str:
    import pandas

    return pandas.__version__


if __name__ == "__main__":
    main()
