"""Specification of the download stage: verified, atomic, retried on transient failures only."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import sha256_of
from params_file import write_params

from seqsweep import download as dl
from seqsweep.errors import ChecksumError, DownloadError
from seqsweep.paths import RAW_FILENAMES

WRONG_SHA = "0123456789abcdef" * 4


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """Retries back off for real in production; here every wait is recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(dl.time, "sleep", waits.append)
    return waits


@pytest.fixture
def raw(tmp_path) -> Path:
    """An empty output directory (tmp_path itself also holds the server's files)."""
    path = tmp_path / "raw"
    path.mkdir()
    return path


def leftovers(directory: Path) -> list[str]:
    """Every file in `directory` (temporary files included)."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize("dataset", ["har", "imdb"])
def test_main_downloads_each_dataset_over_http_and_verifies_it(workspace, server, dataset, capsys):
    out = workspace / "data/raw" / RAW_FILENAMES[dataset]
    dl.main([dataset, str(out)])
    assert sha256_of(out) == sha256_of(server.root / out.name)
    assert leftovers(out.parent) == [out.name]
    assert "verified" in capsys.readouterr().err


def test_main_accepts_a_file_url(workspace, server):
    write_params(workspace, {"data.har.url": (server.root / "har.zip").resolve().as_uri()})
    dl.main(["har", "data/raw/har.zip"])
    assert sha256_of(workspace / "data/raw/har.zip") == sha256_of(server.root / "har.zip")
    assert server.requests == []


def test_file_url_to_a_missing_file_fails_at_once_naming_it(raw, no_waiting):
    missing = raw / "nowhere.zip"
    with pytest.raises(DownloadError, match="nowhere.zip"):
        dl.download(missing.as_uri(), raw / "out.zip", WRONG_SHA)
    assert no_waiting == []
    assert leftovers(raw) == []


def test_checksum_mismatch_names_both_hashes_and_the_url_and_leaves_no_file(workspace, server, capsys):
    actual = sha256_of(server.root / "har.zip")
    write_params(workspace, {"data.har.sha256": WRONG_SHA})
    with pytest.raises(SystemExit) as exit_:
        dl.main(["har", "data/raw/har.zip"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert WRONG_SHA in err and actual in err and server.url("har.zip") in err
    assert leftovers(workspace / "data/raw") == []


def test_checksum_mismatch_raises_checksum_error_and_is_not_retried(raw, server):
    with pytest.raises(ChecksumError, match=WRONG_SHA):
        dl.download(server.url("imdb.npz"), raw / "imdb.npz", WRONG_SHA)
    assert len(server.requests) == 1
    assert leftovers(raw) == []


def test_checksum_mismatch_removes_a_stale_file_from_earlier_params(raw, server):
    dest = raw / "har.zip"
    dest.write_bytes(b"an archive downloaded for other params")
    with pytest.raises(ChecksumError):
        dl.download(server.url("har.zip"), dest, WRONG_SHA)
    assert leftovers(raw) == []


def test_a_file_that_already_has_the_checksum_is_kept_without_a_request(raw, server):
    dest = raw / "har.zip"
    dest.write_bytes((server.root / "har.zip").read_bytes())
    dl.download(server.url("har.zip"), dest, sha256_of(dest))
    assert server.requests == []


def test_sha256_in_upper_case_is_accepted(raw, server):
    sha = sha256_of(server.root / "har.zip").upper()
    dl.download(server.url("har.zip"), raw / "har.zip", sha)
    assert sha256_of(raw / "har.zip") == sha.lower()


def test_truncated_body_never_passes_and_is_retried_then_fails(raw, server, no_waiting):
    url = server.url("har.zip", route="truncate")
    with pytest.raises(DownloadError, match="truncated") as err:
        dl.download(url, raw / "har.zip", sha256_of(server.root / "har.zip"))
    assert url in str(err.value)
    assert len(server.requests) == dl.RETRIES + 1
    assert leftovers(raw) == []


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_client_errors_fail_at_once_naming_url_and_status(raw, server, no_waiting, status):
    url = server.url("har.zip", route=f"status/{status}")
    with pytest.raises(DownloadError, match=f"HTTP {status}") as err:
        dl.download(url, raw / "har.zip", WRONG_SHA)
    assert url in str(err.value)
    assert len(server.requests) == 1 and no_waiting == []
    assert leftovers(raw) == []


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_and_rate_limits_are_retried_then_fail(raw, server, no_waiting, status):
    url = server.url("har.zip", route=f"status/{status}")
    with pytest.raises(DownloadError, match=f"after {dl.RETRIES + 1} attempts.*HTTP {status}"):
        dl.download(url, raw / "har.zip", WRONG_SHA)
    assert len(server.requests) == dl.RETRIES + 1
    assert leftovers(raw) == []


def test_http_404_through_main_exits_1_with_the_url(workspace, server, capsys):
    url = server.url("har.zip", route="status/404")
    write_params(workspace, {"data.har.url": url})
    with pytest.raises(SystemExit) as exit_:
        dl.main(["har", "data/raw/har.zip"])
    assert exit_.value.code == 1
    assert url in capsys.readouterr().err
    assert len(server.requests) == 1


def test_flaky_server_succeeds_on_the_third_attempt(workspace, server, no_waiting):
    write_params(workspace, {"data.har.url": server.url("har.zip", route="flaky/2")})
    dl.main(["har", "data/raw/har.zip"])
    assert sha256_of(workspace / "data/raw/har.zip") == sha256_of(server.root / "har.zip")
    assert len(server.requests) == 3
    assert leftovers(workspace / "data/raw") == ["har.zip"]


def test_backoff_doubles_between_attempts(raw, server, no_waiting, monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.5)
    with pytest.raises(DownloadError):
        dl.download(server.url("har.zip", route="status/503"), raw / "x", WRONG_SHA, retries=3)
    assert no_waiting == [0.5, 1.0, 2.0]


def test_connection_refused_is_retried_then_fails(raw, no_waiting):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/har.zip"
    with pytest.raises(DownloadError, match="after 3 attempts") as err:
        dl.download(url, raw / "har.zip", WRONG_SHA, retries=2)
    assert url in str(err.value)
    assert len(no_waiting) == 2
    assert leftovers(raw) == []


def test_a_server_that_stops_sending_times_out_and_is_retried(raw, no_waiting):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/har.zip"
        with pytest.raises(DownloadError, match="timed out"):
            dl.download(url, raw / "har.zip", WRONG_SHA, retries=1, timeout=0.2)
    assert len(no_waiting) == 1
    assert leftovers(raw) == []
