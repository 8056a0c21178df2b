"""Benchmark: the IMDB training stage at the full data shapes, whole, with `auto` (the fused engine on a
CPU, one worker per core) against the tutorials' way (`fit`, one worker), side by side in one run, each
beside the plan's estimate of the same stage.

`auto`'s CPU table (engines.FUSED_ON_CPU) puts IMDB lstm on the fused engine from the plan's
calibrated estimates (bench/bench_auto_vs_fit.py); this runs the stage itself, so the estimate behind
the choice is checked against a measured wall time. The arrays are synthetic, of the published shapes
(25,000 training and 25,000 test reviews of 500 word ids below 5,000): the shapes, not the words,
decide the speed. Each way gets a fresh MLflow store and an empty calibration cache.

    python bench/bench_imdb_engines.py [--arch lstm] [--repeats 4] [--epochs 1] [--out F]
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

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_auto_vs_fit import plan  # noqa: E402  (`python -m seqsweep.plan --json` in a scratch folder)

REPO = Path(__file__).resolve().parents[1]
N, MAXLEN, NUM_WORDS = 25_000, 500, 5_000
WAYS = {"auto": {}, "tutorials": {"engine": "fit", "workers": 1}}


def write_prepared(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        np.save(folder / f"X_{split}.npy", rng.integers(1, NUM_WORDS, (N, MAXLEN)).astype(np.int32))
        np.save(folder / f"y_{split}.npy", rng.integers(0, 2, N))
    meta = {"dataset": "imdb", "official": False, "num_words": NUM_WORDS, "maxlen": MAXLEN}
    (folder / "meta.json").write_text(json.dumps(meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="lstm")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-imdb-") as tmp:
        data = Path(tmp) / "prepared"
        write_prepared(data)
        for way, train in WAYS.items():
            ws = Path(tmp) / way
            ws.mkdir()
            shutil.copytree(data, ws / "data/prepared/imdb")
            params = yaml.safe_load((REPO / "params.yaml").read_text())
            params["archs"] = {"har": [], "imdb": [args.arch]}
            params["model"].update(units=[100], dropout=[0.5])
            params["data"]["imdb"].update(maxlen=MAXLEN, num_words=NUM_WORDS)
            params["train"].update(batch_size=[64], repeats=args.repeats, epochs=args.epochs, **train)
            (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XDG_CACHE_HOME": str(ws / "cache")}
            for name in ("MLFLOW_TRACKING_URI", "JAX_COMPILATION_CACHE_DIR", "KERAS_BACKEND"):
                env.pop(name, None)
            started = time.perf_counter()
            (stage,) = plan(ws, [], env)["stages"]
            plan_s = time.perf_counter() - started
            shutil.rmtree(ws / "cache" / "seqsweep" / "jax", ignore_errors=True)  # the stage compiles, as unplanned
            started = time.perf_counter()
            trained = subprocess.run(
                [sys.executable, "-m", "seqsweep.train", "imdb", args.arch, "data/prepared/imdb", "runs/imdb.json"],
                cwd=ws,
                env=env,
                capture_output=True,
                text=True,
            )
            measured = time.perf_counter() - started
            if trained.returncode != 0:
                sys.exit(f"the stage failed:\n{trained.stderr[-3000:]}")
            row = {
                "way": way,
                "engine": f"{stage['engine']} x{stage['workers']}",
                "estimate_s": stage["seconds"],
                "measured_s": measured,
                "error": stage["seconds"] / measured - 1,
                "plan_s": plan_s,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"imdb {args.arch}, units 100, batch 64, {args.repeats} repeats x {args.epochs} epochs, full shapes:")
    for r in rows:
        print(f"{r['way']:10} {r['engine']:9} estimate {r['estimate_s']:7.0f} s  measured {r['measured_s']:7.0f} s  "
              f"error {100 * r['error']:+.0f}%")  # fmt: skip
    ratio = rows[1]["measured_s"] / rows[0]["measured_s"]
    print(f"measured: auto trains {ratio:.2f}x the repeats per hour of the tutorials' way")
    if args.out:
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
