"""A scratch DVC project for the end-to-end tests: a fresh git + DVC clone of this repository's
pipeline (dvc.yaml, src/, the plot templates) with its own params.yaml, run with the real `dvc`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from params_file import DEFAULTS, write_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command in a project; its stages run the project's own copy of src/ (as DVC tracks it)."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(cwd / "src"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def make_project(root: Path, params: dict) -> Path:
    """The project at `root`, committed, with the repository's params.yaml changed by `params`."""
    root.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(root, params, base=DEFAULTS)
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "ci@example.org")
    sh(root, "git", "config", "user.name", "ci")
    sh(root, str(BIN / "dvc"), "init", "-q")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project")
    return root
