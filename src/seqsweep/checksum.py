"""SHA-256 of a file, read in chunks: the one way the project verifies archives it did not write."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 digest of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest(paths: list[str | os.PathLike], length: int = 16) -> str:
    """One short digest of several files: each file's name and SHA-256, in order (used for the data and
    code digests in every reuse key)."""
    combined = hashlib.sha256()
    for path in paths:
        combined.update(f"{os.path.basename(path)}:{sha256_file(path)}\n".encode())
    return combined.hexdigest()[:length]
