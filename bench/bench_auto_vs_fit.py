"""Benchmark: the default engine and workers (`auto`) against the tutorials' way (one `model.fit` per
repeat, one after another: `train.engine: fit`, `train.workers: 1`), per architecture, at the full
data shapes, on this machine, side by side in one run.

Both are `python -m seqsweep.plan --json` of the same grid in a scratch folder holding only
params.yaml: with no prepared data the plan takes the published sizes (HAR 7352/2947 windows of
128 x 9, IMDB 25000/25000 reviews of `data.imdb.maxlen` ids), calibrates each program shape through
the engines themselves (random values of those shapes, with the threads each worker would have) and
estimates each training stage's wall time (bench/bench_plan.py measures how close that comes to
`dvc repro`). It prints, per stage, repeats per hour both ways and their ratio; `--out` writes JSON.

    python bench/bench_auto_vs_fit.py [-S key=value ...] [--out F]

The default grid is the tutorials' configuration (units 100, batch 64, dropout 0.5) with every
architecture of params.yaml and 10 repeats: one configuration per stage, as `auto` meets it in
the study (each calibration is a few seconds to a minute; the whole default grid would be about
80 shapes each way).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["model.units=100", "train.batch_size=64", "model.dropout=0.5", "train.repeats=10"]
WAYS = {"auto": [], "tutorials": ["train.engine=fit", "train.workers=1"]}


def plan(folder: Path, overrides: list[str], env: dict) -> dict:
    args = [sys.executable, "-m", "seqsweep.plan", "--json"]
    for item in overrides:
        args += ["-S", item]
    proc = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="grid overrides (plan's -S)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    grid = GRID + args.overrides
    with tempfile.TemporaryDirectory(prefix="bench-auto-") as tmp:
        folder = Path(tmp)
        shutil.copy(REPO / "params.yaml", folder / "params.yaml")
        # the plan's repository root: no prepared data (the published sizes) and no store (nothing held)
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XDG_CACHE_HOME": str(folder / "cache")}
        env.pop("MLFLOW_TRACKING_URI", None)
        plans = {}
        for way, extra in WAYS.items():
            started = time.perf_counter()
            plans[way] = plan(folder, grid + extra, env)
            print(f"{way}: planned in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    rows = []
    for auto, tutorial in zip(plans["auto"]["stages"], plans["tutorials"]["stages"], strict=True):
        per_hour = {way: 3600 * s["left"] / s["seconds"] for way, s in (("auto", auto), ("tutorials", tutorial))}
        rows.append(
            {
                "stage": auto["name"],
                "auto": f"{auto['engine']} x{auto['workers']}",
                "auto_s": auto["seconds"],
                "tutorials_s": tutorial["seconds"],
                "auto_per_hour": per_hour["auto"],
                "tutorials_per_hour": per_hour["tutorials"],
                "ratio": per_hour["auto"] / per_hour["tutorials"],
            }
        )
    total = {way: sum(s["left"] for s in p["stages"]) * 3600 / p["seconds"] for way, p in plans.items()}
    print(f"{'stage':26} {'auto':10} {'auto s':>9} {'fit x1 s':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['stage']:26} {r['auto']:10} {r['auto_s']:9.0f} {r['tutorials_s']:9.0f} {r['ratio']:6.2f}")
    print(f"study: {total['auto']:.1f} repeats/h with auto, {total['tutorials']:.1f} the tutorials' way: "
          f"{total['auto'] / total['tutorials']:.2f}x")  # fmt: skip
    if args.out:
        doc = {"date": time.strftime("%Y-%m-%d"), "grid": grid, "rows": rows, "repeats_per_hour": total}
        args.out.write_text(json.dumps({**doc, "plans": plans}, indent=2))


if __name__ == "__main__":
    main()
