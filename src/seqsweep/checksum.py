"""SHA-256 of a file, read in chunks: the one way the project verifies data it did not write, and what
makes data official (the published content of each file, whatever archive it came in)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

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


PUBLISHED_FILE = Path(__file__).with_name("published_data.yaml")


def published(dataset: str) -> dict[str, str]:
    """The SHA-256 of every file of `dataset` as published (published_data.yaml), by relative path."""
    return yaml.safe_load(PUBLISHED_FILE.read_text())[dataset]


def content_record(dataset: str, files: dict[str, Path]) -> tuple[dict, list[str]]:
    """Per file a prepare stage read (relative path -> file): its SHA-256 and whether it is the published
    one; and the files that make the data unofficial (changed, or not in the published set)."""
    expected = published(dataset)
    record = {}
    for name, path in files.items():
        actual = sha256_file(path)
        record[name] = {"sha256": actual, "published": expected.get(name) == actual}
    differing = [name for name, entry in record.items() if not entry["published"]]
    differing += sorted(set(expected) - set(files))
    return record, differing
