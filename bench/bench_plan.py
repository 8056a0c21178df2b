"""Benchmark: `seqsweep plan`'s estimate against the measured wall time of `dvc repro`, on real HAR.

In a scratch copy of the project (git + DVC) with `data.har.url` at the real archive
(`../shared/data/uci-har/uci-har-dataset.zip` beside the repository), prepared once (not timed), for
each small grid below, with a fresh MLflow store and an empty calibration cache:
1. `python -m seqsweep.plan --json` (calibrates; its own time is reported apart),
2. `dvc repro train-har` (every training stage of the grid, default engine and workers), timed.
It prints, per grid, the plan's estimate, the measured wall time and the error; `--out` writes JSON.

    python bench/bench_plan.py [--zip PATH] [--grids fit,fused,mixed] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_har import BIN, REAL, project  # noqa: E402  (the same scratch project)

# Small real grids, each a few minutes here: the fit engine alone (cnn1d), the fused engine alone
# (lstm, two programs per stage side by side), and a study mixing both.
GRIDS = {
    "fit": {"archs": ["cnn1d"], "units": [16, 64], "batch_size": [32, 64], "dropout": [0.5], "repeats": 2, "epochs": 4},
    "fused": {
        "archs": ["lstm"],
        "units": [16, 64],
        "batch_size": [64],
        "dropout": [0.25, 0.5],
        "repeats": 3,
        "epochs": 4,
    },
    "mixed": {
        "archs": ["lstm", "cnn1d"],
        "units": [32],
        "batch_size": [32, 64],
        "dropout": [0.5],
        "repeats": 3,
        "epochs": 4,
    },
}


def set_grid(root: Path, grid: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["archs"] = {"har": grid["archs"], "imdb": []}
    params["model"] = {"units": grid["units"], "dropout": grid["dropout"]}
    params["train"].update(batch_size=grid["batch_size"], repeats=grid["repeats"], epochs=grid["epochs"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(root: Path, env: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=REAL)
    parser.add_argument("--grids", default=",".join(GRIDS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.zip.is_file():
        sys.exit(f"{args.zip} not found: the real UCI HAR archive is expected in ../shared/data/uci-har/")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        root = project(Path(tmp) / "project", args.zip, ["lstm"], 1)
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(root / "src"),
            "DVC_NO_ANALYTICS": "1",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        run(root, env, str(BIN / "dvc"), "repro", "prepare-har")
        for name in args.grids.split(","):
            grid = GRIDS[name]
            set_grid(root, grid)
            shutil.rmtree(root / "mlartifacts", ignore_errors=True)
            (root / "mlflow.db").unlink(missing_ok=True)
            env["XDG_CACHE_HOME"] = str(Path(tmp) / f"cache-{name}")  # an empty calibration cache
            proc, plan_seconds = run(root, env, sys.executable, "-m", "seqsweep.plan", "--json")
            plan = json.loads(proc.stdout)
            proc, wall = run(root, env, str(BIN / "dvc"), "repro", "train-har")
            stage_lines = [line for line in proc.stderr.splitlines() if line.startswith("plan: ")]
            row = {
                "grid": name,
                **grid,
                "stages": [
                    {k: s[k] for k in ("name", "engine", "workers", "programs", "left", "seconds", "peak_bytes")}
                    for s in plan["stages"]
                ],
                "estimate_s": plan["seconds"],
                "measured_s": wall,
                "error": plan["seconds"] / wall - 1,
                "plan_s": plan_seconds,
                "stage_lines": stage_lines,
            }
            rows.append(row)
            print(
                f"{name:6} estimate {row['estimate_s']:7.1f} s  measured {wall:7.1f} s  "
                f"error {100 * row['error']:+6.1f}%  (plan with calibration: {plan_seconds:.1f} s)",
                flush=True,
            )
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "data": str(args.zip),
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
