"""Benchmark: what JAX's persistent compilation cache saves a training process at the full data shapes.

For each program shape of the tutorials' configuration (units 100, batch 64, dropout 0.5, 10 repeats)
of the architectures `auto` trains fused on a CPU, the plan's calibration (seqsweep.calibration)
measures a program's set-up in a fresh process: building the models, compiling, warming up, the
first test predictions. It does so twice, side by side in one run: with an empty compilation cache,
then again (its calibrations emptied) with the compiled programs the first wrote, as a stage started
after a plan, a rerun or a second experiment of the same shapes finds them. Seconds per step are
printed too: a loaded program must train as fast as a compiled one.

    python bench/bench_compilation_cache.py [-S key=value ...] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_auto_vs_fit import plan  # noqa: E402  (`python -m seqsweep.plan --json` in a scratch folder)

REPO = Path(__file__).resolve().parents[1]
GRID = [
    "model.units=100",
    "train.batch_size=64",
    "model.dropout=0.5",
    "train.repeats=10",
    "archs.har=[lstm,cnn_lstm,stacked_lstm]",
    "archs.imdb=[lstm_recurrent_dropout]",
]


def calibrate(folder: Path, overrides: list[str], env: dict) -> tuple[dict, float]:
    """The calibrations a plan made (shape label -> measure), and the plan's wall time."""
    calibrations = Path(env["XDG_CACHE_HOME"]) / "seqsweep" / "calibration.json"
    calibrations.unlink(missing_ok=True)
    started = time.perf_counter()
    plan(folder, overrides, env)
    wall = time.perf_counter() - started
    shapes = json.loads(calibrations.read_text())["shapes"]
    out = {}
    for key, measure in shapes.items():
        shape = json.loads(key.rsplit(" | ", 1)[1])
        label = f"{shape['dataset']}:{shape['arch']} u{shape['units']} b{shape['batch_size']} x{shape['lanes']}"
        out[label] = measure
    return out, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="grid overrides (plan's -S)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    grid = GRID + args.overrides
    with tempfile.TemporaryDirectory(prefix="bench-jax-cache-") as tmp:
        folder = Path(tmp)
        shutil.copy(REPO / "params.yaml", folder / "params.yaml")
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XDG_CACHE_HOME": str(folder / "cache")}
        for name in ("MLFLOW_TRACKING_URI", "JAX_COMPILATION_CACHE_DIR"):
            env.pop(name, None)
        cold, cold_wall = calibrate(folder, grid, env)
        programs = sum(1 for _ in (folder / "cache/seqsweep/jax").glob("*-cache"))
        warm, warm_wall = calibrate(folder, grid, env)
    rows = [
        {
            "shape": label,
            "setup_cold_s": cold[label]["setup_seconds"],
            "setup_warm_s": warm[label]["setup_seconds"],
            "step_cold_ms": 1000 * cold[label]["step_seconds"],
            "step_warm_ms": 1000 * warm[label]["step_seconds"],
        }
        for label in cold
    ]
    print(f"{'shape':40} {'set-up cold s':>13} {'warm s':>8} {'step cold ms':>13} {'warm ms':>8}")
    for r in rows:
        print(
            f"{r['shape']:40} {r['setup_cold_s']:13.1f} {r['setup_warm_s']:8.1f} "
            f"{r['step_cold_ms']:13.1f} {r['step_warm_ms']:8.1f}"
        )
    print(f"plans: {cold_wall:.0f} s with an empty cache ({programs} programs written), {warm_wall:.0f} s after")
    if args.out:
        doc = {"date": time.strftime("%Y-%m-%d"), "grid": grid, "rows": rows, "programs": programs}
        args.out.write_text(json.dumps({**doc, "plan_seconds": {"cold": cold_wall, "warm": warm_wall}}, indent=2))


if __name__ == "__main__":
    main()
