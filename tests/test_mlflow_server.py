"""Specification: what the training and report stages log is readable through a real `mlflow server`
over the project's SQLite store, through the same REST endpoints the MLflow UI calls (experiment by
name, run search, metric history, artifact listing and download)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from params_file import TINY_GRID, write_params
from train_fixtures import write_prepared_har, write_prepared_imdb

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


class Rest:
    """The REST endpoints of a running `mlflow server`, called as the UI calls them."""

    def __init__(self, url: str):
        self.base = url

    def raw(self, path: str, params: dict | None = None, body: dict | None = None) -> bytes:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}, method="POST" if body is not None else "GET"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{request.method} {url} -> HTTP {exc.code}: {exc.read()[:500]!r}")

    def get(self, endpoint: str, /, **params) -> dict:
        return json.loads(self.raw(endpoint, params))

    def post(self, path: str, body: dict) -> dict:
        return json.loads(self.raw(path, body=body))


def tags_of(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params_of(run: dict) -> dict:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metrics_of(run: dict) -> dict:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def search(server: Rest, experiment_id: str, filter_string: str = "") -> list[dict]:
    runs, token = [], None
    while True:
        body = {
            "experiment_ids": [experiment_id],
            "filter": filter_string,
            "max_results": 100,
            "run_view_type": "ACTIVE_ONLY",
        }
        if token:
            body["page_token"] = token
        page = server.post("/api/2.0/mlflow/runs/search", body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory, empty_mlflow_db):
    """A workspace trained on a tiny HAR grid (2 units x 2 repeats x 2 epochs) into sqlite:///mlflow.db,
    reported when the report stage exists; IMDB trains one tiny lstm so the report has both datasets."""
    from seqsweep import report, train

    ws = tmp_path_factory.mktemp("mlflow-server")
    saved_cwd, saved_env = os.getcwd(), dict(os.environ)  # the stages set their runtime in this process
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        os.environ.pop(name, None)
    os.chdir(ws)
    try:
        write_prepared_har(ws)
        write_prepared_imdb(ws)
        shutil.copy(empty_mlflow_db, ws / "mlflow.db")
        shutil.copy(REPO / "dvc.yaml", ws / "dvc.yaml")  # the report draws the plots dvc.yaml defines
        shutil.copytree(REPO / ".dvc" / "plots", ws / ".dvc" / "plots")
        write_params(
            ws, TINY_GRID | {"model.units": [3, 4], "train.epochs": 2, "mlflow.tracking_uri": "sqlite:///mlflow.db"}
        )
        for dataset in ("har", "imdb"):
            train.main([dataset, "lstm", f"data/prepared/{dataset}", f"runs/{dataset}-lstm.json"])
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed):
            report.main(["runs", "metrics"])
        (ws / "report.stderr").write_text(printed.getvalue())
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return ws


@pytest.fixture(scope="module")
def server(trained):
    from tracking_server import start_mlflow_server

    srv = start_mlflow_server(f"sqlite:///{trained / 'mlflow.db'}", trained / "server", auth=False)
    try:
        yield Rest(srv.url)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def har(server, trained):
    """The `har` experiment and its runs as the server returns them, with the stage's metrics document."""
    exp = server.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name="har")["experiment"]
    runs = search(server, exp["experiment_id"])
    doc = json.loads((trained / "runs/har-lstm.json").read_text())
    return exp, runs, doc


def test_experiment_is_found_by_name_with_artifacts_under_the_workspace(har, trained):
    exp, _, _ = har
    assert exp["name"] == "har"
    assert exp["lifecycle_stage"] == "active"
    assert exp["artifact_location"] == (trained / "mlartifacts" / "har").as_uri()


def test_the_ui_opens_on_the_runs_table_with_each_configurations_result_and_rank_as_its_description(har, trained):
    """What the UI shows first: the printed link and the experiment's kind open the model-training runs
    table, best first with the result as a column and every run shown; the experiment says how to see
    which configuration wins; each parent run is named by its
    configuration and described by its result and rank; each repeat's name starts with its number."""
    exp, runs, doc = har
    experiment_tags = {t["key"]: t["value"] for t in exp["tags"]}
    assert experiment_tags["mlflow.experimentKind"] == "custom_model_development"
    assert "Which configuration wins?" in experiment_tags["mlflow.note.content"]
    assert "*Group by* `arch`" in experiment_tags["mlflow.note.content"]
    assert "*Show all*, to chart every run" in experiment_tags["mlflow.note.content"]  # not the first 10 only
    view = json.loads(experiment_tags["mlflow.sharedViewState.seqsweep"])  # the view the link opens
    assert (view["orderByKey"], view["orderByAsc"], view["runsHiddenMode"]) == (
        "metrics.`test_accuracy_mean`",
        False,
        "SHOW_ALL",
    )
    assert "metrics.`test_accuracy_mean`" in view["selectedColumns"]
    link = f"http://127.0.0.1:5000/#/experiments/{exp['experiment_id']}/runs?viewStateShareKey=seqsweep&workflowType=machine_learning"
    assert f"report: MLflow runs of har: {link} " in (trained / "report.stderr").read_text()

    by_id = {r["info"]["run_id"]: r for r in runs}
    for config in doc["configs"].values():
        rank = 1 + sum(other["mean"] > config["mean"] for other in doc["configs"].values())  # ties share
        parent = by_id[config["mlflow_parent_run_id"]]
        assert parent["info"]["run_name"] == f"lstm u{config['units']} b16 d0.25 e2"
        note = tags_of(parent)["mlflow.note.content"]
        assert note.startswith(
            f"{100 * config['mean']:.2f} +/- {100 * config['std']:.2f} % test accuracy over 2 repeats (95% CI "
        ), note
        assert f", rank {rank} of 2 in har" in note and note.endswith(" [SYNTHETIC data]"), note
        for repeat in config["repeats"]:
            name = by_id[repeat["mlflow_run_id"]]["info"]["run_name"]
            assert name == f"r{repeat['repeat']} · lstm u{config['units']} b16 d0.25 e2"


def test_runs_form_a_parent_per_configuration_with_a_child_per_repeat(har, server):
    exp, runs, doc = har
    parents = [r for r in runs if tags_of(r).get("seqsweep_kind") == "parent"]
    children = [r for r in runs if tags_of(r).get("seqsweep_kind") == "repeat"]
    assert sorted(r["info"]["run_id"] for r in parents) == sorted(
        c["mlflow_parent_run_id"] for c in doc["configs"].values()
    )
    assert len(children) == 2 * len(parents) == 4
    for cfg in doc["configs"].values():
        parent_id = cfg["mlflow_parent_run_id"]
        # The UI's "show child runs" filter, through the server
        kids = search(server, exp["experiment_id"], f"tags.`mlflow.parentRunId` = '{parent_id}'")
        assert sorted(k["info"]["run_id"] for k in kids) == sorted(r["mlflow_run_id"] for r in cfg["repeats"])
        assert all(tags_of(k)["mlflow.parentRunId"] == parent_id for k in kids)
        assert all(k["info"]["status"] == "FINISHED" for k in kids)


def test_parent_and_child_runs_carry_the_grid_params_and_the_accuracies_the_stage_wrote(har):
    _, runs, doc = har
    by_id = {r["info"]["run_id"]: r for r in runs}
    for cfg in doc["configs"].values():
        parent = by_id[cfg["mlflow_parent_run_id"]]
        p = params_of(parent)
        assert (
            p["dataset"],
            p["arch"],
            int(p["units"]),
            int(p["batch_size"]),
            float(p["dropout"]),
            int(p["epochs"]),
        ) == ("har", "lstm", cfg["units"], cfg["batch_size"], cfg["dropout"], cfg["epochs"])
        m = metrics_of(parent)
        assert m["test_accuracy_mean"] == pytest.approx(cfg["mean"])
        assert m["n_finished"] == cfg["n"] == 2
        assert m["n_failed"] == 0
        for rep in cfg["repeats"]:
            child = by_id[rep["mlflow_run_id"]]
            assert int(params_of(child)["seed"]) == rep["seed"]
            assert int(params_of(child)["repeat"]) == rep["repeat"]
            assert metrics_of(child)["test_accuracy"] == pytest.approx(rep["test_accuracy"])
            assert tags_of(child)["data_synthetic"] == "true"


def test_metric_history_has_one_point_per_epoch_matching_the_learning_curves(har, server):
    _, _, doc = har
    for cfg in doc["configs"].values():
        curves = {rep["repeat"]: rep["history"] for rep in cfg["repeats"]}
        for rep in cfg["repeats"]:
            for metric in ("loss", "accuracy"):
                history = server.get(
                    "/api/2.0/mlflow/metrics/get-history", run_id=rep["mlflow_run_id"], metric_key=metric
                )["metrics"]
                assert [h["step"] for h in history] == [1, 2]
                assert [h["value"] for h in history] == pytest.approx(curves[rep["repeat"]][metric])


def test_summary_run_lists_and_serves_the_comparison_table_and_png_plots_as_the_ui_does(har, server, trained):
    _, runs, _ = har
    summaries = [r for r in runs if tags_of(r).get("seqsweep_kind") == "summary"]
    assert len(summaries) == 1, "one summary run per dataset, reused by a rerun"
    run = summaries[0]
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED"
    assert "SYNTHETIC" in tags_of(run)["mlflow.note.content"]  # the description the UI shows

    listing = server.get("/api/2.0/mlflow/artifacts/list", run_id=run_id)
    assert listing == server.get("/ajax-api/2.0/mlflow/artifacts/list", run_id=run_id)  # the UI's prefix
    files = {f["path"]: f for f in listing["files"]}
    assert {"comparison.md", "comparison.csv", "summary.json", "plots"} <= set(files)
    assert files["plots"]["is_dir"] and not files["comparison.md"]["is_dir"]
    pngs = [
        f["path"]
        for f in server.get("/ajax-api/2.0/mlflow/artifacts/list", run_id=run_id, path="plots")["files"]
        if f["path"].endswith(".png")
    ]
    assert pngs

    # The UI downloads an artifact with /get-artifact?path=...&run_uuid=... (mlflow 3.x web app).
    md = server.raw("/get-artifact", {"path": "comparison.md", "run_uuid": run_id}).decode()
    assert int(files["comparison.md"]["file_size"]) == len(md.encode())
    assert "SYNTHETIC" in md and "lstm" in md
    table = server.raw("/get-artifact", {"path": "comparison.csv", "run_uuid": run_id}).decode().splitlines()
    workspace_table = (trained / "metrics/comparison.csv").read_text().splitlines()
    assert table[0] == workspace_table[0]
    har_rows = [line for line in workspace_table[1:] if line.startswith("har,")]
    assert table[1:] == har_rows and len(har_rows) == 2  # the two HAR configurations, as in the repo
    png = server.raw("/get-artifact", {"path": pngs[0], "run_uuid": run_id})
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int(
        next(
            f
            for f in server.get("/api/2.0/mlflow/artifacts/list", run_id=run_id, path="plots")["files"]
            if f["path"] == pngs[0]
        )["file_size"]
    ) == len(png)

    summary = json.loads(server.raw("/get-artifact", {"path": "summary.json", "run_uuid": run_id}))
    workspace = json.loads((trained / "metrics/summary.json").read_text())
    assert summary["har"] == workspace["har"] and summary["best"]["har"] == workspace["best"]["har"]


def test_every_training_run_lists_its_train_and_test_data_as_mlflow_dataset_inputs(har):
    """What the UI's Dataset column and dataset filter show: the dataset's name and digest, where it
    came from, whether it is synthetic, and which split each run trained and was evaluated on."""
    _, runs, _ = har
    trained_runs = [r for r in runs if tags_of(r).get("seqsweep_kind") in ("parent", "repeat")]
    assert trained_runs
    for run in trained_runs:
        inputs = run["inputs"]["dataset_inputs"]
        by_context = {next(t["value"] for t in i["tags"] if t["key"] == "mlflow.data.context"): i for i in inputs}
        assert set(by_context) == {"training", "evaluation"}
        for split in by_context.values():
            dataset = split["dataset"]
            assert dataset["name"] == "har (SYNTHETIC)" and dataset["source_type"] == "http"  # the Dataset column
            assert json.loads(dataset["source"])["url"].startswith("https://archive.ics.uci.edu/")
            assert json.loads(dataset["profile"])["synthetic"] is True
            assert {"key": "synthetic", "value": "true"} in split["tags"]
        assert by_context["training"]["dataset"]["digest"] != by_context["evaluation"]["dataset"]["digest"]
        assert json.loads(by_context["training"]["dataset"]["profile"])["rows"] == 64


def test_each_experiment_describes_what_its_parents_children_and_summary_runs_hold(har):
    exp, _, _ = har
    note = {t["key"]: t["value"] for t in exp["tags"]}["mlflow.note.content"]
    assert "Parent runs" in note and "Child runs" in note and "summary" in note


def test_runs_of_the_other_dataset_live_in_their_own_experiment(server):
    exp = server.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name="imdb")["experiment"]
    kinds = sorted(tags_of(r).get("seqsweep_kind") for r in search(server, exp["experiment_id"]))
    assert kinds.count("parent") == 2 and kinds.count("repeat") == 4
    assert {p["dataset"] for p in (params_of(r) for r in search(server, exp["experiment_id"]))} == {"imdb"}
