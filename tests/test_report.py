"""Specification of the report stage: tables, summary, significance, published figures, plot data,
the MLflow summary runs, and what happens with failed repeats and missing inputs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from params_file import DEFAULTS, TINY_GRID, edited, write_params

from seqsweep import models, plots, report, stats
from seqsweep.results import Row

REPO = Path(__file__).resolve().parents[1]
HAR_CLASSES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]


# ---- synthetic training outputs --------------------------------------------------------------------


def _confusion(seed: int) -> list[list[int]]:
    return np.random.default_rng(seed).integers(0, 5, size=(6, 6)).tolist()


def config(units, batch, dropout, epochs, results, *, confusion=True, n_epochs=3, val=None):
    """A configuration with repeats given as accuracies (FINISHED) or ("FAILED", reason), and with a
    validation split their validation accuracies `val`."""
    return dict(
        units=units,
        batch_size=batch,
        dropout=dropout,
        epochs=epochs,
        results=results,
        confusion=confusion,
        n_epochs=n_epochs,
        val=val,
    )


def write_arch(
    root: Path, dataset: str, arch: str, configs: list[dict], *, synthetic=True, classes=None, validation=None
):
    """Write runs/<ds>-<arch>.json as the training stage does."""
    docs = {}
    for c in configs:
        key = f"u{c['units']}-b{c['batch_size']}-d{c['dropout']:g}-e{c['epochs']}".replace(".", "p")
        reps = []
        for r, result in enumerate(c["results"]):
            failed = isinstance(result, tuple)
            rep = {
                "repeat": r,
                "seed": 1000 + r,
                "status": "FAILED" if failed else "FINISHED",
                "test_accuracy": None if failed else result,
                "val_accuracy": None if failed or c["val"] is None else c["val"][r],
                "mlflow_run_id": f"run{r}",
                "reused": False,
                "history": {
                    "loss": [2.0 - 0.1 * e - 0.01 * r for e in range(c["n_epochs"])],
                    "accuracy": [0.5 + 0.1 * e + 0.01 * r for e in range(c["n_epochs"])],
                },
                "confusion": None if failed or not c["confusion"] else _confusion(r),
            }
            if failed:
                rep["reason"] = result[1]
            reps.append(rep)
        finished = [x for x in c["results"] if not isinstance(x, tuple)]
        s = stats.summarise(finished)
        docs[key] = {
            "units": c["units"],
            "batch_size": c["batch_size"],
            "dropout": c["dropout"],
            "epochs": c["epochs"],
            "n": s.n,
            "mean": s.mean,
            "std": s.std,
            "min": s.min,
            "max": s.max,
            "n_failed": len(c["results"]) - len(finished),
            "mlflow_parent_run_id": f"parent-{arch}-{key}",
            "repeats": reps,
        }
    folder = root / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "dataset": dataset,
        "arch": arch,
        "synthetic": synthetic,
        "classes": classes,
        "data_digest": "d",
        "code_digest": "c",
        "runtime": "test",
        "repeats": 3,
        "timing": {},
        "validation": validation,
        "configs": docs,
    }
    (folder / f"{dataset}-{arch}.json").write_text(json.dumps(doc))


SCENARIO_ARCHS = {"archs.har": ["lstm", "cnn1d", "cnn_lstm"], "archs.imdb": ["lstm", "lstm_dropout"]}


def write_scenario(root: Path, *, synthetic=True):
    """HAR: cnn_lstm best (3 repeats), lstm with a failed repeat, cnn1d with one repeat, a cnn_lstm
    configuration whose repeats all failed; IMDB: lstm and lstm_dropout (the archs params list)."""
    har = dict(synthetic=synthetic, classes=HAR_CLASSES)
    write_arch(
        root,
        "har",
        "lstm",
        [
            config(100, 64, 0.5, 15, [0.90, 0.91, 0.92]),
            config(10, 64, 0.5, 15, [0.80, 0.81, ("FAILED", "loss became nan at epoch 3")]),
        ],
        **har,
    )
    write_arch(root, "har", "cnn1d", [config(100, 64, 0.5, 15, [0.85])], **har)
    write_arch(
        root,
        "har",
        "cnn_lstm",
        [
            config(100, 64, 0.5, 25, [0.93, 0.94, 0.95]),
            config(
                10, 64, 0.25, 25, [("FAILED", "loss became nan at epoch 1"), ("FAILED", "loss became nan at epoch 2")]
            ),
        ],
        **har,
    )
    write_arch(root, "imdb", "lstm", [config(100, 64, 0.25, 3, [0.85, 0.86], n_epochs=2)], synthetic=synthetic)
    write_arch(root, "imdb", "lstm_dropout", [config(100, 64, 0.25, 3, [0.84, 0.83], n_epochs=2)], synthetic=synthetic)
    write_params(root, SCENARIO_ARCHS | {"mlflow.tracking_uri": "sqlite:///mlflow.db"}, base=DEFAULTS)
    copy_plot_definitions(root)


def copy_plot_definitions(root: Path) -> None:
    """dvc.yaml (its `plots`) and the Vega-Lite templates, as every DVC workspace has them."""
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots", dirs_exist_ok=True)


def run_report() -> None:
    """The stage as dvc.yaml runs it, in the current directory."""
    report.main(["runs", "metrics"])


def _isolate(mp: pytest.MonkeyPatch, root: Path) -> None:
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        mp.delenv(var, raising=False)
    mp.setenv("DVC_EXP_NAME", "exp-under-test")
    mp.chdir(root)


@pytest.fixture(scope="module")
def reported(tmp_path_factory, empty_mlflow_db):
    """A workspace with the scenario's training outputs, reported twice (a rerun must reuse the runs)."""
    root = tmp_path_factory.mktemp("reported")
    write_scenario(root)
    shutil.copy(empty_mlflow_db, root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, root)
        run_report()
        run_report()
    return root


def read_csv(root: Path) -> list[dict]:
    with open(root / "metrics" / "comparison.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def rows_of(root: Path, dataset: str) -> list[dict]:
    return [r for r in read_csv(root) if r["dataset"] == dataset]


# ---- tables ------------------------------------------------------------------------------------------


def test_table_ranks_each_dataset_best_first_in_percent_with_three_decimals(reported):
    har = rows_of(reported, "har")
    assert [(r["rank"], r["arch"], r["units"]) for r in har] == [
        ("1", "cnn_lstm", "100"),
        ("2", "lstm", "100"),
        ("3", "cnn1d", "100"),
        ("4", "lstm", "10"),
        ("5", "cnn_lstm", "10"),
    ]
    best = har[0]
    assert best["accuracy"] == "94.000% (+/-1.000)"
    assert [best[k] for k in ("mean_pct", "std_pct", "min_pct", "max_pct")] == ["94.000", "1.000", "93.000", "95.000"]
    assert best["data"] == "SYNTHETIC" and best["mlflow_parent_run_id"] == "parent-cnn_lstm-u100-b64-d0p5-e25"
    assert [r["rank"] for r in rows_of(reported, "imdb")] == ["1", "2"]


def test_failed_repeats_are_counted_and_a_single_repeat_has_no_std(reported):
    har = {(r["arch"], r["units"]): r for r in rows_of(reported, "har")}
    with_failure = har[("lstm", "10")]
    assert (with_failure["n"], with_failure["n_failed"], with_failure["mean_pct"]) == ("2", "1", "80.500")
    single = har[("cnn1d", "100")]
    assert (single["n"], single["std_pct"], single["accuracy"]) == ("1", "n/a", "85.000% (+/-n/a)")
    assert single["vs_best"] == stats.UNTESTABLE and single["p_holm"] == ""
    md = (reported / "metrics" / "comparison.md").read_text()
    assert "| 3 | cnn1d | 100 | 64 | 0.5 | 15 | 1 | 0 | 85.000% (+/-n/a) |" in md
    assert "lstm u10 b64 d0.5 e15 repeat 2: FAILED — loss became nan at epoch 3" in md


def test_a_configuration_without_finished_repeats_is_listed_last_without_a_mean(reported):
    last = rows_of(reported, "har")[-1]
    assert (last["arch"], last["units"], last["n"], last["n_failed"]) == ("cnn_lstm", "10", "0", "2")
    assert last["mean_pct"] == "n/a" and last["accuracy"] == "n/a (no finished repeat)"


def test_significance_against_the_best_uses_welch_and_holm_as_the_header_says(reported):
    har = {(r["arch"], r["units"]): r for r in rows_of(reported, "har")}
    best = [0.93, 0.94, 0.95]
    p_lstm = stats.welch_p([0.90, 0.91, 0.92], best)
    p_small = stats.welch_p([0.80, 0.81], best)
    assert float(har[("lstm", "100")]["p_welch"]) == pytest.approx(p_lstm, rel=1e-5)
    assert [float(har[k]["p_holm"]) for k in (("lstm", "100"), ("lstm", "10"))] == pytest.approx(
        stats.holm([p_lstm, p_small]), rel=1e-5
    )
    assert har[("cnn_lstm", "100")]["vs_best"] == "best"
    md = (reported / "metrics" / "comparison.md").read_text()
    assert "Welch's two-sided t-test" in md and "Holm–Bonferroni correction" in md and "(m = 2)" in md
    assert "| vs best (Welch, Holm, alpha=0.05) |" in md


def test_synthetic_results_are_labelled_in_the_title_the_csv_and_the_summary(reported):
    md = (reported / "metrics" / "comparison.md").read_text()
    assert md.splitlines()[0] == "# seqsweep comparison — SYNTHETIC data"
    assert "## HAR — SYNTHETIC" in md
    assert {r["data"] for r in read_csv(reported)} == {"SYNTHETIC"}
    summary = json.loads((reported / "metrics" / "summary.json").read_text())
    assert summary["data"] == "SYNTHETIC"


def test_official_results_are_not_labelled_synthetic(tmp_path, monkeypatch):
    write_scenario(tmp_path, synthetic=False)
    monkeypatch.chdir(tmp_path)
    archs = {"har": SCENARIO_ARCHS["archs.har"], "imdb": SCENARIO_ARCHS["archs.imdb"]}
    reports = [report.build_dataset(ds, Path("runs"), archs[ds], 0.05, report.load_reference()) for ds in archs]
    assert "SYNTHETIC" not in report.markdown(reports)
    assert "SYNTHETIC" not in report.csv_text(reports)
    assert report.metrics_doc(reports)["data"] == "official"


def test_without_a_validation_split_the_report_says_choosing_on_test_is_optimistic_and_how_to_stop(reported):
    md = (reported / "metrics" / "comparison.md").read_text()
    assert md.count("so its figure is optimistic") == 2  # once per dataset
    assert "`dvc exp run -S train.validation=0.2`" in md
    assert {r["selected_on"] for r in read_csv(reported)} == {"test"}
    assert json.loads((reported / "metrics" / "summary.json").read_text())["selected_on"] == "test"


def test_with_a_validation_split_configurations_are_ranked_and_chosen_on_validation_never_on_test(
    tmp_path, monkeypatch
):
    """u100 has the best test accuracy but the worse validation accuracy: chosen on validation, u10
    wins, and the table reports both configurations' test accuracy beside it."""
    held_out = {"share": 0.2, "held_out": "subjects 5, 11, 27", "n_train": 5880, "n_val": 1472, "digest": "x"}
    write_arch(
        tmp_path,
        "har",
        "lstm",
        [
            config(100, 64, 0.5, 15, [0.95, 0.96, 0.94], val=[0.80, 0.81, 0.82]),
            config(10, 64, 0.5, 15, [0.90, 0.91, 0.92], val=[0.88, 0.89, 0.90]),
        ],
        classes=HAR_CLASSES,
        validation=held_out,
    )
    monkeypatch.chdir(tmp_path)
    (har,) = [report.build_dataset("har", Path("runs"), ["lstm"], 0.05, report.load_reference())]
    assert [(r.rank, r.units) for r in har.rows] == [(1, 10), (2, 100)]
    assert har.best.units == 10 and har.rows[1].comparison.verdict == stats.WORSE  # 0.81 vs 0.89 on validation
    md = report.md_section(har)
    assert "Chosen on validation: **lstm u10 b64 d0.5 e15**, validation accuracy 89.000% (+/-1.000); " in md
    assert "test accuracy 91.000% (+/-1.000), n = 3." in md
    assert "1472 training windows held out (20% asked; subjects 5, 11, 27)" in md
    assert "Significance, on validation accuracy" in md and "optimistic" not in md
    assert "| 1 (chosen) | lstm | 10 |" in md and "| 95.000% (+/-1.000) |" in md  # u100's test accuracy
    (best,) = [r for r in report.csv_records(har) if r["rank"] == 1]
    assert (best["selected_on"], best["val_mean_pct"], best["mean_pct"]) == ("validation", "89.000", "91.000")
    summary = report.metrics_doc([har])
    assert summary["selected_on"] == "validation"
    assert summary["har"]["lstm"]["config"] == "u10-b64-d0.5-e15"
    assert summary["har"]["lstm"]["val_accuracy_mean"] == pytest.approx(0.89)


def test_a_har_only_study_reports_har_alone(tmp_path, monkeypatch):
    """archs.imdb: [] leaves IMDB out of the study: no IMDB results are needed, none are reported."""
    write_scenario(tmp_path)
    for path in (tmp_path / "runs").glob("imdb-*.json"):
        path.unlink()
    monkeypatch.chdir(tmp_path)
    params = edited({"archs.har": SCENARIO_ARCHS["archs.har"], "archs.imdb": []})
    (har,) = report.build_reports(Path("runs"), params)
    assert har.dataset == "har"
    assert "## IMDB" not in report.markdown([har]) and "imdb" not in report.metrics_doc([har])
    plots.write_dvc_data(tmp_path / "plots", [har], left_out=("imdb",))  # empty: `dvc plots show` skips them
    assert [json.loads((tmp_path / "plots" / kind / "imdb.json").read_text()) for kind in ("repeats", "curves")] == [
        [],
        [],
    ]


def test_published_figures_sit_beside_rows_of_the_same_setting_and_the_rest_are_listed(reported):
    har = {(r["arch"], r["units"]): r for r in rows_of(reported, "har")}
    assert har[("lstm", "100")]["published"] == "89.72% (+/-1.37), 10 repeats"
    assert har[("cnn_lstm", "100")]["published"] == "90.69% (+/-1.05), 10 repeats"
    assert har[("cnn1d", "100")]["published"] == ""
    imdb = {r["arch"]: r for r in rows_of(reported, "imdb")}
    assert imdb["lstm"]["published"] == "86.79%"  # no Dropout layer: any dropout matches
    assert imdb["lstm_dropout"]["published"] == ""  # the study used dropout 0.2
    md = (reported / "metrics" / "comparison.md").read_text()
    unmatched = md.split("## IMDB")[1].split("Published figures with no matching row")[1]
    assert "lstm_dropout, units 100, batch 64, dropout 0.2, epochs 3: 85.56%" in unmatched
    assert "86.79" not in unmatched
    assert "convlstm, units 64, batch 64, dropout 0.5, epochs 25: 90.80% (+/-0.89)" in md


def test_reference_figures_name_known_architectures_and_match_only_their_setting():
    figures = report.load_reference()
    assert {f["dataset"] for f in figures} == {"har", "imdb"}
    for f in figures:
        assert f["arch"] is None or f["arch"] in models.registry(f["dataset"]), f
        assert 0 < f["mean"] < 100
    row = Row("har", "lstm", "k", 100, 64, 0.5, 15, [], True)
    assert [f["mean"] for f in figures if report.matches(f, row)] == [89.72]
    assert not any(report.matches(f, Row("har", "lstm", "k", 100, 64, 0.5, 25, [], True)) for f in figures)
    stacked = Row("har", "stacked_lstm", "k", 128, 32, 0.5, 30, [], True)
    assert not any(report.matches(f, stacked) for f in figures)  # batch and dropout unknown: never matched


# ---- summary.json ------------------------------------------------------------------------------------


def test_summary_holds_the_best_configuration_per_architecture_and_per_dataset(reported):
    summary = json.loads((reported / "metrics" / "summary.json").read_text())
    best = summary["best"]["har"]
    assert best["arch"] == "cnn_lstm" and best["config"] == "u100-b64-d0.5-e25"
    assert best["test_accuracy_mean"] == pytest.approx(0.94) and best["test_accuracy_std"] == pytest.approx(0.01)
    assert best["n"] == 3
    har = summary["har"]
    assert set(har) == {"lstm", "cnn1d", "cnn_lstm"}
    assert har["lstm"] == {
        "config": "u100-b64-d0.5-e15",
        "test_accuracy_mean": pytest.approx(0.91),
        "test_accuracy_std": pytest.approx(0.01),
        "n": 3,
    }
    assert har["cnn1d"]["test_accuracy_std"] is None and har["cnn1d"]["n"] == 1
    assert summary["best"]["imdb"]["arch"] == "lstm"


def test_summary_holds_only_what_experiments_are_compared_by_whatever_the_grid(reported):
    """dvc exp show gets one column per leaf: accuracy, its spread, n and the configuration's label
    (and what it was chosen on), never digests, run ids, timings or per-repeat lists, and nothing per
    configuration."""

    def leaves(node, prefix=""):
        if isinstance(node, dict):
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    names = leaves(json.loads((reported / "metrics" / "summary.json").read_text()))
    assert {n.rsplit(".", 1)[-1] for n in names} <= {
        "data",
        "selected_on",
        "arch",
        "config",
        "test_accuracy_mean",
        "test_accuracy_std",
        "n",
    }
    n_archs = sum(len(v) for v in SCENARIO_ARCHS.values())
    assert len(names) == 2 + 4 * n_archs + 5 * 2


# ---- plot data -----------------------------------------------------------------------------------------


def test_plot_data_holds_every_finished_repeat_and_the_mean_per_configuration(reported):
    plots_dir = reported / "metrics" / "plots"
    points = json.loads((plots_dir / "repeats" / "har.json").read_text())
    assert len(points) == 3 + 2 + 1 + 3  # finished repeats only; failed ones have no accuracy
    assert sorted(
        p["test_accuracy"] for p in points if p["configuration"] == "cnn_lstm u100 b64 d0.5 e25"
    ) == pytest.approx([93.0, 94.0, 95.0])
    units = json.loads((plots_dir / "units" / "har.json").read_text())
    assert {(u["arch"], u["units"], u["batch_size"], u["dropout"]) for u in units} == {
        ("lstm", 100, 64, 0.5),
        ("lstm", 10, 64, 0.5),
        ("cnn1d", 100, 64, 0.5),
        ("cnn_lstm", 100, 64, 0.5),
        ("cnn_lstm", 10, 64, 0.25),
    }
    assert next(u for u in units if u["units"] == 10 and u["arch"] == "cnn_lstm")["mean"] is None


def test_learning_curves_are_the_mean_over_repeats_with_a_one_std_band(reported):
    curves = json.loads((reported / "metrics" / "plots" / "curves" / "har.json").read_text())
    acc = [c for c in curves if c["arch"] == "cnn_lstm" and c["metric"] == "training accuracy (%)"]
    assert [c["epoch"] for c in acc] == [1, 2, 3]
    first = stats.summarise([50.0, 51.0, 52.0])  # epoch 1 of repeats 0..2 (see write_arch), in percent
    assert acc[0]["mean"] == pytest.approx(first.mean)
    assert (acc[0]["lower"], acc[0]["upper"]) == pytest.approx((first.mean - first.std, first.mean + first.std))
    lstm = [c for c in curves if c["arch"] == "lstm" and c["metric"] == "training loss (cross-entropy)"]
    assert lstm and lstm[0]["configuration"] == "lstm u100 b64 d0.5 e15"  # each arch's best configuration
    single = [c for c in curves if c["arch"] == "cnn1d"]
    assert single and all(c["lower"] is None and c["upper"] is None for c in single)  # n = 1: no band


def test_confusion_matrix_of_the_best_har_configuration_sums_its_repeats_with_activity_names(reported):
    cells = json.loads((reported / "metrics" / "plots" / "confusion" / "har.json").read_text())
    assert len(cells) == 36
    expected = np.sum([_confusion(r) for r in range(3)], axis=0)
    for c in cells:
        assert c["actual"] == HAR_CLASSES[c["actual_index"]] and c["predicted"] == HAR_CLASSES[c["predicted_index"]]
        assert c["count"] == expected[c["actual_index"], c["predicted_index"]]
    assert {c["configuration"] for c in cells} == {"cnn_lstm u100 b64 d0.5 e25"}
    assert not (reported / "metrics" / "plots" / "confusion" / "imdb.json").exists()


# ---- MLflow --------------------------------------------------------------------------------------------


def test_each_dataset_gets_one_summary_run_holding_the_table_and_plots(reported):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{reported / 'mlflow.db'}")
    for dataset in ("har", "imdb"):
        exp = client.get_experiment_by_name(dataset)
        runs = client.search_runs([exp.experiment_id], "tags.seqsweep_kind = 'summary'")
        assert len(runs) == 1, "a rerun over the same results reuses the summary run"
        run = runs[0]
        assert run.info.run_name == "summary" and run.info.status == "FINISHED"
        assert run.data.tags["data_synthetic"] == "true"
        assert run.data.tags["dvc_exp_name"] == "exp-under-test"
        assert run.data.params["data"] == "SYNTHETIC"
        assert "SYNTHETIC" in run.data.tags["mlflow.note.content"]
        assert exp.artifact_location == (reported / "mlartifacts" / dataset).as_uri()
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"comparison.md", "comparison.csv", "summary.json", "plots"} <= names
        pngs = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        figures = {f"plots/{dataset}_{name}.png" for name in ("repeats", "units", "learning_curves")}
        assert figures | ({"plots/har_confusion.png"} if dataset == "har" else set()) == pngs
        local = Path(client.download_artifacts(run.info.run_id, f"plots/{dataset}_repeats.png"))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        table = Path(client.download_artifacts(run.info.run_id, "comparison.csv")).read_text()
        assert {row["dataset"] for row in csv.DictReader(table.splitlines())} == {dataset}
    har = client.search_runs([client.get_experiment_by_name("har").experiment_id], "tags.seqsweep_kind = 'summary'")[0]
    assert har.data.metrics["best_test_accuracy_mean"] == pytest.approx(0.94)
    # the chart view makes a section per metric prefix: the summary run adds none of its own
    assert not [name for name in har.data.metrics if "/" in name]


# ---- bad input -----------------------------------------------------------------------------------------


def test_missing_training_results_name_the_stages_to_run_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    write_scenario(tmp_path)
    (tmp_path / "runs" / "har-lstm.json").unlink()
    (tmp_path / "runs" / "imdb-lstm_dropout.json").unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_report()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "runs/har-lstm.json" in err and "dvc repro train-har@lstm" in err
    assert "train-imdb@lstm_dropout" in err
    assert not (tmp_path / "metrics").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_an_impossible_accuracy_names_the_file_the_configuration_and_the_value(tmp_path, monkeypatch, capsys):
    write_scenario(tmp_path)
    path = tmp_path / "runs" / "har-cnn1d.json"
    doc = json.loads(path.read_text())
    doc["configs"]["u100-b64-d0p5-e15"]["repeats"][0]["test_accuracy"] = 85.0  # a percentage, not a fraction
    path.write_text(json.dumps(doc))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        run_report()
    err = capsys.readouterr().err
    assert "runs/har-cnn1d.json" in err and "u100-b64-d0p5-e15" in err and "test_accuracy = 85.0" in err
    assert not (tmp_path / "metrics" / "summary.json").exists()


# ---- end to end: real training, then `dvc plots show` ------------------------------------------------------


def _prepare_tiny(root: Path) -> None:
    rng = np.random.default_rng(0)
    har = root / "data" / "prepared" / "har"
    imdb = root / "data" / "prepared" / "imdb"
    har.mkdir(parents=True)
    imdb.mkdir(parents=True)
    for split, n in (("train", 48), ("test", 24)):
        y = rng.integers(0, 6, n)
        np.save(har / f"X_{split}.npy", (rng.normal(size=(n, 128, 9)) + y[:, None, None] * 0.5).astype(np.float32))
        np.save(har / f"y_{split}.npy", y)
        y = rng.integers(0, 2, n)
        np.save(imdb / f"X_{split}.npy", rng.integers(1, 100, size=(n, 20)).astype(np.int32))
        np.save(imdb / f"y_{split}.npy", y)
    (har / "meta.json").write_text(json.dumps({"official": False, "classes": HAR_CLASSES}))
    (imdb / "meta.json").write_text(json.dumps({"official": False, "num_words": 100, "maxlen": 20}))


@pytest.mark.slow
def test_report_over_real_training_renders_every_dvc_plot(tmp_path, empty_mlflow_db, monkeypatch):
    from seqsweep import train

    write_params(
        tmp_path,
        TINY_GRID | {"model.units": [4], "model.dropout": 0.5, "mlflow.tracking_uri": "sqlite:///mlflow.db"},
        base=DEFAULTS,
    )
    _prepare_tiny(tmp_path)
    copy_plot_definitions(tmp_path)
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")
    _isolate(monkeypatch, tmp_path)
    for dataset in ("har", "imdb"):
        train.main([dataset, "lstm", f"data/prepared/{dataset}", f"runs/{dataset}-lstm.json"])
    run_report()
    har = rows_of(tmp_path, "har")
    assert [(r["arch"], r["n"]) for r in har] == [("lstm", "2")]

    # a scratch git + DVC repo with the project's dvc.yaml and plot templates over these outputs
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert dvc_yaml.get("plots"), "dvc.yaml has no top-level `plots:`; the report's plots are undeclared"
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--force"], cwd=tmp_path, check=True)
    copy_plot_definitions(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    shown = json.loads(out.stdout)
    assert not shown.get("errors"), shown.get("errors")
    ids = [next(iter(p)) if isinstance(p, dict) else p for p in dvc_yaml["plots"]]
    for plot_id in ids:
        (rendered,) = shown["data"][plot_id]
        spec = json.dumps(rendered["content"])
        assert "<DVC_METRIC" not in spec, f"{plot_id}: template anchor left unfilled"
        assert rendered["content"]["data"]["values"], f"{plot_id}: no data points"


@pytest.mark.slow
def test_mlflow_pngs_are_the_figures_dvc_plots_show_draws(tmp_path, empty_mlflow_db, monkeypatch):
    """One set of specifications: each PNG attached to MLflow is DVC's own filled spec for the same
    plot (`dvc plots show --json`), rendered; only the title adds the SYNTHETIC label."""
    import vl_convert

    from seqsweep import plots

    write_scenario(tmp_path)
    shutil.copy(empty_mlflow_db, tmp_path / "mlflow.db")
    _isolate(monkeypatch, tmp_path)
    monkeypatch.delenv("DVC_EXP_NAME")
    run_report()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--force"], cwd=tmp_path, check=True)
    copy_plot_definitions(tmp_path)  # `dvc init --force` starts .dvc/ afresh
    shown = json.loads(
        subprocess.run(
            [sys.executable, "-m", "dvc", "plots", "show", "--json"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )["data"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("har").experiment_id
    (summary,) = client.search_runs([experiment], "tags.seqsweep_kind = 'summary'")
    for plot_id in ("har_repeats", "har_units", "har_learning_curves", "har_confusion"):
        spec = shown[plot_id][0]["content"]
        spec["title"]["text"] = f"{spec['title']['text']} (SYNTHETIC data)"
        expected = vl_convert.vegalite_to_png(spec, vl_version=plots.VEGA_LITE, scale=plots.PNG_SCALE)
        logged = Path(client.download_artifacts(summary.info.run_id, f"plots/{plot_id}.png")).read_bytes()
        assert logged == expected, f"{plot_id}: the MLflow image differs from what dvc plots show draws"
