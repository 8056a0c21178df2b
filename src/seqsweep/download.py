"""Fetch a dataset archive (http, https or file:// URL), verify its SHA-256 while streaming, and only then
move it into place, so data/raw never holds a truncated, tampered or half-written archive.

Run by DVC as `python -m seqsweep.download <har|imdb> data/raw/<file>`; reads data.<ds>.url and data.<ds>.sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from seqsweep import __version__
from seqsweep.atomic import atomic_path
from seqsweep.checksum import sha256_file
from seqsweep.errors import ChecksumError, DownloadError, exit_on_error
from seqsweep.params import load_params
from seqsweep.paths import DATASETS

RETRIES = 4  # further attempts after the first one fails with a transient error
TIMEOUT_S = 60.0  # give up on an attempt after this many seconds without data
BACKOFF_S = 2.0  # wait BACKOFF_S * 2**k before retry k (k = 0, 1, ...); tests set it to 0
MAX_BACKOFF_S = 60.0  # cap on one wait, also on a server's Retry-After
CHUNK = 1 << 20

USER_AGENT = f"seqsweep/{__version__} (+python-urllib)"


class _Transient(Exception):
    """An attempt failed in a way that another attempt may fix (network, 5xx, 429, short body)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    """A server's Retry-After in seconds, when given as a number."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def _open(url: str, timeout: float):
    """Open `url` for reading; return (stream, expected length or None). Raise _Transient or DownloadError."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        try:
            stream = open(path, "rb")
        except OSError as exc:
            raise DownloadError(f"{url}: cannot read {path}: {exc.strerror or exc}") from None
        return stream, os.fstat(stream.fileno()).st_size
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r}; use http://, https:// or file://")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        status = f"HTTP {exc.code} {exc.reason}".rstrip()
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"{url}: {status}", _retry_after(exc.headers)) from None
        raise DownloadError(f"{url}: {status} (not retried; check data.<dataset>.url)") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise DownloadError(f"{url}: TLS certificate verification failed: {exc.reason}") from None
        raise _Transient(f"{url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, malformed status lines
        raise _Transient(f"{url}: {type(exc).__name__}: {exc}") from None
    length = response.headers.get("Content-Length")
    try:
        expected = int(length) if length is not None else None
    except ValueError:
        expected = None
    return response, expected


def _attempt(url: str, tmp: Path, timeout: float, desc: str) -> str:
    """Stream `url` into `tmp` once; return the SHA-256 of what arrived. A short body raises _Transient."""
    stream, expected = _open(url, timeout)
    digest = hashlib.sha256()
    received = 0
    bar = tqdm(
        total=expected,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=None,
        leave=False,
    )
    try:
        with stream, open(tmp, "wb") as out:
            while True:
                try:
                    chunk = stream.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # timeout, reset, IncompleteRead
                    reason = f"{type(exc).__name__}: {exc}"
                    raise _Transient(f"{url}: interrupted after {received} bytes: {reason}") from None
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    finally:
        bar.close()
    if expected is not None and received != expected:
        raise _Transient(f"{url}: body has {received} bytes but Content-Length promised {expected} (truncated)")
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    retries: int = RETRIES,
    timeout: float = TIMEOUT_S,
    backoff: float | None = None,
) -> Path:
    """Fetch `url` to `dest` if its SHA-256 is `sha256`; retry transient failures with exponential backoff.

    Raises DownloadError (gave up, or a non-retryable status) or ChecksumError (wrong bytes); either way
    nothing is left at `dest` nor beside it. A `dest` that already has the expected checksum is kept.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    backoff = BACKOFF_S if backoff is None else backoff
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    dest.unlink(missing_ok=True)  # a stale file must not outlive a failed download of different params
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            with atomic_path(dest) as tmp:
                actual = _attempt(url, tmp, timeout, desc=dest.name)
                if actual != sha256:
                    raise ChecksumError(
                        f"{url}: SHA-256 mismatch: expected {sha256} (params), got {actual}; nothing written to {dest}"
                    )
            return dest
        except _Transient as exc:
            if attempt + 1 == attempts:
                raise DownloadError(f"giving up after {attempts} attempts; last error: {exc}") from None
            wait = min(MAX_BACKOFF_S, max(backoff * 2**attempt, exc.retry_after or 0.0))
            print(f"warning: {exc}; retrying in {wait:g} s ({attempt + 1}/{retries})", file=sys.stderr)
            time.sleep(wait)
    raise AssertionError("unreachable")


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    """`python -m seqsweep.download <dataset> <archive>`: fetch data.<dataset>.url to <archive>, verified."""
    parser = argparse.ArgumentParser(prog="python -m seqsweep.download", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("archive", type=Path, help="where to write the verified download (e.g. data/raw/har.zip)")
    args = parser.parse_args(argv)
    params = load_params()["data"][args.dataset]
    dest = download(params["url"], args.archive, params["sha256"])
    print(f"{dest}: {dest.stat().st_size} bytes, SHA-256 {params['sha256']} verified", file=sys.stderr)


if __name__ == "__main__":
    main()
