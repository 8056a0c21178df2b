"""Specification of where training runs on one machine: cells side by side in local worker
processes, each with its share of the cores; and a store that cannot be used stopping the stage before
any training, untouched. (The pool training fused and fit architectures with the default engine, through
`dvc repro`, exactly as one worker does: tests/test_pipeline_dvc.py.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from params_file import TINY_GRID, write_params
from train_fixtures import write_prepared_har

from seqsweep import runtime, tracking, workers

STAGE = ["-m", "seqsweep.train", "har", "lstm", "data/prepared/har", "runs/har-lstm.json"]


def run_stage(ws: Path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "KERAS_BACKEND")}
    return subprocess.run(
        [sys.executable, *STAGE], cwd=ws, env={**base, **env}, capture_output=True, text=True, timeout=600
    )


def test_each_local_worker_gets_its_own_cores_and_threads_to_match():
    cores = sorted(os.sched_getaffinity(0))
    shares = workers.shares(len(cores), "cpu")
    assert sorted(c for share in shares for c in share["cores"]) == cores
    assert all(len(share["cores"]) == 1 for share in shares)
    env = runtime.Runtime("fused", "jax", "cpu", deterministic=True).env(threads=1)
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "1"
    assert env["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=true --xla_cpu_multi_thread_eigen=false"
    gpu = workers.shares(4, "gpu")
    assert all(0 < share["gpu_memory_fraction"] <= 0.25 for share in gpu)


def test_auto_is_one_fused_worker_per_core_one_fit_worker_per_two_and_one_per_gpu_never_more_than_cells(
    monkeypatch,
):
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda _: set(range(16)))
    monkeypatch.setattr(workers, "_available_memory", lambda: 64 * workers.GIB)

    def count(*args):
        return workers.count(*args)[0]

    assert count("auto", "cpu", 100, "fused") == 16
    assert count("auto", "cpu", 100, "fit") == 8  # TensorFlow's fit uses two threads well
    assert count("auto", "cpu", 5, "fused") == 5
    assert workers.count("auto", "cpu", 100, "fit")[1] == "auto: one per two cores for fit (16 cores)"
    monkeypatch.setattr(workers, "_available_memory", lambda: 6 * workers.GIB)
    assert workers.count("auto", "cpu", 100, "fused") == (
        4,
        "auto: one per core for fused (16 cores), 4 by free memory",
    )
    assert count("auto", "gpu", 100, "fused") == 1
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda _: {0})
    assert count("auto", "cpu", 100, "fit") == 1
    for engine in ("fit", "fused"):
        assert count(3, "cpu", 100, engine) == 3
        assert count(3, "cpu", 2, engine) == 2 and count(8, "cpu", 1, engine) == 1


# ---- a store that cannot be used ----------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "content", [b"not a database at all, just text" * 100, b"SQLite format 2\x00" + b"\x00" * 4080]
)
def test_a_damaged_sqlite_store_stops_the_stage_with_one_line_and_is_left_untouched(tmp_path, content):
    write_prepared_har(tmp_path)
    write_params(tmp_path, TINY_GRID)
    (tmp_path / "mlflow.db").write_bytes(content)
    before = _sha256(tmp_path / "mlflow.db")
    done = run_stage(tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: MLflow store {tmp_path / 'mlflow.db'} ") and "left untouched" in last
    assert "Traceback" not in done.stderr
    assert _sha256(tmp_path / "mlflow.db") == before and not (tmp_path / "runs").exists()


def test_a_store_with_a_damaged_page_is_named_with_sqlites_own_words(tmp_path):
    import sqlite3

    db = tmp_path / "mlflow.db"
    tracking.Tracker(f"sqlite:///{db}", tmp_path)  # a real, empty MLflow store
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page but the first (the header and schema)
    db.write_bytes(bytes(data))
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(db).execute("select count(*) from experiments").fetchall()
    with pytest.raises(tracking.StoreError, match=r"MLflow store sqlite:///.*: .*(malformed|not a database)"):
        with tracking.store_errors(f"sqlite:///{db}"):
            tracking.Tracker(f"sqlite:///{db}", tmp_path)


def test_an_unreachable_tracking_server_stops_the_stage_before_training(tmp_path):
    from tracking_server import free_port

    write_prepared_har(tmp_path)
    write_params(tmp_path, TINY_GRID)
    url = f"http://127.0.0.1:{free_port()}"
    done = run_stage(tmp_path, MLFLOW_TRACKING_URI=url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: MLflow store {url}: cannot connect to it"
    assert not (tmp_path / "runs").exists()
