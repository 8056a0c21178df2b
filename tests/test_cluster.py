"""Specification of the shared store and the cluster, with the real components started here on
127.0.0.1: PostgreSQL (as an unprivileged user when the tests run as root) behind an `mlflow server`
with basic authentication and served artifacts, and a Ray cluster of two nodes. The training stage
runs as DVC runs it, in its own process, with only the environment a user would set."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from params_file import TINY_GRID, write_params
from train_fixtures import write_prepared_har

pytestmark = pytest.mark.slow


def stage_args(arch: str = "lstm") -> list[str]:
    return ["-m", "seqsweep.train", "har", arch, "data/prepared/har", f"runs/har-{arch}.json"]


@dataclass
class Store:
    """The tracking server, and the pipeline's own (non-admin) user on it."""

    server: object
    user: str
    password: str

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": self.user,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }

    def request(self, path: str, body: dict | None = None, auth: tuple[str, str] | None = None) -> dict:
        """A REST call as the UI makes it, with the pipeline user's credentials unless `auth` says."""
        user, password = auth or (self.user, self.password)
        headers = {
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
        }
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def runs(self, experiment: str = "har") -> list[dict]:
        """Every run of `experiment`; none before a stage has created it."""
        try:
            exp = self.request(f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")["experiment"]
        except urllib.error.HTTPError as e:
            if e.code == 404:  # RESOURCE_DOES_NOT_EXIST
                return []
            raise
        out, token = [], None
        for _ in range(100):  # pages of 1000 runs, bounded
            body = {
                "experiment_ids": [exp["experiment_id"]],
                "max_results": 1000,
                **({"page_token": token} if token else {}),
            }
            page = self.request("/api/2.0/mlflow/runs/search", body)
            out += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                break
        return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tracking_server import start_mlflow_server, start_postgres

    work = tmp_path_factory.mktemp("store")
    pg = start_postgres(work)
    try:
        db_password = secrets.token_urlsafe(12)
        backend = pg.create_database("mlflow", "mlflow", db_password)
        users = pg.create_database("mlflow_auth", "mlflow", db_password)
        server = start_mlflow_server(backend, work / "server", auth_db_uri=users)
        try:
            store = Store(server, "pipeline", secrets.token_urlsafe(12))
            store.request(
                "/api/2.0/mlflow/users/create",
                {"username": store.user, "password": store.password},
                auth=(server.admin_username, server.admin_password),
            )
            yield store
        finally:
            server.stop()
    finally:
        pg.stop()


def children(runs: list[dict]) -> list[dict]:
    return [r for r in runs if tags(r).get("seqsweep_kind") == "repeat"]


def tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params_of(run: dict) -> dict:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def workspace(root: Path, name: str, **grid) -> Path:
    ws = root / name
    ws.mkdir()
    write_prepared_har(ws)
    write_params(ws, TINY_GRID | grid)  # the default engine: auto (fused for lstm on a CPU)
    return ws


def stage(ws: Path, env: dict, arch: str = "lstm", **popen) -> subprocess.Popen:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "RAY_")) and k not in ("DVC_ROOT", "KERAS_BACKEND")
    }
    return subprocess.Popen(
        [sys.executable, *stage_args(arch)],
        cwd=ws,
        env={**base, **env},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: int = 600) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for(condition, what: str, timeout: float = 300, proc: subprocess.Popen | None = None):
    """Poll `condition` (bounded in time) until it returns something truthy; that is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the stage ended before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(1.0)  # each poll is two requests to the server, which has a stage to serve too
    pytest.fail(f"timed out waiting for {what}")


def statuses(store: Store, units: tuple[str, ...]) -> list[str]:
    """The status of every repeat of these widths (each test trains its own) as the server has them."""
    try:
        return [r["info"]["status"] for r in children(store.runs()) if params_of(r).get("units") in units]
    except (urllib.error.URLError, KeyError, OSError):
        return []


def one_finished_child_per_repeat(runs: list[dict]) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for run in children(runs):
        if run["info"]["status"] == "FINISHED":
            key = (params_of(run).get("units"), params_of(run).get("repeat"))
            counts[key] = counts.get(key, 0) + 1
    return counts


# ---- the shared store: PostgreSQL behind an authenticated mlflow server -----------------------------


def test_requests_without_credentials_or_with_wrong_ones_are_refused(store, tmp_path):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(store.url + "/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert refused.value.code == 401

    ws = workspace(tmp_path, "wrong-password")
    code, err = finish(stage(ws, {**store.env(), "MLFLOW_TRACKING_PASSWORD": "wrong"}))
    assert code == 1 and not (ws / "runs").exists()
    assert err.strip().splitlines()[-1] == (
        f"error: MLflow store {store.url}: it refused the credentials of MLFLOW_TRACKING_USERNAME='pipeline'"
    )


def test_a_server_restart_is_ridden_out_and_one_down_past_the_retry_limit_stops_the_stage_and_the_rerun_reuses_all(
    store, tmp_path
):
    units = ("4", "5", "6")  # one repeat each: two finish before the server goes down for good
    ws = workspace(tmp_path, "trouble", **{"model.units": [int(u) for u in units], "train.repeats": 1})
    # MLflow's client retries with backoff (1+2+4+8+16 s): longer than a restart, shorter than the test's patience
    retrying = {**store.env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    proc = stage(ws, retrying)
    wait_for(lambda: statuses(store, units).count("FINISHED") >= 1, "a first finished repeat", proc=proc)
    store.server.restart(down_seconds=3)
    wait_for(lambda: statuses(store, units).count("FINISHED") >= 2, "a repeat finished after the restart", proc=proc)
    store.server.stop()  # and now it stays down
    stopped = time.monotonic()
    try:
        code, err = finish(proc, timeout=300)
        gave_up = time.monotonic() - stopped
    finally:
        store.server.restart()
    assert code == 1
    assert gave_up < 55, f"the stage gave up {gave_up:.0f} s after: one retry window (0+2+4+8+16 s), not two"
    assert err.strip().splitlines()[-1].startswith(f"error: MLflow store {store.url}: it stopped answering")
    finished_before = sum(one_finished_child_per_repeat(store.runs()).get((u, "0"), 0) for u in units)
    assert 2 <= finished_before < len(units)

    code, err = finish(stage(ws, store.env()))
    assert code == 0, err[-3000:]
    doc = json.loads((ws / "runs/har-lstm.json").read_text())
    assert sum(r["reused"] for c in doc["configs"].values() for r in c["repeats"]) == finished_before
    counts = one_finished_child_per_repeat(store.runs())
    assert all(counts[(u, "0")] == 1 for u in units), "no repeat lost or logged twice"


# ---- a Ray cluster -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    from ray_cluster import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1)
    try:
        yield cluster
    finally:
        cluster.stop()
        assert cluster.all_pids() == [], "every process of the cluster stopped"


def test_a_grid_on_a_ray_cluster_logs_every_repeat_once_fused_and_fit_alike_even_when_a_worker_dies(
    store, ray_cluster, tmp_path
):
    ws = workspace(tmp_path, "ray", **{"model.units": [13, 14], "train.repeats": 2, "train.epochs": 4})
    env = {**store.env(), **ray_cluster.driver_env}

    proc = stage(ws, env, "lstm")  # auto, as measured on a CPU: fused

    def a_running_repeat():
        running = [
            r
            for r in children(store.runs())
            if r["info"]["status"] == "RUNNING" and params_of(r).get("units") in ("13", "14")
        ]
        return running[0] if running else None

    victim = wait_for(a_running_repeat, "a repeat training on a Ray worker", proc=proc)
    os.kill(int(tags(victim)["worker"].rsplit(":", 1)[1]), signal.SIGKILL)  # the Ray worker training it
    code, err = finish(proc)
    assert code == 0, err[-3000:]
    assert "cells of fused on Ray" in err
    code, err = finish(stage(ws, env, "cnn1d"))  # auto: fit
    assert code == 0, err[-3000:]
    assert "cells of fit on Ray" in err

    runs = [r for r in store.runs() if params_of(r).get("units") in ("13", "14")]
    by_id = {r["info"]["run_id"]: r for r in runs}
    assert by_id[victim["info"]["run_id"]]["info"]["status"] == "KILLED", "retried by Ray, retired by the retry"
    for arch, engine, backend in (("lstm", "fused", "jax"), ("cnn1d", "fit", "tensorflow")):
        mine = [r for r in children(runs) if params_of(r)["arch"] == arch]
        counts = one_finished_child_per_repeat(mine)
        assert counts == {(u, r): 1 for u in ("13", "14") for r in ("0", "1")}, arch
        # what the training code in the Ray workers ran with: the stage's runtime, one thread each
        finished = [r for r in mine if r["info"]["status"] == "FINISHED"]
        seen = {
            (tags(r)["engine"], tags(r)["backend"], tags(r)["deterministic"], tags(r)["xla_flags"]) for r in finished
        }
        assert seen == {
            (engine, backend, "true", "--xla_gpu_deterministic_ops=true --xla_cpu_multi_thread_eigen=false")
        }, arch
        assert all(tags(r)["worker"].split(":")[1] != str(os.getpid()) for r in mine)
        assert {tags(r)["epochs_done"] for r in finished} == {"4"}, "what the stage's progress bar reads"

        # the run structure the stage wrote, as the authenticated server serves it
        doc = json.loads((ws / f"runs/har-{arch}.json").read_text())
        assert [c["n"] for c in doc["configs"].values()] == [2, 2]
        for config in doc["configs"].values():
            parent = by_id[config["mlflow_parent_run_id"]]
            assert parent["info"]["status"] == "FINISHED"
            for rep in config["repeats"]:
                child = by_id[rep["mlflow_run_id"]]
                assert tags(child)["mlflow.parentRunId"] == parent["info"]["run_id"]
                metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
                assert metrics["test_accuracy"] == pytest.approx(rep["test_accuracy"])
    assert {r["info"]["artifact_uri"].split(":")[0] for r in runs} == {"mlflow-artifacts"}
