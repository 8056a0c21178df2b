"""A scratch DVC project for the end-to-end tests: a fresh git + DVC clone of this repository's
pipeline (dvc.yaml, src/, the plot templates) with its own params.yaml, run with the real `dvc`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from params_file import DEFAULTS, write_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(cwd: Path) -> dict:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": str(cwd / "src"),
        "XDG_CACHE_HOME": str(Path(cwd).parent / "cache"),  # the plan's calibrations: the project's own
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def sh(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command in a project; its stages run the project's own copy of src/ (as DVC tracks it)."""
    proc = subprocess.run(args, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@contextmanager
def queue_workers(cwd: Path, jobs: int):
    """`dvc queue start -j <jobs>`; on leaving, the queue's workers still alive are stopped by process id.
    Its output goes to a file, not a pipe: the workers are daemons that inherit it, and a pipe would hold
    the caller until the last of them exits (one that misses its shutdown never does: seen with DVC 3)."""
    log = cwd.parent / "queue-start.log"
    with log.open("w") as out:
        done = subprocess.run(
            [str(BIN / "dvc"), "queue", "start", "-j", str(jobs)],
            cwd=cwd,
            env=_env(cwd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
    assert done.returncode == 0, log.read_text()[-3000:]
    try:
        yield
    finally:
        for pid_file in (cwd / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.pid"):
            _stop_worker(int(pid_file.read_text().strip() or 0))


def _stop_worker(pid: int) -> None:
    try:
        if pid <= 0 or b"queue-worker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # gone (or the number reused by another process)
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


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
