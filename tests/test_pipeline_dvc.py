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
from conftest import sha256_of
from dvc_project import BIN, make_project, queue_workers, sh
from mlflow.tracking import MlflowClient
from params_file import DEFAULTS, TINY_GRID, write_params

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
PREPARE = ("repro", "prepare-har", "prepare-imdb")  # the data stages, and what they need


@pytest.fixture
def project(tmp_path, server):
    """A fresh git + DVC clone of the project whose data params point at the local HTTP server."""
    return make_project(
        tmp_path / "project",
        TINY_GRID
        | {
            "data.har.url": server.url("har.zip"),
            "data.har.sha256": sha256_of(server.root / "har.zip"),
            "data.imdb.url": server.url("imdb.npz"),
            "data.imdb.sha256": sha256_of(server.root / "imdb.npz"),
            "data.imdb.maxlen": 40,
            "model.units": [2],
            "train.batch_size": [32],
            "train.repeats": 1,
        },
    )


def test_dvc_repro_prepare_fetches_verifies_and_prepares_both_datasets_and_nothing_else(project, server):
    out = sh(project, str(BIN / "dvc"), *PREPARE).stdout
    for stage in ("download@har", "download@imdb", "extract-har", "prepare-har", "prepare-imdb"):
        assert f"'{stage}'" in out
    assert "train-" not in out and not (project / "runs").exists()
    for ds in ("har", "imdb"):
        for name in ("X_train", "y_train", "X_test", "y_test"):
            assert (project / f"data/prepared/{ds}/{name}.npy").is_file()
    assert json.loads((project / "data/prepared/har/meta.json").read_text())["official"] is False
    assert any(path.endswith("har.zip") for path in server.requests)

    started = time.perf_counter()
    again = sh(project, str(BIN / "dvc"), *PREPARE).stdout
    elapsed = time.perf_counter() - started
    assert "Running stage" not in again
    assert elapsed < 15, f"a no-op repro took {elapsed:.1f} s"
    ignored = sh(project, "git", "check-ignore", "data/raw/har.zip", "data/prepared/har").stdout
    assert "data/raw/har.zip" in ignored, "DVC outputs under data/ are git-ignored"


def _prepared_hashes(project: Path) -> dict:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {ds: lock[f"prepare-{ds}"]["outs"][0]["md5"] for ds in ("har", "imdb")}


def test_a_mirror_serving_the_same_bytes_leaves_the_prepared_arrays_unchanged(project, server):
    sh(project, str(BIN / "dvc"), *PREPARE)
    before = _prepared_hashes(project)
    write_params(project, {"data.har.url": server.url("har.zip", route="flaky/1")})  # another URL, same bytes
    out = sh(project, str(BIN / "dvc"), *PREPARE).stdout
    assert "'download@har'" in out
    assert _prepared_hashes(project) == before, "training stages are not invalidated by a mirror"


def _runs(project: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def test_on_the_pool_a_crash_is_not_a_result_and_the_rerun_trains_each_interrupted_repeat_once_as_one_worker_would(
    project, empty_mlflow_db, tmp_path
):
    """`dvc repro` with the default engine (auto, as measured on a CPU: har lstm fused on JAX, cnn1d
    TensorFlow's fit) on the local pool of two workers. A fault at the engine boundary crashes every lstm
    program after its first epoch; the rerun without it trains exactly the crashed repeats, in the pool's
    workers, each lane exactly as one worker in the stage's own process trains it."""
    dvc = str(BIN / "dvc")
    write_params(
        project, {"model.units": [2, 3], "train.repeats": 2, "archs.har": ["lstm", "cnn1d"], "train.workers": 2}
    )
    stages = ("repro", "train-har@lstm", "train-har@cnn1d")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": f"{project / 'src'}{os.pathsep}{REPO / 'tests' / 'faults'}",
        "SEQSWEEP_FAULT": "har:lstm",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    crashed = subprocess.run([dvc, *stages], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert crashed.returncode != 0
    error = [line for line in crashed.stderr.splitlines() if line.startswith("error: train-har@lstm")]
    assert error and "training crashed in lstm u" in error[0], crashed.stderr[-3000:]
    assert "RuntimeError: injected fault: the device was lost after the first epoch" in error[0]
    lstm = [r for r in _runs(project, "har") if r.data.params.get("arch") == "lstm"]
    killed = [r for r in lstm if r.data.tags.get("seqsweep_kind") == "repeat"]
    assert killed and all(r.info.status == "KILLED" for r in killed)
    # the cell that crashed says so; a cell stopped in flight because of it was killed by the stage
    assert "crashed" in {r.data.tags["seqsweep_failure"] for r in killed} <= {"crashed", "killed"}
    assert all("injected fault" in r.data.tags["failure_reason"] for r in killed)

    rerun = sh(project, dvc, *stages)  # the cause fixed: no fault
    assert "of fused on 2 workers" in rerun.stderr and "of fit on 2 workers" in rerun.stderr, rerun.stderr[-3000:]
    repeats = [r for r in _runs(project, "har") if r.data.tags["seqsweep_kind"] == "repeat"]
    finished = [r for r in repeats if r.info.status == "FINISHED"]
    for arch in ("lstm", "cnn1d"):
        mine = [r for r in finished if r.data.params["arch"] == arch]
        trained = sorted((r.data.params["units"], r.data.params["repeat"]) for r in mine)
        assert trained == [(u, r) for u in ("2", "3") for r in ("0", "1")], f"{arch}: each repeat once"
        doc = json.loads((project / f"runs/har-{arch}.json").read_text())
        assert [c["n"] for c in doc["configs"].values()] == [2, 2]
        logged = [r["mlflow_run_id"] for c in doc["configs"].values() for r in c["repeats"]]
        assert sorted(logged) == sorted(r.info.run_id for r in mine)
    assert {r.data.tags["engine"] for r in repeats if r.data.params["arch"] == "lstm"} == {"fused"}
    # what the training code in the pool's workers ran with: auto's choice, deterministic, one core each
    flags = "--xla_gpu_deterministic_ops=true --xla_cpu_multi_thread_eigen=false"
    seen = {
        (r.data.params["arch"], r.data.tags["engine"], r.data.tags["backend"], r.data.tags["deterministic"])
        + (r.data.tags["xla_flags"],)
        for r in finished
    }
    assert seen == {("lstm", "fused", "jax", "true", flags), ("cnn1d", "fit", "tensorflow", "true", flags)}
    assert len({r.data.tags["worker"] for r in finished}) >= 2, "trained in the pool's worker processes"
    # each repeat told the store its epochs as it trained (what the stage's progress bar reads)
    assert {r.data.tags["epochs_done"] for r in finished} == {"1"}

    # a fused lane is the same repeat wherever it trains: the lstm stage on one worker, in its own process
    alone = tmp_path / "one-worker"
    shutil.copytree(project / "data/prepared/har", alone / "data/prepared/har")
    shutil.copy(empty_mlflow_db, alone / "mlflow.db")
    write_params(alone, {"train.workers": 1}, base=yaml.safe_load((project / "params.yaml").read_text()))
    one = subprocess.run(
        [sys.executable, "-m", "seqsweep.train", "har", "lstm", "data/prepared/har", "runs/har-lstm.json"],
        cwd=alone,
        env={**{k: v for k, v in env.items() if k != "SEQSWEEP_FAULT"}, "PYTHONPATH": str(project / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0 and "of fused on 1 worker" in one.stderr, one.stderr[-3000:]
    assert _repeats(alone / "runs/har-lstm.json") == _repeats(project / "runs/har-lstm.json")


def _repeats(run_file: Path) -> list[tuple]:
    """(config, repeat, seed, status, accuracy) of every repeat in a run file, in order."""
    doc = json.loads(run_file.read_text())
    return [
        (key, r["repeat"], r["seed"], r["status"], r["test_accuracy"])
        for key, config in doc["configs"].items()
        for r in config["repeats"]
    ]


def test_a_training_stage_exists_for_exactly_the_architectures_params_lists(project):
    stages = sh(project, str(BIN / "dvc"), "stage", "list", "--name-only").stdout.split()
    assert [s for s in stages if s.startswith("train-")] == ["train-har@lstm", "train-imdb@lstm"]
    write_params(project, {"archs.har": ["cnn1d", "lstm"]})
    stages = sh(project, str(BIN / "dvc"), "stage", "list", "--name-only").stdout.split()
    assert [s for s in stages if s.startswith("train-har")] == ["train-har@cnn1d", "train-har@lstm"]
    # a HAR-only study: no IMDB training stage, and `dvc repro report` neither downloads nor prepares IMDB
    write_params(project, {"archs.har": ["lstm"], "archs.imdb": []})
    stages = sh(project, str(BIN / "dvc"), "stage", "list", "--name-only").stdout.split()
    assert [s for s in stages if s.startswith("train-")] == ["train-har@lstm"]
    upstream = sh(project, str(BIN / "dvc"), "dag", "--md", "report").stdout
    assert "train-har@lstm" in upstream and "imdb" not in upstream


TOY_BUILDER = """

@architecture(epochs=1)
def toy_dense(units: int, dropout: float, *, timesteps: int = TIMESTEPS, channels: int = CHANNELS,
              n_classes: int = N_CLASSES) -> keras.Model:
    \"\"\"Flatten -> Dense(units, relu) -> Dropout -> Dense(softmax): a newcomer's toy.\"\"\"
    return keras.Sequential(
        [
            keras.Input(shape=(timesteps, channels), name="window"),
            layers.Flatten(name="flatten"),
            layers.Dense(units, activation="relu", name="dense"),
            layers.Dropout(dropout, name="dropout"),
            layers.Dense(n_classes, activation="softmax", name="activity"),
        ],
        name="har_toy_dense",
    )
"""


def test_a_new_architecture_is_one_builder_named_once_in_params_and_dvc_repro_trains_it(project):
    """As the README tells a newcomer: write the builder in models/har.py under @architecture, list
    its name in archs.har; `dvc repro` then has a stage for it, trains it and reports it."""
    with open(project / "src/seqsweep/models/har.py", "a") as fh:
        fh.write(TOY_BUILDER)
    write_params(project, {"archs.har": ["toy_dense"], "archs.imdb": []})
    env_bin = str(BIN / "dvc")
    sh(project, env_bin, "repro", "report")
    doc = json.loads((project / "runs/har-toy_dense.json").read_text())
    (config,) = doc["configs"].values()
    assert config["n"] == 1 and config["epochs"] == 1
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert set(summary["har"]) == {"toy_dense"} and summary["best"]["har"]["arch"] == "toy_dense"


def test_the_users_loop_repro_then_experiments_and_queued_sweeps_compared_by_dvc_exp_show_in_one_store(project):
    """`dvc repro`, then `dvc exp run -S model.units=...`, `dvc exp show`, and a queued sweep run two at a
    time: every experiment logs into the one MLflow store at the repo root, named after the experiment.
    (A HAR-only study, `archs.imdb: []`, to keep it short: IMDB's stages are the same code.)"""
    dvc = str(BIN / "dvc")
    write_params(project, {"archs.imdb": []})
    repro = sh(project, dvc, "repro")
    assert "plan: 1 of 1 repeat to train in 1 stage; no time estimate yet: 1 program shape not calibrated" in (
        repro.stderr
    )
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline")

    # Before the next experiment: the plan of a grown grid shows what MLflow holds and estimates the rest.
    planned = sh(project, sys.executable, "-m", "seqsweep.plan", "-S", "model.units=[2,4]", "--json")
    (stage,) = json.loads(planned.stdout)["stages"]
    assert (stage["name"], stage["configurations"], stage["held"], stage["left"]) == ("train-har@lstm", 2, 1, 1)
    assert stage["seconds"] > 0 and stage["peak_bytes"] > 0 and "calibrating 1 program shape" in planned.stderr
    exp = sh(project, dvc, "exp", "run", "-n", "wide", "-S", "model.units=4")
    line = next(line for line in exp.stderr.splitlines() if line.startswith("plan: "))
    assert line.startswith("plan: 1 of 1 repeat to train in 1 stage, about "), "the stage reads the calibration"
    wide = [r for r in _runs(project, "har") if r.data.tags.get("dvc_exp_name") == "wide"]
    assert {r.data.params["units"] for r in wide if r.data.tags.get("seqsweep_kind") == "repeat"} == {"4"}

    shown = sh(project, dvc, "exp", "show", "--only-changed", "--no-pager", "--md").stdout
    header = shown.splitlines()[0]
    assert "model.units" in header and "har.lstm.test_accuracy_mean" in header
    assert "seconds" not in header and "digest" not in header and "run_id" not in header
    rows = {line.split("|")[1].strip(): line for line in shown.splitlines()[2:] if line.startswith("|")}
    assert any("workspace" in name for name in rows) and any("wide" in name for name in rows)
    wide_row = next(line for name, line in rows.items() if "wide" in name)
    assert "4" in [cell.strip() for cell in wide_row.split("|")], "model.units of the experiment"

    table = json.loads(sh(project, dvc, "exp", "show", "--json").stdout)
    columns = {m for rev in _all_revs(table) for m in _metric_names(rev)}
    assert columns and all(not any(w in c for w in ("seconds", "digest", "run_id", "overhead")) for c in columns)

    diff = json.loads(sh(project, dvc, "metrics", "diff", "HEAD", "wide", "--json").stdout)
    changed = {name for file in diff.values() for name in file}
    assert any("test_accuracy" in name for name in changed)
    assert not any("seconds" in name or "timing" in name for name in changed)
    shown_metrics = sh(project, dvc, "metrics", "show").stdout
    assert "test_accuracy" in shown_metrics

    sh(project, dvc, "exp", "run", "--queue", "-S", "model.units=5,6", "train-har@lstm")
    with queue_workers(project, jobs=2):
        deadline = time.time() + 420
        while time.time() < deadline:
            status = sh(project, dvc, "queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(10)  # each `dvc queue status` is a dvc process: CPU the queued runs need
    assert "Failed" not in status, status
    repeats = [r for r in _runs(project, "har") if r.data.tags.get("seqsweep_kind") == "repeat"]
    assert sorted({r.data.params["units"] for r in repeats}) == ["2", "4", "5", "6"]
    assert all(r.info.status == "FINISHED" for r in repeats)
    assert len(repeats) == 4, "one repeat per width: nothing trained twice"
    assert not list((project / ".dvc/tmp").rglob("mlflow.db")), "nothing logged inside a temp workspace"


def _all_revs(table: list) -> list:
    revs = []
    for entry in table:
        revs.append(entry)
        for exp in entry.get("experiments") or []:
            revs += [run for run in exp.get("revs", [])]
    return revs


def _metric_names(rev: dict) -> list[str]:
    def leaves(node, prefix=""):
        if isinstance(node, dict):
            return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    data = (rev.get("data") or {}).get("metrics") or {}
    return [name for file in data.values() for name in leaves(file.get("data", {}))]


def test_the_default_grid_keeps_dvc_exp_show_under_60_metric_columns():
    """Metric columns grow with the architectures, never with the grid."""
    from seqsweep import report
    from seqsweep.results import DatasetReport, Row

    def leaves(node):
        return sum(leaves(v) for v in node.values()) if isinstance(node, dict) else 1

    reports = []
    for ds, archs in DEFAULTS["archs"].items():
        rows = [
            Row(
                ds,
                arch,
                f"u{u}-b{b}-d{d}",
                u,
                b,
                d,
                15,
                [{"repeat": r, "status": "FINISHED", "test_accuracy": 0.5 + 0.01 * r} for r in range(10)],
                True,
            )
            for arch in archs
            for u in DEFAULTS["model"]["units"]
            for b in DEFAULTS["train"]["batch_size"]
            for d in DEFAULTS["model"]["dropout"]
        ]
        reports.append(DatasetReport(ds, rows, 0.05, True, None, archs, rows[0], []))
    assert len(reports[0].rows) == 5 * 18
    assert leaves(report.metrics_doc(reports)) <= 60


# ---- dvc.yaml is the map -----------------------------------------------------------------------------


def _imported_files(module: str) -> set[str]:
    """The seqsweep source files that `python -m <module>` runs: its imports, followed transitively,
    including those made inside functions (package __init__ files that only name the package aside)."""
    import ast

    def file_of(name: str) -> Path | None:
        path = REPO / "src" / Path(*name.split("."))
        return next((p for p in (path / "__init__.py", path.with_suffix(".py")) if p.is_file()), None)

    todo, seen = [module], {}
    while todo:
        name = todo.pop()
        path = file_of(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("seqsweep")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("seqsweep"):
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return {str(p.relative_to(REPO)) for p in seen.values()} - {"src/seqsweep/__init__.py"}


def test_every_stage_declares_each_source_file_it_runs_as_a_dependency():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        module = body["cmd"].split()[2]
        deps = set(body["deps"])
        needed = _imported_files(module)
        if module == "seqsweep.train":  # imported by name: the dataset's builders and the engines
            needed |= {
                f"src/seqsweep/models/{name.removeprefix('train-')}.py",
                "src/seqsweep/engines/fit.py",
                "src/seqsweep/engines/fused.py",
            }
        assert needed <= deps, f"{name}: runs {sorted(needed - deps)} without declaring them"
        assert {d for d in deps if d.endswith(".py")} <= needed, f"{name}: declares code it does not run"


def test_each_prepare_stage_declares_exactly_the_params_it_reads():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "params" not in stages["prepare-har"], "official is decided by content, not by data.har.sha256"
    assert stages["prepare-imdb"]["params"] == ["data.imdb.sha256", "data.imdb.num_words", "data.imdb.maxlen"]
