"""Benchmark: the whole study's repeats per hour with the defaults (`train.engine: auto`,
`train.workers: auto`) against the tutorials' way (`fit`, one worker: one `model.fit` per repeat, one
after another), from training stages run whole at the full data shapes, side by side in one run.

Every training stage of params.yaml (all nine architectures) is run both ways, back to back, as `dvc
repro` runs it (`python -m seqsweep.train`), each run in a fresh workspace, MLflow store and JAX
compilation cache, at the tutorials' configuration (units 100, batch 64, dropout 0.5) with `--repeats`
repeats, once per epoch count in `--har-epochs` / `--imdb-epochs`. The arrays are synthetic, of the
published shapes (HAR 7,352 + 2,947 windows of 128 x 9; IMDB 25,000 + 25,000 reviews of 500 ids below
5,000): the shapes, not the values, decide the speed.

A stage's wall time is its start-up (imports, store, compilation, model building) plus its epochs.
With two or more epoch counts a straight line through (epochs, wall time) gives both: the intercept
is the start-up, the slope the wall time of one epoch of all its repeats. With one, the whole wall
time is counted as epochs (start-up overweighted: fine for IMDB, whose epochs are minutes). The study's
figure is, per stage, start-up + (10 / repeats) x the architecture's published epochs x the slope: the
default study's 10 repeats at this configuration. Repeats are scaled linearly, which counts against
the fused engine (more repeats make bigger programs, not proportionally slower ones), and the fit
way's start-up is not scaled, which counts for it.

    python bench/bench_study_measured.py [--repeats 4] [--har-epochs 2,6] [--imdb-epochs 1]
        [--only har:lstm,...] [--add EARLIER.json] [--out F]

`--add` merges the measurements of an earlier `--out` (same repeats) into the fit, e.g. a second
epoch count for some stages.
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

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_imdb_engines import write_prepared as write_prepared_imdb  # noqa: E402
from har_arrays import write_prepared_har  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from seqsweep.models import registry  # noqa: E402  (each architecture's published epochs)

WAYS = {"auto": {}, "tutorials": {"engine": "fit", "workers": 1}}
STUDY_REPEATS = 10


def run_stage(root: Path, dataset: str, arch: str, repeats: int, epochs: int, train: dict) -> dict:
    """Train one stage whole in a fresh workspace under `root`; its wall time and what it said it chose."""
    ws = root / "ws"
    ws.mkdir()
    if dataset == "har":
        write_prepared_har(ws)
    else:
        write_prepared_imdb(ws / "data/prepared/imdb")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["archs"] = {"har": [], "imdb": [], dataset: [arch]}
    params["model"].update(units=[100], dropout=[0.5])
    params["data"]["imdb"].update(maxlen=500, num_words=5000)
    params["train"].update(batch_size=[64], repeats=repeats, epochs=epochs, **train)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XDG_CACHE_HOME": str(ws / "cache")}
    for name in ("MLFLOW_TRACKING_URI", "JAX_COMPILATION_CACHE_DIR", "KERAS_BACKEND", "XLA_FLAGS"):
        env.pop(name, None)
    args = [sys.executable, "-m", "seqsweep.train", dataset, arch, f"data/prepared/{dataset}", "runs/out.json"]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ws, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{dataset}:{arch} {train or 'auto'} failed:\n{done.stderr[-3000:]}")
    written = json.loads((ws / "runs/out.json").read_text())
    (config,) = written["configs"].values()
    trained = [r for r in config["repeats"] if not r["reused"] and r["status"] == "FINISHED"]
    assert len(trained) == repeats, f"{dataset}:{arch}: {len(trained)} of {repeats} repeats trained"
    return {"seconds": seconds, "engine": written["engine"]}


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(start-up s, s per epoch of the stage) from its (epochs, wall s) runs; see the module's doc."""
    epochs, seconds = np.array(points, dtype=float).T
    if len(set(epochs)) == 1:
        return 0.0, float(seconds.sum() / epochs.sum())
    slope, intercept = np.polyfit(epochs, seconds, 1)
    return max(float(intercept), 0.0), float(slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--har-epochs", default="2,6", help="comma-separated epoch counts")
    parser.add_argument("--imdb-epochs", default="1", help="comma-separated epoch counts")
    parser.add_argument("--only", help="comma-separated dataset:arch (default: every architecture of params.yaml)")
    parser.add_argument("--add", type=Path, action="append", default=[], help="an earlier --out to merge")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    archs = yaml.safe_load((REPO / "params.yaml").read_text())["archs"]
    stages = [(d, a) for d in ("har", "imdb") for a in archs[d]]
    if args.only:
        stages = [tuple(s.split(":")) for s in args.only.split(",")]
    measured = [m for f in args.add for m in json.loads(f.read_text())["measured"] if m["repeats"] == args.repeats]
    counts = {"har": args.har_epochs, "imdb": args.imdb_epochs}
    for dataset, arch in stages:
        for epochs in map(int, counts[dataset].split(",")):
            for way, train in WAYS.items():  # back to back
                with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
                    run = run_stage(Path(tmp), dataset, arch, args.repeats, epochs, train)
                m = {"stage": f"{dataset}:{arch}", "way": way, "repeats": args.repeats, "epochs": epochs, **run}
                measured.append(m)
                print(json.dumps(m), file=sys.stderr, flush=True)
    rows = []
    for stage in dict.fromkeys(m["stage"] for m in measured):
        dataset, arch = stage.split(":")
        study_epochs = registry(dataset)[arch].epochs
        row = {"stage": stage, "study_epochs": study_epochs}
        for way in WAYS:
            ms = [m for m in measured if m["stage"] == stage and m["way"] == way]
            startup, per_epoch = fit_line([(m["epochs"], m["seconds"]) for m in ms])
            per_config = startup + STUDY_REPEATS / args.repeats * study_epochs * per_epoch
            row[way] = {"engine": ms[0]["engine"], "startup_s": startup, "epoch_s": per_epoch, "config_s": per_config}
        row["ratio"] = row["tutorials"]["config_s"] / row["auto"]["config_s"]
        rows.append(row)
    study = {w: sum(r[w]["config_s"] for r in rows) for w in WAYS}
    ratio = study["tutorials"] / study["auto"]
    print(f"{'stage':26} {'auto':6} {'start-up s':>14} {'epoch s':>15} {'config s':>15} {'ratio':>6}")
    print(f"{'':26} {'':6} {'auto':>6} {'fit':>7} {'auto':>7} {'fit':>7} {'auto':>7} {'fit':>7}")
    for r in rows:
        a, t = r["auto"], r["tutorials"]
        print(f"{r['stage']:26} {a['engine']:6} {a['startup_s']:6.0f} {t['startup_s']:7.0f} {a['epoch_s']:7.1f} "
              f"{t['epoch_s']:7.1f} {a['config_s']:7.0f} {t['config_s']:7.0f} {r['ratio']:6.2f}")  # fmt: skip
    print(f"one configuration of every stage, 10 repeats of its published epochs: {study['auto']:.0f} s with the "
          f"defaults, {study['tutorials']:.0f} s the tutorials' way: {ratio:.2f}x the repeats per hour")  # fmt: skip
    if args.out:
        doc = {"date": time.strftime("%Y-%m-%d"), "args": {k: str(v) for k, v in vars(args).items()}}
        args.out.write_text(
            json.dumps(doc | {"measured": measured, "rows": rows, "study_s": study, "ratio": ratio}, indent=2)
        )


if __name__ == "__main__":
    main()
