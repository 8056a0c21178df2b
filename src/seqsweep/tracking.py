"""MLflow bookkeeping for the grid: one experiment per dataset, a parent run per (architecture,
configuration), a child run per repeat, and lookups that let a rerun reuse finished repeats.

MLflow is the record of what has been trained: a repeat whose child run is FINISHED under the same
reuse key (data, code, settings, seed) is not trained again. Writers of a local SQLite store are
serialised with a lock file beside the database, so parallel `dvc queue` workers lose nothing."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import filelock
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag, ViewType
from mlflow.tracking import MlflowClient

PARENT_RUN_ID_TAG = "mlflow.parentRunId"
KEY_TAG = "seqsweep_key"  # parent: configuration key; child: reuse key of the repeat
KIND_TAG = "seqsweep_kind"  # "parent", "repeat" or "summary"
OWNER_TAG = "seqsweep_owner"  # host:pid of the process that runs a child, to detect killed runs
REASON_TAG = "failure_reason"
NOTE_TAG = "mlflow.note.content"  # the description the MLflow UI shows for an experiment or run

EXPERIMENT_NOTE = """\
seqsweep: every architecture of the study on {dataset_upper}, across the hyperparameter grid.

- **Parent runs** (tag `seqsweep_kind = parent`): one per architecture and configuration (units, batch size,
  dropout, epochs), with `test_accuracy_mean/std/min/max`, `n_finished` and `n_failed` over its repeats.
- **Child runs** (expand a parent; `seqsweep_kind = repeat`): one per repeat, with its seed, per-epoch `loss`
  and `accuracy`, and final `test_accuracy` and `test_loss`.
- **summary** runs (`seqsweep_kind = summary`): the comparison table (`comparison.md`, `.csv`), `summary.json`
  and the plots, one per `dvc repro` of the report stage.

Each run's inputs are the `{dataset}` train split (context `training`) and test split (`evaluation`);
data not from the official archive is labelled SYNTHETIC (tag `data_synthetic`).
"""


def repo_root() -> Path:
    """The repository root, also from inside a DVC experiment's temporary workspace
    (`<root>/.dvc/tmp/exps/...`), so every experiment logs into the same store."""
    here = Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i] == ".dvc" and parts[i + 1] == "tmp" and parts[i + 2] == "exps":
            return Path(*parts[:i])
    return here


def resolve_tracking_uri(configured: str, root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else `configured` with a relative SQLite or file path made
    absolute against the repository root (never against a DVC temp workspace)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = root or repo_root()
    if configured.startswith("sqlite:///"):
        path = configured.removeprefix("sqlite:///")
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{(root / path).resolve()}"
        return configured
    if "://" not in configured:
        return str((root / configured).resolve())
    return configured


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store, else None."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        return Path(path) if path.startswith("/") else None
    return None


def git_commit(root: Path) -> str | None:
    """The commit of the workspace (DVC experiments run on a commit of their own), if any."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _alive(owner: str | None) -> bool:
    """Whether the process that owns a RUNNING run still runs (unknown owners count as alive)."""
    if not owner or ":" not in owner:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class Tracker:
    """Thin layer over MlflowClient holding the store's lock and the run-structure conventions."""

    def __init__(self, tracking_uri: str, root: Path | None = None):
        self.root = root or repo_root()
        self.uri = tracking_uri
        db = sqlite_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            self._lock = filelock.FileLock(str(db) + ".lock", timeout=600)
        else:
            self._lock = contextlib.nullcontext()
        self.artifact_root = self.root / "mlartifacts"
        self.seconds = 0.0  # time spent writing to MLflow (lock waits included), to report the overhead
        with self._lock:  # schema creation and migration must not race
            self.client = MlflowClient(tracking_uri)
            self.client.search_experiments(max_results=1)

    @contextlib.contextmanager
    def writing(self):
        """Hold the store's write lock (a no-op for remote tracking servers) and time the write."""
        started = time.perf_counter()
        try:
            with self._lock:
                yield
        finally:
            self.seconds += time.perf_counter() - started

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name` (a dataset), created with artifacts under <repo>/mlartifacts/<name>
        if new, and described (the note the UI shows) as holding configurations, repeats and summaries."""
        note = EXPERIMENT_NOTE.format(dataset=name, dataset_upper=name.upper())
        with self.writing():
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                location = (self.artifact_root / name).as_uri() if sqlite_path(self.uri) else None
                return self.client.create_experiment(name, artifact_location=location, tags={NOTE_TAG: note})
            if exp.tags.get(NOTE_TAG) != note:
                self.client.set_experiment_tag(exp.experiment_id, NOTE_TAG, note)
            return exp.experiment_id

    def log_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        """Record the data a run used as MLflow dataset inputs (the UI's Dataset column and filter)."""
        with self.writing():
            self.client.log_inputs(run_id, datasets=inputs)

    def find_runs(self, experiment_id: str, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string, ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def start_run(
        self, experiment_id: str, name: str, key: str, kind: str, params: dict, tags: dict, parent_id: str | None = None
    ) -> str:
        """Create a RUNNING run with its params and tags in one write; returns its id."""
        all_tags = {KEY_TAG: key, KIND_TAG: kind, OWNER_TAG: f"{socket.gethostname()}:{os.getpid()}", **tags}
        if parent_id:
            all_tags[PARENT_RUN_ID_TAG] = parent_id
        with self.writing():
            run = self.client.create_run(
                experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items() if v is not None}
            )
            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def open_parent(self, experiment_id: str, name: str, key: str, params: dict, tags: dict) -> str:
        """The parent run of a configuration: the existing one with this key (set RUNNING again) or a new one."""
        existing = self.find_runs(experiment_id, f"tags.{KEY_TAG} = '{key}' and tags.{KIND_TAG} = 'parent'")
        if existing:
            run_id = min(existing, key=lambda r: r.info.start_time).info.run_id
            with self.writing():
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        return self.start_run(experiment_id, name, key, "parent", params, tags)

    def children(self, experiment_id: str, parent_id: str) -> list:
        return self.find_runs(experiment_id, f"tags.{PARENT_RUN_ID_TAG} = '{parent_id}'")

    def retire_stale(self, runs: list) -> int:
        """Mark KILLED the RUNNING children whose process is gone (a crash or kill mid-repeat)."""
        stale = [r for r in runs if r.info.status == "RUNNING" and not _alive(r.data.tags.get(OWNER_TAG))]
        for run in stale:
            with self.writing():
                self.client.set_tag(run.info.run_id, REASON_TAG, "process ended before the repeat finished")
                self.client.set_terminated(run.info.run_id, "KILLED")
        return len(stale)

    def log_metrics(self, run_id: str, values: dict, step: int = 0) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        with self.writing():
            self.client.log_batch(run_id, metrics=metrics)

    def set_tags(self, run_id: str, tags: dict) -> None:
        with self.writing():
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_model(self, run_id: str, model) -> None:
        """Log a Keras model to the run with MLflow's Keras flavour (only when train.save_model is on)."""
        import mlflow
        import mlflow.keras

        with self.writing():
            mlflow.set_tracking_uri(self.uri)
            with mlflow.start_run(run_id=run_id):
                mlflow.keras.log_model(model, name="model")

    def finish(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        with self.writing():
            if reason:
                self.client.set_tag(run_id, REASON_TAG, reason)
            self.client.set_terminated(run_id, status)


def dataset_inputs(name: str, source_url: str, synthetic: bool, *, train: tuple, test: tuple) -> list[DatasetInput]:
    """The train split (context `training`) and test split (`evaluation`) of dataset `name` as MLflow
    dataset inputs. `train` and `test` are (X, y, digest); the digest identifies the prepared arrays.
    The source is the download URL; `synthetic` is both an input tag and part of the profile."""
    import mlflow.data
    from mlflow.entities import Dataset
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for context, (X, y, digest) in (("training", train), ("evaluation", test)):
        entity = mlflow.data.from_numpy(X, targets=y, source=source_url, name=name, digest=digest)._to_mlflow_entity()
        profile = {**json.loads(entity.profile or "{}"), "synthetic": synthetic, "rows": int(len(X))}
        entity = Dataset(
            entity.name, entity.digest, entity.source_type, entity.source, entity.schema, json.dumps(profile)
        )
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag("synthetic", str(synthetic).lower())]
        inputs.append(DatasetInput(entity, tags))
    return inputs


def epoch_logger(tracker: Tracker, run_id: str):
    """A Keras callback logging `loss` and `accuracy` with step = epoch (1-based) after every epoch."""
    import keras

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            tracker.log_metrics(run_id, {k: logs[k] for k in ("loss", "accuracy") if k in logs}, step=epoch + 1)

    return MlflowEpochLogger()


FINISHED = RunStatus.to_string(RunStatus.FINISHED)
