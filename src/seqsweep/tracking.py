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
import warnings
from pathlib import Path

import filelock
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag, ViewType
from mlflow.tracking import MlflowClient

from seqsweep.errors import SeqsweepError
from seqsweep.record import FAILURE_TAG, KEY_TAG, KILLED, KIND_TAG, OWNER_TAG, REASON_TAG
from seqsweep.stopping import stop_deferred

PARENT_RUN_ID_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the description the MLflow UI shows for an experiment or run
# The experiment's kind as MLflow 3's UI names it ("Machine learning"). On its own it does not keep a
# fresh browser off the GenAI views (MLflow 3.17, checked in Chromium): the links' query does that.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# The view the printed links open: an MLflow "shared view" (an experiment tag the UI reads when the
# link names its key; its format as MLflow 3.17's UI reads and writes it, checked in Chromium): the
# runs best first by mean test accuracy, with the result and settings as columns, and every run
# visible, so charts cover all repeats rather than the table's first 10 rows.
VIEW_KEY = "seqsweep"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_STATE = {
    "searchFilter": "",
    "orderByKey": "metrics.`test_accuracy_mean`",
    "orderByAsc": False,
    "startTime": "ALL",
    "lifecycleFilter": "Active",
    "datasetsFilter": [],
    "modelVersionFilter": "All Runs",
    "selectedColumns": [
        "metrics.`test_accuracy_mean`",
        "metrics.`test_accuracy_std`",
        "metrics.`n_finished`",
        "params.`units`",
        "params.`batch_size`",
        "params.`dropout`",
        "attributes.`Dataset`",
    ],
    "runsHiddenMode": "SHOW_ALL",
}
UI_VIEW = f"viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"

EXPERIMENT_NOTE = (
    (  # the UI shows the first line until the description is expanded
        "Which configuration wins: each parent run's description has its mean, 95% interval and rank; "
        "the summary run holds the ranked table and plots (expand for more).\n\n"
    )
    + """\
seqsweep: every architecture of the study on {dataset_upper}, across the hyperparameter grid.

**Which configuration wins?**
- Each parent run's description: its mean test accuracy +/- std over the repeats, the 95% interval and
  its rank. The latest **summary** run holds the ranked table (`comparison.md`: intervals, significance
  against the best) and `plots/` (every repeat per configuration, learning curves, confusion matrix).
- Chart view, *Group by* `arch` (or `units`, `batch_size`, `dropout`) with the parents collapsed: a mean
  line and a min-max band per group over the repeats. Charts show only the table's visible runs, by
  default the first 10 rows: the eye icon at the head of the table, *Show all*, to chart every run.
- Select the repeats (child runs) to compare, *Compare*, *Box plot* of `test_accuracy` by `arch`: the
  spread of every repeat, which a bar chart of means hides.

- **Parent runs** (tag `seqsweep_kind = parent`): one per architecture and configuration (units, batch size,
  dropout, epochs), with `test_accuracy_mean/std/min/max`, `n_finished` and `n_failed` over its repeats.
- **Child runs** (expand a parent; `seqsweep_kind = repeat`): one per repeat, with its seed, per-epoch `loss`
  and `accuracy`, and final `test_accuracy` and `test_loss`.
- **summary** runs (`seqsweep_kind = summary`): the comparison table (`comparison.md`, `.csv`), `summary.json`
  and the plots, one per `dvc repro` of the report stage.

Each run's inputs are the `{dataset}` train split (context `training`) and test split (`evaluation`);
data not from the official archive is labelled SYNTHETIC (tag `data_synthetic`).
"""
)


class StoreError(SeqsweepError):
    """The MLflow store cannot be used, or stopped answering; the message names it and the cause."""


SQLITE_HEADER = b"SQLite format 3\x00"
# MLflow's own client retries (urllib3, exponential backoff): with these, requests wait out about a
# minute of a tracking server being down (sleeps 2+4+8+16+32 s between 6 retries) before failing.
RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def check_sqlite_header(db: Path | None) -> None:
    """Refuse a SQLite store file that is not a database (never let MLflow write into it). An empty
    file is an empty database to SQLite, as a missing one is a new store."""
    if db is None or not db.exists() or db.stat().st_size == 0:
        return
    with open(db, "rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise StoreError(
            f"MLflow store {db} is not an SQLite database (it starts with {header!r}); it was left "
            "untouched: move it aside, or set mlflow.tracking_uri / MLFLOW_TRACKING_URI to another store"
        )


@contextlib.contextmanager
def _few_retries():
    """First contact with a server: fail in seconds, not minutes, when it is not there at all."""
    saved = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = saved


def describe_failure(uri: str, exc: BaseException, first_contact: bool = False) -> str:
    """One line naming the store and the cause of an MLflow failure."""
    code = getattr(exc, "error_code", "")
    text = str(exc)
    if code == "UNAUTHENTICATED":
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        cause = (
            f"it refused the credentials of MLFLOW_TRACKING_USERNAME={user!r}"
            if user
            else "it requires credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    elif code == "PERMISSION_DENIED":
        cause = f"user {os.environ.get('MLFLOW_TRACKING_USERNAME')!r} is not allowed to do this ({text[:200]})"
    elif "Max retries exceeded" in text or "Connection refused" in text or "ConnectionError" in text:
        retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
        cause = (
            "cannot connect to it"
            if first_contact
            else f"it stopped answering (gave up after {retries} retries with backoff, "
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES); finished repeats are kept there: run `dvc repro` again once "
            "it is back"
        )
    else:
        cause = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:400]
    return f"MLflow store {uri}: {cause}"


def is_store_error(exc: BaseException) -> bool:
    """Whether `exc` is a failure of the MLflow store (a server, a database), not of training."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, MlflowException | SQLAlchemyError)


@contextlib.contextmanager
def store_errors(uri: str, first_contact: bool = False):
    """Turn any failure of the MLflow store (a server, a database) into a StoreError naming it."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, SQLAlchemyError) as exc:
        if isinstance(exc, SQLAlchemyError):
            cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise StoreError(f"MLflow store {uri}: {cause}; it was left untouched") from None
        raise StoreError(describe_failure(uri, exc, first_contact)) from None


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
        if tracking_uri.startswith(("http://", "https://")):
            for name, value in RETRIES.items():  # ride out a server restart (the user's settings win)
                os.environ.setdefault(name, value)
        with self._lock, store_errors(tracking_uri, first_contact=True):  # schema creation must not race
            check_sqlite_header(db)
            self.client = MlflowClient(tracking_uri)
            with _few_retries():
                self.client.search_experiments(max_results=1)

    @contextlib.contextmanager
    def writing(self):
        """Hold the store's write lock (a no-op for remote tracking servers) and time the write."""
        started = time.perf_counter()
        try:
            with self._lock, stop_deferred():  # a Ctrl-C lands between writes, never inside one
                yield
        finally:
            self.seconds += time.perf_counter() - started

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name` (a dataset), created with artifacts under <repo>/mlartifacts/<name>
        if new, and described (the note the UI shows) as holding configurations, repeats and summaries."""
        tags = {
            NOTE_TAG: EXPERIMENT_NOTE.format(dataset=name, dataset_upper=name.upper()),
            EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
            VIEW_TAG: json.dumps(VIEW_STATE),
        }
        with self.writing():
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                location = (self.artifact_root / name).as_uri() if sqlite_path(self.uri) else None
                return self.client.create_experiment(name, artifact_location=location, tags=tags)
            for key, value in tags.items():
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id

    def log_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        """Record the data a run used as MLflow dataset inputs (the UI's Dataset column and filter)."""
        with self.writing():
            self.client.log_inputs(run_id, datasets=inputs)

    def find_runs(self, experiment_id: str, filter_string: str) -> list:
        runs, token = [], None
        while True:
            with stop_deferred():
                page = self.client.search_runs(
                    [experiment_id], filter_string, ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
                )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def start_run(
        self,
        experiment_id: str,
        name: str,
        key: str,
        kind: str,
        params: dict,
        tags: dict,
        parent_id: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Create a RUNNING run with its params and tags in one write; returns its id. `owner`: the
        host:pid of the stage process it belongs to (default: this process)."""
        owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        all_tags = {KEY_TAG: key, KIND_TAG: kind, OWNER_TAG: owner, **tags}
        if parent_id:
            all_tags[PARENT_RUN_ID_TAG] = parent_id
        with self.writing():
            run = self.client.create_run(
                experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items() if v is not None}
            )
            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def open_parent(
        self, experiment_id: str, name: str, key: str, params: dict, tags: dict, owner: str | None = None
    ) -> str:
        """The parent run of a configuration: the existing one with this key (set RUNNING again) or a new one."""
        existing = self.find_runs(experiment_id, f"tags.{KEY_TAG} = '{key}' and tags.{KIND_TAG} = 'parent'")
        if existing:
            run_id = min(existing, key=lambda r: r.info.start_time).info.run_id
            with self.writing():
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        return self.start_run(experiment_id, name, key, "parent", params, tags, owner=owner)

    def children(self, experiment_id: str, parent_id: str) -> list:
        return self.find_runs(experiment_id, f"tags.{PARENT_RUN_ID_TAG} = '{parent_id}'")

    def retire_stale(
        self, runs: list, owner: str | None = None, keys: set[str] | None = None, why: str = "", kind: str = KILLED
    ) -> int:
        """Mark KILLED (failure `kind`, default `killed`) the RUNNING runs that nothing will finish: without `owner`,
        those whose stage process is gone (a crash or kill mid-repeat); with `owner` and `keys`, those of
        that stage process with these reuse keys (an earlier attempt of a cell run again, e.g. by Ray
        after its worker died, or the cells of a worker that died: a stage runs each cell once at a time)."""
        if owner is None:
            stale = [r for r in runs if r.info.status == "RUNNING" and not _alive(r.data.tags.get(OWNER_TAG))]
            reason = why or "the stage process ended before the repeat finished"
        else:
            stale = [
                r
                for r in runs
                if r.info.status == "RUNNING"
                and r.data.tags.get(OWNER_TAG) == owner
                and r.data.tags.get(KEY_TAG) in (keys or set())
            ]
            reason = why or "the worker training it stopped before the repeat finished; trained again"
        for run in stale:
            self.finish(run.info.run_id, "KILLED", reason, kind)
        return len(stale)

    def log_metrics(self, run_id: str, values: dict, step: int = 0, tags: dict | None = None) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        with self.writing():
            self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])

    def set_tags(self, run_id: str, tags: dict) -> None:
        with self.writing():
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_model(self, run_id: str, model, requirements: list[str]) -> None:
        """Log a Keras model to the run with MLflow's Keras flavour (only when train.save_model is on),
        with the pip `requirements` that trained it (seqsweep.runtime.requirements)."""
        import mlflow
        import mlflow.keras

        with self.writing():
            mlflow.set_tracking_uri(self.uri)
            with mlflow.start_run(run_id=run_id):
                mlflow.keras.log_model(model, name="model", pip_requirements=requirements)

    def log_dict(self, run_id: str, obj: dict, artifact_file: str) -> None:
        with self.writing():
            self.client.log_dict(run_id, obj, artifact_file)

    def finish(self, run_id: str, status: str = "FINISHED", reason: str | None = None, kind: str | None = None) -> None:
        """Close a run; `reason` and the failure `kind` (seqsweep.record) say why it did not finish."""
        tags = {REASON_TAG: reason, FAILURE_TAG: kind}
        with self.writing():
            if reason or kind:
                self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items() if v])
            self.client.set_terminated(run_id, status)


def dataset_inputs(name: str, source_url: str, synthetic: bool, *, train: tuple, test: tuple) -> list[DatasetInput]:
    """The train split (context `training`) and test split (`evaluation`) of dataset `name` as MLflow
    dataset inputs. `train` and `test` are (X, y, digest); the digest identifies the prepared arrays.
    The source is the download URL; `synthetic` is both an input tag and part of the profile."""
    import mlflow.data
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.entities import Dataset
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for context, (X, y, digest) in (("training", train), ("evaluation", test)):
        with warnings.catch_warnings():
            # MLflow registers its local-file source for both "" and "file" URIs, then warns that a
            # file:// URL "can be interpreted in multiple ways" (the same class twice); only that.
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
            source = HTTPDatasetSource(source_url) if source_url.startswith(("http://", "https://")) else source_url
            label = f"{name} (SYNTHETIC)" if synthetic else name  # what the UI's Dataset column shows
            dataset = mlflow.data.from_numpy(X, targets=y, source=source, name=label, digest=digest)
        entity = dataset._to_mlflow_entity()
        profile = {**json.loads(entity.profile or "{}"), "synthetic": synthetic, "rows": int(len(X))}
        entity = Dataset(
            entity.name, entity.digest, entity.source_type, entity.source, entity.schema, json.dumps(profile)
        )
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag("synthetic", str(synthetic).lower())]
        inputs.append(DatasetInput(entity, tags))
    return inputs


def runs_link(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's runs table of an experiment, in its model-training view (even in a browser
    that never opened MLflow, which would otherwise show the GenAI one), best first (VIEW_STATE)."""
    return f"{base}/#/experiments/{experiment_id}/runs?{UI_VIEW}"


def device_name() -> str:
    """What Keras computes on in this process, for the runs' `device` tag (`cpu`, or e.g.
    `gpu:NVIDIA H100 80GB HBM3` on JAX): the first device Keras's distribution API lists. In a pool
    worker or a Ray task this is the first use of Keras, so it imports Keras as training does."""
    from seqsweep.models import import_keras

    keras = import_keras()

    device = keras.distribution.list_devices()[0].split(":")[0].lower()
    if device != "cpu" and keras.backend.backend() == "jax":
        import jax

        return f"{device}:{jax.devices()[0].device_kind}"
    return device


FINISHED = RunStatus.to_string(RunStatus.FINISHED)
