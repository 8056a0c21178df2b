"""Fixtures shared by the specification tests: synthetic archives in the upstream layouts, a local
HTTP server serving them, and a scratch DVC-style workspace whose params point at that server."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from http_fixture import LocalServer
from params_file import write_params

REPO = Path(__file__).resolve().parents[1]

# Tiny sizes keep the suite fast; the generator scales to the full dataset sizes too.
HAR_SIZES = dict(n_train=96, n_test=48)
IMDB_SIZES = dict(n_train=300, n_test=200)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def sample_archives(tmp_path_factory) -> dict[str, Path]:
    """Synthetic archives, written once per session: har.zip (current UCI layout), har-legacy.zip
    (the inner zip alone) and imdb.npz (Keras's layout, pickled object arrays)."""
    from seqsweep.tools import sample_data

    root = tmp_path_factory.mktemp("archives")
    sample_data.write_har_archive(root / "har.zip", layout="current", **HAR_SIZES)
    sample_data.write_har_archive(root / "har-legacy.zip", layout="legacy", **HAR_SIZES)
    sample_data.write_imdb_npz(root / "imdb.npz", **IMDB_SIZES)
    return {p.name: p for p in root.iterdir()}


@pytest.fixture
def server(tmp_path, sample_archives):
    """A local HTTP server whose root holds copies of the sample archives (tests may add files)."""
    root = tmp_path / "served"
    root.mkdir()
    for path in sample_archives.values():
        shutil.copy(path, root / path.name)
    srv = LocalServer(root)
    yield srv
    srv.close()


@pytest.fixture
def workspace(tmp_path, server, monkeypatch):
    """A scratch copy of the project's params.yaml, pointed at the local server, as the current
    directory, like the workspace DVC runs a stage in. Returns its path."""
    ws = tmp_path / "ws"
    ws.mkdir()
    write_params(
        ws,
        {
            "data.har.url": server.url("har.zip"),
            "data.har.sha256": sha256_of(server.root / "har.zip"),
            "data.imdb.url": server.url("imdb.npz"),
            "data.imdb.sha256": sha256_of(server.root / "imdb.npz"),
        },
    )
    monkeypatch.chdir(ws)
    return ws


# The slowest files first (measured), the rest after in their usual order: pytest-xdist hands each test
# process a whole file at a time in collection order (pyproject: --dist loadfile --no-loadscope-reorder),
# so the two processes finish together instead of one running the cluster tests while the other idles.
SLOWEST_FIRST = (
    "test_cluster.py",
    "test_pipeline_dvc.py",
    "test_train.py",
    "test_engines.py",
    "test_workers.py",
    "test_models.py",
    "test_real_har.py",
    "test_mlflow_server.py",
    "test_demo.py",
    "test_runtime.py",
    "test_gpu_check.py",
    "test_report.py",
    "test_plan.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store whose schema is created (MLflow's migrations, about 2 s of CPU), once per
    test process; a test copies it to start where a user's second run starts. The end-to-end tests
    (DVC, the demo) still create theirs, as a user's first run does."""
    from seqsweep.tracking import Tracker

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    Tracker(f"sqlite:///{path}", path.parent)
    return path


@pytest.fixture(autouse=True, scope="session")
def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    yield


@pytest.fixture(autouse=True, scope="session")
def _users_cache_of_this_session(tmp_path_factory):
    """The user's cache folder ($XDG_CACHE_HOME: plan calibrations, JAX's compiled programs), one for the
    session, shared by both test processes as by a user's stages, and not the home folder's."""
    base = tmp_path_factory.getbasetemp()
    os.environ["XDG_CACHE_HOME"] = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cache")
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    yield


@pytest.fixture(autouse=True)
def _environment_restored():
    """A stage run in this process sets its runtime (KERAS_BACKEND, XLA_FLAGS...) in os.environ, as it
    does in its own process; restore the environment so later tests start processes as users do."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
