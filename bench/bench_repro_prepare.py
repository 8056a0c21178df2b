"""Benchmark: `dvc repro prepare-har prepare-imdb` (the data stages) on full-size archives, then the no-op rerun.

Builds a scratch git + DVC copy of the project, writes full-size SYNTHETIC archives in the exact
upstream layouts (7352/2947 HAR windows, 25000/25000 IMDB reviews), points data.*.url at them with
file:// URLs, times the first `dvc repro prepare-har prepare-imdb` (download + verify, extract, prepare, both
datasets) and then three no-op reruns, which must do no work.

    python bench/bench_repro_prepare.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from seqsweep.checksum import sha256_file
from seqsweep.tools import sample_data

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cwd: Path, *args: str) -> tuple[float, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, proc.stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archives = tmp / "archives"
        archives.mkdir()
        t0 = time.perf_counter()
        har = sample_data.write_har_archive(archives / "har.zip")
        imdb = sample_data.write_imdb_npz(archives / "imdb.npz")
        print(
            f"full-size synthetic archives written in {time.perf_counter() - t0:.1f} s "
            f"(har.zip {har.stat().st_size / 1e6:.1f} MB, imdb.npz {imdb.stat().st_size / 1e6:.1f} MB)"
        )
        root = tmp / "project"
        root.mkdir()
        for name in ("dvc.yaml", "params.yaml", ".gitignore"):
            shutil.copy(REPO / name, root / name)
        shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        params = yaml.safe_load((root / "params.yaml").read_text())
        for ds, path in (("har", har), ("imdb", imdb)):
            params["data"][ds].update(url=path.as_uri(), sha256=sha256_file(path))
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
            sh(root, *cmd)
        first, out = sh(root, str(BIN / "dvc"), "repro", "prepare-har", "prepare-imdb")
        ran = out.count("Running stage")
        print(f"dvc repro prepare-har prepare-imdb, first run: {first:.1f} s ({ran} stages ran)")
        for i in range(3):
            again, out = sh(root, str(BIN / "dvc"), "repro", "prepare-har", "prepare-imdb")
            assert "Running stage" not in out, out
            print(f"dvc repro prepare-har prepare-imdb, no-op rerun {i + 1}: {again:.2f} s (no stage ran)")


if __name__ == "__main__":
    main()
