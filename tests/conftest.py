"""Fixtures shared by the specification tests: synthetic archives in the upstream layouts, a local
HTTP server serving them, and a scratch DVC-style workspace whose params point at that server."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from http_fixture import LocalServer

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
    from seqsweep import sample_data

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
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["har"].update(url=server.url("har.zip"), sha256=sha256_of(server.root / "har.zip"))
    params["data"]["imdb"].update(url=server.url("imdb.npz"), sha256=sha256_of(server.root / "imdb.npz"))
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(ws)
    return ws


def set_param(ws: Path, dotted: str, value) -> None:
    """Edit one key of the workspace's params.yaml, as `dvc exp run -S` would."""
    path = ws / "params.yaml"
    params = yaml.safe_load(path.read_text())
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(autouse=True, scope="session")
def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    yield
