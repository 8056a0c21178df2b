"""Specification of the training stage: the grid, seeds, MLflow run structure, reuse, concurrency,
NaN handling and parameter errors. Tiny data, one epoch."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from params_file import TINY_GRID, edited, write_params
from train_fixtures import write_prepared_har, write_prepared_imdb

from seqsweep import grid, record, tracking
from seqsweep.params import validate
from seqsweep.runtime import requirements


@pytest.fixture
def bare_ws(tmp_path, monkeypatch):
    """A workspace with tiny prepared HAR and IMDB arrays, the current directory of the stage."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    write_prepared_har(tmp_path)
    write_prepared_imdb(tmp_path)
    return tmp_path


@pytest.fixture
def ws(bare_ws, empty_mlflow_db):
    """The workspace with its MLflow store (sqlite:///mlflow.db) created, as after a first run."""
    shutil.copy(empty_mlflow_db, bare_ws / "mlflow.db")
    return bare_ws


def stage_args(dataset: str, arch: str) -> list[str]:
    """The stage's arguments as dvc.yaml gives them."""
    return [dataset, arch, f"data/prepared/{dataset}", f"runs/{dataset}-{arch}.json"]


def run_stage(dataset: str, arch: str) -> None:
    from seqsweep.train import main

    main(stage_args(dataset, arch))


def results(ws: Path, name: str) -> dict:
    return json.loads((ws / "runs" / f"{name}.json").read_text())


def client(ws: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")


def runs(ws: Path, experiment: str) -> list:
    c = client(ws)
    exp = c.get_experiment_by_name(experiment)
    return c.search_runs([exp.experiment_id], max_results=1000) if exp else []


def children(all_runs: list) -> list:
    return [r for r in all_runs if r.data.tags.get(record.KIND_TAG) == "repeat"]


def parents(all_runs: list) -> list:
    return [r for r in all_runs if r.data.tags.get(record.KIND_TAG) == "parent"]


# --- the grid -----------------------------------------------------------------------------------


def base_params(changes: dict | None = None) -> dict:
    return validate(edited(changes or {}))


def test_grid_is_the_product_of_units_batch_size_and_dropout_lists():
    configs = grid.expand(base_params(), default_epochs=15)
    assert len(configs) == 3 * 3 * 2
    assert {(c.units, c.batch_size, c.dropout) for c in configs} == {
        (u, b, d) for u in (10, 100, 200) for b in (16, 32, 64) for d in (0.25, 0.5)
    }
    assert all(c.epochs == 15 for c in configs)


def test_grid_accepts_single_values_as_set_by_dvc_exp_run():
    configs = grid.expand(
        base_params({"model.units": 200, "train.batch_size": 32, "train.epochs": 2}), default_epochs=15
    )
    assert [(c.units, c.batch_size, c.epochs) for c in configs] == [(200, 32, 2), (200, 32, 2)]


def test_each_repeat_gets_a_distinct_seed_that_is_stable_and_depends_on_the_configuration():
    a, b = grid.expand(base_params({"model.units": [10, 100], "model.dropout": 0.5, "train.batch_size": 64}), 15)
    seeds = [grid.repeat_seed(42, "har", "lstm", a, r) for r in range(10)]
    assert len(set(seeds)) == 10
    assert seeds == [grid.repeat_seed(42, "har", "lstm", a, r) for r in range(10)]
    assert grid.repeat_seed(42, "har", "lstm", b, 0) != seeds[0]
    assert grid.repeat_seed(43, "har", "lstm", a, 0) != seeds[0]


def test_config_keys_have_no_dots_so_dvc_metrics_show_keeps_them_whole():
    (config,) = grid.expand(base_params({"model.units": 10, "model.dropout": 0.25, "train.batch_size": 16}), 15)
    assert config.key == "u10-b16-d0p25-e15"


# --- one stage run: metrics file and MLflow structure ----------------------------------------------


def test_a_stage_run_writes_each_configurations_statistics_and_mlflow_a_parent_per_configuration_and_a_child_per_repeat(
    ws,
):
    """The run file: per configuration, the statistics of its repeats' accuracies and every repeat's seed;
    MLflow: a parent run per configuration, a child per repeat with its curves; no model unless asked."""
    write_params(ws, TINY_GRID | {"model.units": [2, 3], "train.repeats": 2, "train.epochs": 2})
    run_stage("har", "lstm")
    doc = results(ws, "har-lstm")
    assert doc["synthetic"] is True
    assert set(doc["configs"]) == {"u2-b16-d0p25-e2", "u3-b16-d0p25-e2"}
    for config in doc["configs"].values():
        accs = [r["test_accuracy"] for r in config["repeats"]]
        assert config["n"] == 2 and config["n_failed"] == 0
        assert config["mean"] == pytest.approx(np.mean(accs))
        assert config["std"] == pytest.approx(np.std(accs, ddof=1))
        assert (config["min"], config["max"]) == (min(accs), max(accs))
        assert all(isinstance(r["seed"], int) for r in config["repeats"])
    assert doc["timing"]["mlflow_overhead"] is not None
    # models are not saved by default (train.save_model: false)
    assert not (ws / "mlartifacts").exists() or not any((ws / "mlartifacts").rglob("MLmodel"))

    all_runs = runs(ws, "har")
    assert len(parents(all_runs)) == 2 and len(children(all_runs)) == 4
    parent_ids = {p.info.run_id for p in parents(all_runs)}
    c = client(ws)
    for parent in parents(all_runs):
        assert parent.info.status == "FINISHED"
        assert set(parent.data.params) == {"dataset", "arch", "units", "batch_size", "dropout", "epochs"}
        for key in ("test_accuracy_mean", "test_accuracy_std", "test_accuracy_min", "test_accuracy_max"):
            assert key in parent.data.metrics
        assert parent.data.metrics["n_finished"] == 2 and parent.data.metrics["n_failed"] == 0
    for child in children(all_runs):
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] in parent_ids
        assert set(child.data.params) == {
            "dataset",
            "arch",
            "units",
            "batch_size",
            "dropout",
            "epochs",
            "repeat",
            "seed",
        }
        assert {"test_accuracy", "test_loss", "train_seconds", "loss", "accuracy"} <= set(child.data.metrics)
        assert [m.step for m in c.get_metric_history(child.info.run_id, "loss")] == [1, 2]
        assert child.data.tags["dvc_exp_name"] == "tiny-exp"
        assert child.data.tags["data_digest"] == results(ws, "har-lstm")["data_digest"]
        assert child.data.tags["data_synthetic"] == "true"


def test_with_a_validation_split_every_repeat_logs_validation_curves_and_the_run_file_what_was_held_out(ws):
    """train.validation: whole subjects held out of HAR's training set, a stratified share of IMDB's;
    every repeat logs val_loss and val_accuracy per epoch, the parent their mean, the run file and a
    tag on every run what was held out; a rerun reuses the repeats, their validation curves included."""
    write_params(ws, TINY_GRID | {"train.validation": 0.25, "train.epochs": 2})
    run_stage("har", "lstm")
    run_stage("imdb", "lstm")
    har, imdb = results(ws, "har-lstm"), results(ws, "imdb-lstm")
    assert har["validation"]["share"] == 0.25 and (har["validation"]["n_train"], har["validation"]["n_val"]) == (48, 16)
    assert har["validation"]["held_out"].startswith("subjects ")  # two of the 8 subjects, 8 windows each
    assert imdb["validation"]["held_out"] == "the same share of each class, at random"
    for doc in (har, imdb):
        (config,) = doc["configs"].values()
        assert all(0 <= r["val_accuracy"] <= 1 and len(r["history"]["val_loss"]) == 2 for r in config["repeats"])
        assert all(r["confusion"] is not None for r in config["repeats"])
        assert config["val_mean"] == pytest.approx(np.mean([r["val_accuracy"] for r in config["repeats"]]))
    c, all_runs = client(ws), runs(ws, "har")
    for child in children(all_runs):
        assert [m.step for m in c.get_metric_history(child.info.run_id, "val_accuracy")] == [1, 2]
        assert child.data.tags["validation"].startswith("16 of 64 training windows (25.0%): subjects ")
    (parent,) = parents(all_runs)
    assert parent.data.metrics["val_accuracy_mean"] == pytest.approx(next(iter(har["configs"].values()))["val_mean"])

    run_stage("har", "lstm")
    (config,) = results(ws, "har-lstm")["configs"].values()
    assert all(r["reused"] and len(r["history"]["val_accuracy"]) == 2 for r in config["repeats"])
    write_params(ws, TINY_GRID | {"train.validation": 0.0, "train.epochs": 2})
    run_stage("har", "lstm")
    (config,) = results(ws, "har-lstm")["configs"].values()
    assert not any(r["reused"] for r in config["repeats"]), "trained on other windows: not the same repeats"
    assert [(r["val_accuracy"], sorted(r["history"])) for r in config["repeats"]] == [(None, ["accuracy", "loss"])] * 2


def test_rerunning_a_repeat_from_what_mlflow_recorded_reproduces_its_test_accuracy(ws, capsys):
    write_params(ws, TINY_GRID | {"train.repeats": 1, "train.engine": "fit"})
    run_stage("har", "lstm")
    (config,) = results(ws, "har-lstm")["configs"].values()
    recorded = config["repeats"][0]

    from seqsweep.tools import rerun

    assert rerun.main([recorded["mlflow_run_id"]]) == 0
    assert f"recorded test accuracy {recorded['test_accuracy']}, rerun {recorded['test_accuracy']}" in (
        capsys.readouterr().out
    )


def test_imdb_trains_and_logs_into_its_own_experiment(ws):
    write_params(ws, TINY_GRID | {"train.repeats": 1})
    run_stage("imdb", "lstm")
    assert results(ws, "imdb-lstm")["configs"]["u3-b16-d0p25-e1"]["n"] == 1
    assert len(children(runs(ws, "imdb"))) == 1 and runs(ws, "har") == []


def test_an_unknown_architecture_names_archs_and_the_known_ones_before_any_work(bare_ws, capsys):
    ws = bare_ws
    write_params(ws, TINY_GRID | {"archs.har": ["lstm", "transformer"]})
    with pytest.raises(SystemExit):
        run_stage("har", "transformer")
    err = capsys.readouterr().err
    assert "archs.har" in err and "'transformer'" in err and "cnn1d" in err
    assert not (ws / "mlflow.db").exists() and not (ws / "runs").exists()


# --- reuse: resume and incremental grids ----------------------------------------------------------


def test_a_second_run_reuses_every_finished_repeat_instead_of_training_again(ws):
    write_params(ws, TINY_GRID)
    run_stage("har", "lstm")
    first = results(ws, "har-lstm")
    run_stage("har", "lstm")
    second = results(ws, "har-lstm")
    assert len(children(runs(ws, "har"))) == 2
    (c1,), (c2,) = first["configs"].values(), second["configs"].values()
    assert [r["test_accuracy"] for r in c1["repeats"]] == [r["test_accuracy"] for r in c2["repeats"]]
    assert all(r["reused"] for r in c2["repeats"])


def test_growing_the_grid_trains_only_the_new_configurations(ws):
    write_params(ws, TINY_GRID | {"model.units": [2]})
    run_stage("har", "lstm")
    write_params(ws, TINY_GRID | {"model.units": [2, 3]})
    run_stage("har", "lstm")
    doc = results(ws, "har-lstm")
    assert [r["reused"] for r in doc["configs"]["u2-b16-d0p25-e1"]["repeats"]] == [True, True]
    assert [r["reused"] for r in doc["configs"]["u3-b16-d0p25-e1"]["repeats"]] == [False, False]
    assert len(children(runs(ws, "har"))) == 4 and len(parents(runs(ws, "har"))) == 2


def test_changing_the_data_trains_again(ws):
    write_params(ws, TINY_GRID | {"train.repeats": 1})
    run_stage("har", "lstm")
    write_prepared_har(ws, seed=5)
    run_stage("har", "lstm")
    (config,) = results(ws, "har-lstm")["configs"].values()
    assert config["repeats"][0]["reused"] is False
    assert len(children(runs(ws, "har"))) == 2


def _finished_children(db: Path) -> int:
    return _children_by_status(db).get("FINISHED", 0)


def _epochs_of_running(db: Path) -> int:
    """How many epochs the RUNNING repeats have logged (the most of any)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            (step,) = con.execute(
                "select max(m.step) from metrics m join runs r on r.run_uuid = m.run_uuid "
                "where r.status = 'RUNNING' and m.key = 'loss'"
            ).fetchone()
    except sqlite3.Error:
        return 0
    return step or 0


def _children_by_status(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "select r.status, count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                "where t.key = 'seqsweep_kind' and t.value = 'repeat' group by r.status"
            ).fetchall()
    except sqlite3.Error:
        return {}
    return dict(rows)


@pytest.mark.slow
def test_resume_after_a_kill_reuses_finished_repeats_and_never_counts_the_killed_one(ws):
    # one repeat at a time (fit), so the kill lands between repeats; the fused engine's own kill test is below
    write_params(ws, TINY_GRID | {"train.repeats": 4, "train.epochs": 3, "train.engine": "fit"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqsweep.train", *stage_args("har", "lstm")],
        cwd=ws,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while _finished_children(ws / "mlflow.db") < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = _finished_children(ws / "mlflow.db")
    assert 0 < finished_before < 4, "the kill should land mid-grid"
    assert not (ws / "runs/har-lstm.json").exists()

    # the rerun in a process of its own too, as dvc runs it (this one's Keras may run on another backend)
    subprocess.run([sys.executable, "-m", "seqsweep.train", *stage_args("har", "lstm")], cwd=ws, check=True)
    all_children = children(runs(ws, "har"))
    finished = [r for r in all_children if r.info.status == "FINISHED"]
    assert len(finished) == 4
    assert len({r.data.params["repeat"] for r in finished}) == 4, "no repeat finished twice"
    assert all(r.info.status == "KILLED" for r in all_children if r not in finished)
    (config,) = results(ws, "har-lstm")["configs"].values()
    assert sum(r["reused"] for r in config["repeats"]) == finished_before
    assert config["n"] == 4


@pytest.mark.slow
def test_two_processes_logging_into_the_same_store_at_once_lose_nothing(bare_ws, tmp_path):
    ws = bare_ws  # no store yet: the two processes create it together
    write_params(ws, TINY_GRID | {"train.repeats": 3})
    other = tmp_path / "other"
    other.mkdir()
    write_prepared_har(other)
    write_params(other, TINY_GRID | {"model.units": [2], "train.repeats": 3})
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "seqsweep.train", *stage_args("har", "lstm")],
            cwd=d,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in (ws, other)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    all_runs = runs(ws, "har")
    assert len(parents(all_runs)) == 2
    repeats = children(all_runs)
    assert len(repeats) == 6 and all(r.info.status == "FINISHED" for r in repeats)
    logged = {r.info.run_id for r in repeats}
    for d in (ws, other):
        (config,) = results(d, "har-lstm")["configs"].values()
        assert {r["mlflow_run_id"] for r in config["repeats"]} <= logged


# --- trouble: NaN, invalid params, missing inputs ------------------------------------------------


def _nan_on_calls(monkeypatch, failing_calls: set[int]):
    """Make the HAR lstm builder's model diverge (loss NaN) on the given build calls (0-based): its
    output layer's bias starts as NaN, so whatever trains it sees a NaN loss in the first epoch."""
    import dataclasses

    from seqsweep import models

    original = models.get("har", "lstm")
    calls = {"n": 0}

    def builder(units, dropout, **shape):
        model = original.builder(units, dropout, **shape)
        if calls["n"] in failing_calls:
            bias = model.layers[-1].bias
            bias.assign(np.full(bias.shape, np.nan, dtype="float32"))
        calls["n"] += 1
        return model

    monkeypatch.setitem(models.REGISTRY["har"], "lstm", dataclasses.replace(original, builder=builder))


def test_a_repeat_whose_loss_turns_nan_is_marked_failed_and_the_grid_goes_on(ws, monkeypatch):
    write_params(ws, TINY_GRID | {"model.units": [2, 3], "train.repeats": 2})
    _nan_on_calls(monkeypatch, {0})
    run_stage("har", "lstm")
    doc = results(ws, "har-lstm")
    first, second = doc["configs"]["u2-b16-d0p25-e1"], doc["configs"]["u3-b16-d0p25-e1"]
    assert (first["n"], first["n_failed"]) == (1, 1) and first["std"] is None
    assert first["repeats"][0]["status"] == "FAILED" and "nan" in first["repeats"][0]["reason"].lower()
    assert (second["n"], second["n_failed"]) == (2, 0)
    failed = [r for r in children(runs(ws, "har")) if r.info.status == "FAILED"]
    assert len(failed) == 1 and "nan" in failed[0].data.tags["failure_reason"].lower()
    assert failed[0].data.tags["seqsweep_failure"] == "diverged"

    run_stage("har", "lstm")  # a divergence is a result: reused, not trained again
    again = results(ws, "har-lstm")["configs"]["u2-b16-d0p25-e1"]["repeats"][0]
    assert again["status"] == "FAILED" and again["reused"] and "nan" in again["reason"].lower()
    assert len(children(runs(ws, "har"))) == 4


def test_the_stage_fails_when_a_configuration_has_no_finished_repeat(ws, monkeypatch, capsys):
    write_params(ws, TINY_GRID | {"model.units": [2, 3], "train.repeats": 2})
    _nan_on_calls(monkeypatch, {0, 1})
    with pytest.raises(SystemExit) as exc:
        run_stage("har", "lstm")
    assert exc.value.code == 1
    assert "u2-b16-d0p25-e1" in capsys.readouterr().err
    assert results(ws, "har-lstm")["configs"]["u3-b16-d0p25-e1"]["n"] == 2, "the grid went on"


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.units", [10, 0]),
        ("model.dropout", 1.0),
        ("model.dropout", -0.1),
        ("train.batch_size", 0),
        ("train.repeats", 0),
        ("train.epochs", "many"),
        ("train.validation", 0.6),
    ],
)
def test_invalid_params_stop_the_stage_before_training_and_name_the_key(bare_ws, capsys, key, value):
    ws = bare_ws
    write_params(ws, TINY_GRID | {key: value})
    with pytest.raises(SystemExit):
        run_stage("har", "lstm")
    assert key in capsys.readouterr().err
    assert not (ws / "mlflow.db").exists() and not (ws / "runs").exists()


def test_missing_prepared_arrays_name_the_stage_to_run(ws, capsys):
    write_params(ws, TINY_GRID)
    (ws / "data/prepared/har/X_train.npy").unlink()
    with pytest.raises(SystemExit):
        run_stage("har", "lstm")
    assert "dvc repro prepare-har" in capsys.readouterr().err


# --- where runs are logged ------------------------------------------------------------------------


def test_tracking_uri_resolves_against_the_repo_root_even_inside_a_dvc_temp_workspace(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    temp_ws = tmp_path / "repo/.dvc/tmp/exps/tmpabc123"
    temp_ws.mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(temp_ws))
    assert tracking.repo_root() == tmp_path / "repo"
    assert tracking.resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    assert tracking.resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_mlflow_tracking_uri_environment_variable_overrides_params(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.resolve_tracking_uri("sqlite:///mlflow.db") == "http://tracking.example:5000"


def test_save_model_logs_each_repeats_model_with_mlflows_keras_flavour(ws):
    import mlflow

    write_params(ws, TINY_GRID | {"train.repeats": 1, "train.save_model": True})
    run_stage("har", "lstm")
    (child,) = children(runs(ws, "har"))
    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    model = mlflow.keras.load_model(f"runs:/{child.info.run_id}/model")
    assert model.output_shape == (None, 6)
    assert (ws / "mlartifacts").is_dir(), "artifacts live beside the store, not in a DVC temp workspace"
    # it requires the libraries that trained it, pinned as installed (runtime.requirements)
    required = mlflow.artifacts.load_text(f"runs:/{child.info.run_id}/model/requirements.txt").split()
    assert set(requirements(child.data.tags["backend"])) <= set(required), required


# --- the fused engine through the stage -------------------------------------------------------------


def run_stage_process(ws: Path, dataset: str = "har", arch: str = "lstm", **popen) -> subprocess.Popen:
    """The stage in its own process, as DVC runs it (the fused engine needs Keras on JAX)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "KERAS_BACKEND")}
    return subprocess.Popen(
        [sys.executable, "-m", "seqsweep.train", *stage_args(dataset, arch)], cwd=ws, env=env, **popen
    )


@pytest.mark.slow
def test_the_fused_engine_logs_every_repeat_as_its_own_child_run_saying_what_trained_it_and_reruns_it_exactly(ws):
    """Configurations that differ only in dropout train as one program (the dropout axis fused), each
    repeat still logged under its own configuration's parent run."""
    sweep = {"model.units": [2, 3], "model.dropout": [0.25, 0.5], "train.repeats": 2, "train.epochs": 2}
    write_params(ws, TINY_GRID | sweep)  # auto: fused for har lstm on a CPU
    proc = run_stage_process(ws, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "8/8 repeats done, 2 cells of fused on 1 worker" in err, "one program per width"
    doc = results(ws, "har-lstm")
    assert doc["engine"] == "fused" and doc["runtime"].endswith(" jax cpu fused det1")
    all_runs = runs(ws, "har")
    assert len(parents(all_runs)) == 4 and len(children(all_runs)) == 8
    c = client(ws)
    for units in (2, 3):
        both = [doc["configs"][f"u{units}-b16-d{rate}-e2"] for rate in ("0p25", "0p5")]
        seeds = [r["seed"] for config in both for r in config["repeats"]]
        assert len(set(seeds)) == 4
        for rate, config in zip((0.25, 0.5), both, strict=True):
            assert config["n"] == 2
            for rep in config["repeats"]:
                child = c.get_run(rep["mlflow_run_id"])
                assert child.info.status == "FINISHED"
                assert child.data.tags["mlflow.parentRunId"] == config["mlflow_parent_run_id"]
                assert float(child.data.params["dropout"]) == rate
                assert (child.data.tags["engine"], child.data.tags["backend"], child.data.tags["device"]) == (
                    "fused",
                    "jax",
                    "cpu",
                )
                assert child.data.tags["lanes"] == ",".join(map(str, seeds)), "trained beside its width's repeats"
                assert child.data.tags["lane_dropouts"] == "0.25,0.25,0.5,0.5"
                # what the training code in the stage's own process ran with (train.workers: 1)
                assert child.data.tags["deterministic"] == "true"
                assert child.data.tags["xla_flags"] == "--xla_gpu_deterministic_ops=true"
                assert [m.step for m in c.get_metric_history(child.info.run_id, "loss")] == [1, 2]
                assert child.data.metrics["test_accuracy"] == rep["test_accuracy"]

    # and each repeat is reproduced exactly from what MLflow recorded (its lanes, engine and runtime)
    middle = doc["configs"]["u3-b16-d0p5-e2"]["repeats"][1]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "KERAS_BACKEND")}
    done = subprocess.run(
        [sys.executable, "-m", "seqsweep.tools.rerun", middle["mlflow_run_id"]],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "reproduced exactly" in done.stdout


@pytest.mark.slow
def test_the_progress_bar_counts_each_repeats_epochs_as_they_train_not_only_finished_repeats(ws):
    write_params(ws, TINY_GRID | {"train.repeats": 2, "train.epochs": 80})  # auto: fused for lstm on a CPU
    done = run_stage_process(ws, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-3000:]
    shown = re.findall(r"(\d+)/(\d+) \[[^,\]]*[^\]]*?(\d+)/(\d+) repeats done, 1 cells of fused on 1 worker\]", err)
    assert shown and {(int(total), int(repeats)) for _, total, _, repeats in shown} == {(160, 2)}
    # the fused cell's two repeats finish together at the end, yet the bar moved while they trained
    assert any(0 < int(epochs) < 160 and int(finished) == 0 for epochs, _, finished, _ in shown), err[-2000:]
    assert (shown[-1][0], shown[-1][2]) == ("160", "2")


@pytest.mark.slow
def test_a_fused_configuration_stopped_by_sigterm_counts_no_repeat_and_the_rerun_trains_it(ws):
    write_params(
        ws,
        TINY_GRID | {"model.units": [2, 3], "train.repeats": 3, "train.epochs": 30},  # auto: fused here
    )
    proc = run_stage_process(ws, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 300
    db = ws / "mlflow.db"
    while not (_children_by_status(db) == {"FINISHED": 3, "RUNNING": 3} and 1 <= _epochs_of_running(db) < 25):
        assert proc.poll() is None and time.time() < deadline, "the stage ended before it could be stopped"
        time.sleep(0.02)
    # the second configuration's program has trained an epoch or a few and is computing the next ones
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]  # not a crash in XLA's teardown, not a swallowed signal
    assert err.strip().splitlines()[-1].startswith("error: train-har@lstm: interrupted (signal SIGTERM)")
    assert _children_by_status(ws / "mlflow.db") == {"FINISHED": 3, "KILLED": 3}, "marked at once, not left RUNNING"
    interrupted = [r for r in children(runs(ws, "har")) if r.info.status == "KILLED"]
    assert {r.data.tags["seqsweep_failure"] for r in interrupted} == {"interrupted"}

    proc = run_stage_process(ws, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    all_children = children(runs(ws, "har"))
    finished = [r for r in all_children if r.info.status == "FINISHED"]
    assert len(finished) == 6 and len({(r.data.params["units"], r.data.params["repeat"]) for r in finished}) == 6
    assert all(r.info.status == "KILLED" for r in all_children if r not in finished)
    doc = results(ws, "har-lstm")
    assert [r["reused"] for r in doc["configs"]["u2-b16-d0p25-e30"]["repeats"]] == [True] * 3
    assert [r["reused"] for r in doc["configs"]["u3-b16-d0p25-e30"]["repeats"]] == [False] * 3
