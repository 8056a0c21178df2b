"""End to end through DVC itself, as users run it: `dvc repro prepare` over HTTP from 127.0.0.1,
a no-op second repro, and `dvc exp run -S` / queued experiments logging into one MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import sha256_of

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def sh(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture
def project(tmp_path, server):
    """A fresh git + DVC clone of the project whose data params point at the local HTTP server."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["har"].update(url=server.url("har.zip"), sha256=sha256_of(server.root / "har.zip"))
    params["data"]["imdb"].update(url=server.url("imdb.npz"), sha256=sha256_of(server.root / "imdb.npz"), maxlen=40)
    params["model"].update(units=[2], dropout=[0.25])
    params["train"].update(batch_size=[32], repeats=1, epochs=1)
    params["archs"].update(har=["lstm"], imdb=["lstm"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "ci@example.org")
    sh(root, "git", "config", "user.name", "ci")
    sh(root, str(BIN / "dvc"), "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project")
    return root


def test_dvc_repro_prepare_fetches_verifies_and_prepares_both_datasets_and_nothing_else(project, server):
    out = sh(project, str(BIN / "dvc"), "repro", "prepare").stdout
    for stage in ("download@har", "download@imdb", "extract@har", "prepare@har", "prepare@imdb"):
        assert f"'{stage}'" in out
    assert "train@" not in out and not (project / "metrics/train").exists()
    for ds in ("har", "imdb"):
        for name in ("X_train", "y_train", "X_test", "y_test"):
            assert (project / f"data/prepared/{ds}/{name}.npy").is_file()
    assert json.loads((project / "data/prepared/har/meta.json").read_text())["official"] is False
    assert any(path.endswith("har.zip") for path in server.requests)

    started = time.perf_counter()
    again = sh(project, str(BIN / "dvc"), "repro", "prepare").stdout
    elapsed = time.perf_counter() - started
    assert "Running stage" not in again
    assert elapsed < 15, f"a no-op repro took {elapsed:.1f} s"
    ignored = sh(project, "git", "check-ignore", "data/raw/har.zip", "data/prepared/har").stdout
    assert "data/raw/har.zip" in ignored, "DVC outputs under data/ are git-ignored"


def _prepared_hashes(project: Path) -> dict:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {ds: lock[f"prepare@{ds}"]["outs"][0]["md5"] for ds in ("har", "imdb")}


def test_a_mirror_serving_the_same_bytes_leaves_the_prepared_arrays_unchanged(project, server):
    sh(project, str(BIN / "dvc"), "repro", "prepare")
    before = _prepared_hashes(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["har"]["url"] = server.url("har.zip", route="flaky/1")  # another URL, same bytes
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh(project, str(BIN / "dvc"), "repro", "prepare").stdout
    assert "'download@har'" in out
    assert _prepared_hashes(project) == before, "training stages are not invalidated by a mirror"


def _runs(project: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def test_experiments_and_queued_sweeps_log_into_the_one_store_at_the_repo_root(project):
    dvc = str(BIN / "dvc")
    sh(project, dvc, "repro", "prepare")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "prepared")

    sh(project, dvc, "exp", "run", "-n", "wider", "-S", "model.units=3", "train@har-lstm")
    runs = _runs(project, "har")
    repeats = [r for r in runs if r.data.tags.get("seqsweep_kind") == "repeat"]
    assert [r.data.params["units"] for r in repeats] == ["3"], "only units=3 trained"
    assert repeats[0].data.tags["dvc_exp_name"] == "wider"

    sh(project, dvc, "exp", "run", "--queue", "-S", "model.units=4,5", "train@har-lstm")
    sh(project, dvc, "queue", "start", "-j", "2")
    deadline = time.time() + 420
    while time.time() < deadline:
        status = sh(project, dvc, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Failed" not in status, status
    repeats = [r for r in _runs(project, "har") if r.data.tags.get("seqsweep_kind") == "repeat"]
    assert sorted(r.data.params["units"] for r in repeats) == ["3", "4", "5"]
    assert all(r.info.status == "FINISHED" for r in repeats)
    assert not list((project / ".dvc/tmp").rglob("mlflow.db")), "nothing logged inside a temp workspace"
