"""Benchmark: the study's HAR table on the real UCI HAR data, produced by the pipeline itself.

In a scratch copy of the project (git + DVC), with `data.har.url` at the real archive
(`../shared/data/uci-har/uci-har-dataset.zip` beside the repository), `dvc repro` trains lstm,
cnn_lstm, convlstm and cnn1d at the tutorials' settings (batch 64, dropout 0.5, the study's epochs;
lstm and cnn_lstm with 100 units, convlstm and cnn1d with the tutorials' 64 filters), 10 repeats each,
with the default engine and workers. It prints each architecture's mean +/- std beside the published
figure (reference_results.yaml), how many published stds apart they are, and the wall time of each
stage; `--out` writes the same as JSON.

    python bench/bench_real_har.py [--zip PATH] [--repeats 10] [--archs lstm,cnn_lstm,convlstm,cnn1d] [--out F]
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

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REAL = REPO.parent / "shared" / "data" / "uci-har" / "uci-har-dataset.zip"
UNITS = {"lstm": 100, "cnn_lstm": 100, "convlstm": 64, "cnn1d": 64}  # the tutorials' width / filters


def sh(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def project(root: Path, archive: Path, archs: list[str], repeats: int) -> Path:
    from seqsweep.checksum import sha256_file

    root.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["har"] = {"url": archive.resolve().as_uri(), "sha256": sha256_file(archive)}
    params["archs"]["har"] = archs
    params["model"]["dropout"] = [0.5]
    params["train"].update(batch_size=[64], repeats=repeats, epochs=None)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(
        root,
        "git",
        "-c",
        "user.email=bench@example.org",
        "-c",
        "user.name=bench",
        "commit",
        "-qm",
        "x",
        "--allow-empty",
    )
    sh(root, str(BIN / "dvc"), "init", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    return root


def published(arch: str) -> dict | None:
    figures = yaml.safe_load((REPO / "src/seqsweep/reference_results.yaml").read_text())["figures"]
    for fig in figures:
        s = fig["setting"]
        if (
            (fig["dataset"], fig["arch"]) == ("har", arch)
            and s.get("units") == UNITS[arch]
            and s.get("batch_size") == 64
        ):
            return fig
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=REAL)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--archs", default="lstm,cnn_lstm,convlstm,cnn1d")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.zip.is_file():
        sys.exit(f"{args.zip}: not found (the real UCI HAR archive; see shared/data/uci-har/README.md)")
    archs = args.archs.split(",")
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = project(Path(tmp) / "project", args.zip, archs, args.repeats)
        sh(root, str(BIN / "dvc"), "repro", "prepare-har")
        meta = json.loads((root / "data/prepared/har/meta.json").read_text())
        print(f"data: {'official' if meta['official'] else 'NOT official: ' + str(meta['unofficial_files'])}")
        for arch in archs:
            params = yaml.safe_load((root / "params.yaml").read_text())
            params["model"]["units"] = [UNITS[arch]]
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            t0 = time.perf_counter()
            out = sh(root, str(BIN / "dvc"), "repro", f"train-har@{arch}")
            seconds = time.perf_counter() - t0
            engine = next((line for line in out.stderr.splitlines() if "engine" in line and "train-har" in line), "")
            doc = json.loads((root / f"runs/har-{arch}.json").read_text())
            (config,) = doc["configs"].values()
            fig = published(arch)
            row = {
                "arch": arch,
                "config": next(iter(doc["configs"])),
                "engine": doc["engine"],
                "engine_line": engine.strip(),
                "n": config["n"],
                "n_failed": config["n_failed"],
                "mean_pct": 100 * config["mean"],
                "std_pct": None if config["std"] is None else 100 * config["std"],
                "accuracies_pct": [100 * r["test_accuracy"] for r in config["repeats"] if r["test_accuracy"]],
                "published_mean_pct": fig and fig["mean"],
                "published_std_pct": fig and fig.get("std"),
                "wall_seconds": round(seconds, 1),
            }
            if fig and fig.get("std"):
                row["published_stds_below"] = round((fig["mean"] - row["mean_pct"]) / fig["std"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    total = time.perf_counter() - started
    print(
        f"\nReal UCI HAR ({meta['n_train']} / {meta['n_test']} windows), {args.repeats} repeats each, "
        f"wall {total:.0f} s"
    )
    print("| arch | setting | engine | ours: mean +/- std (n) | published | published stds below | wall |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        ours = (
            f"{r['mean_pct']:.2f} +/- {r['std_pct']:.2f} ({r['n']})"
            if r["std_pct"] is not None
            else f"{r['mean_pct']:.2f} ({r['n']})"
        )
        pub = f"{r['published_mean_pct']:.2f} +/- {r['published_std_pct']:.2f}" if r["published_std_pct"] else "n/a"
        print(
            f"| {r['arch']} | {r['config']} | {r['engine']} | {ours} | {pub} | "
            f"{r.get('published_stds_below', 'n/a')} | {r['wall_seconds']:.0f} s |"
        )
    if args.out:
        doc = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "rows": rows,
            "wall_seconds": round(total, 1),
            "date": time.strftime("%Y-%m-%d"),
        }
        args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
