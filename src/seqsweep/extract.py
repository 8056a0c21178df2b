"""Unpack the UCI HAR archive safely (no traversal, links or zip bombs; macOS junk skipped) into
data/extracted/har, accepting both the current UCI archive (a zip holding `UCI HAR Dataset.zip`) and the
legacy one (that inner zip itself), and check that the files the prepare stage reads are all there.

Run by DVC as `python -m seqsweep.extract data/raw/har.zip data/extracted/har`.
"""

from __future__ import annotations

import argparse
import lzma
import os
import re
import shutil
import stat
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from seqsweep.atomic import atomic_dir
from seqsweep.errors import ArchiveError, MissingInputError, exit_on_error

DATASET_DIR = "UCI HAR Dataset"
NESTED_ZIP = "UCI HAR Dataset.zip"
SPLITS = ("train", "test")
SIGNALS = tuple(f"{kind}_{axis}" for kind in ("total_acc", "body_acc", "body_gyro") for axis in "xyz")

# Limits against zip bombs. The real archive unpacks to about 283 MB in under 100 members, and its
# text files compress about 4:1; a bomb needs a huge size, many members or an extreme ratio.
MAX_TOTAL_BYTES = 2 * 1024**3  # per archive (declared) and in all (actually written)
MAX_MEMBERS = 10_000
MAX_RATIO = 100  # uncompressed / compressed size, checked for members above RATIO_MIN_BYTES
RATIO_MIN_BYTES = 1 << 20
CHUNK = 1 << 20

_CORRUPT = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, RuntimeError, NotImplementedError)
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Extracted:
    """What extract_har() unpacked: where, from which archive layout, how many files and bytes."""

    path: Path
    layout: str  # "current" (nested zip) or "legacy" (the inner zip itself)
    files: int
    bytes: int


def required_files() -> list[str]:
    """The files (relative to the extraction root) that the prepare stage reads."""
    out = []
    for split in SPLITS:
        out += [f"{DATASET_DIR}/{split}/Inertial Signals/{signal}_{split}.txt" for signal in SIGNALS]
        out.append(f"{DATASET_DIR}/{split}/y_{split}.txt")
    return out


def is_junk(name: str) -> bool:
    """macOS resource-fork junk: anything under `__MACOSX/` or named `._*`."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or any(part.startswith("._") for part in parts)


def _check_member(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse a member that could write outside the target, is a link or special file, or is a bomb."""
    name = info.filename
    parts = name.split("/")
    if not name.strip("/") or name.startswith("/") or "\\" in name or _DRIVE.match(name) or ".." in parts:
        raise ArchiveError(f"{where}: refusing unsafe member path {name!r} (absolute, drive, backslash or '..')")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{where}: refusing member {name!r}: it is a symbolic link")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError(f"{where}: refusing member {name!r}: not a regular file or directory (mode {mode:o})")
    if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ArchiveError(
            f"{where}: refusing member {name!r}: compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 "
            f"exceeds {MAX_RATIO}:1 ({info.file_size} bytes from {info.compress_size}); possible zip bomb"
        )


def _scan(zf: zipfile.ZipFile, where: str) -> list[zipfile.ZipInfo]:
    """Check every member and the archive's declared totals; return the members worth extracting."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"{where}: {len(infos)} members exceed the limit of {MAX_MEMBERS}; possible zip bomb")
    seen: set[str] = set()
    total = 0
    for info in infos:
        _check_member(info, where)
        key = info.filename.rstrip("/")
        if key in seen:
            raise ArchiveError(f"{where}: member {info.filename!r} appears more than once")
        seen.add(key)
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise ArchiveError(
            f"{where}: members declare {total} bytes uncompressed, over the limit of {MAX_TOTAL_BYTES}; "
            "possible zip bomb"
        )
    return [info for info in infos if not is_junk(info.filename)]


class _Budget:
    """Counts bytes actually written across all members, against MAX_TOTAL_BYTES."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, n: int, where: str, name: str) -> None:
        self.used += n
        if self.used > MAX_TOTAL_BYTES:
            raise ArchiveError(
                f"{where}: member {name!r} takes the unpacked total past {MAX_TOTAL_BYTES} bytes; possible zip bomb"
            )


def _extract_members(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], root: Path, where: str, budget: _Budget) -> int:
    """Write `infos` under `root` (in archive order, so a nested zip is read forwards); return files written."""
    files = 0
    base = os.path.realpath(root)
    for info in sorted(infos, key=lambda i: i.header_offset):
        name = info.filename
        target = root.joinpath(*[p for p in name.split("/") if p not in ("", ".")])
        if os.path.commonpath([base, os.path.realpath(target)]) != base:  # belt and braces after _check_member
            raise ArchiveError(f"{where}: refusing member {name!r}: it resolves outside the extraction directory")
        try:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > info.file_size:
                        raise ArchiveError(
                            f"{where}: member {name!r} unpacks to more than its declared {info.file_size} bytes"
                        )
                    budget.take(len(chunk), where, name)
                    out.write(chunk)
        except _CORRUPT as exc:
            raise ArchiveError(f"{where}: corrupt member {name!r}: {exc}") from None
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
            raise ArchiveError(f"{where}: member {name!r} conflicts with another member: {exc}") from None
        if written != info.file_size:
            raise ArchiveError(f"{where}: member {name!r} unpacked to {written} bytes, declared {info.file_size}")
        files += 1
    return files


def _open_zip(source, where: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except _CORRUPT as exc:
        raise ArchiveError(f"{where}: not a readable zip archive: {exc}") from None


def extract_har(archive: str | os.PathLike, dest: str | os.PathLike) -> Extracted:
    """Unpack the HAR `archive` (current or legacy layout) into `dest`, which holds `UCI HAR Dataset/`.

    Raises ArchiveError (corrupt, unsafe, unknown layout, missing files); on any error nothing is
    left at `dest`.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise MissingInputError(f"{archive} not found; run `dvc repro download@har` first")
    if dest.exists():  # a stale extraction must not outlive a failed run on a different archive
        shutil.rmtree(dest)
    budget = _Budget()
    with _open_zip(archive, str(archive)) as outer, atomic_dir(dest) as tmp:
        members = _scan(outer, str(archive))
        names = [info.filename for info in members]
        if any(name.split("/")[0] == DATASET_DIR for name in names):
            layout = "legacy"
            files = _extract_members(outer, members, tmp, str(archive), budget)
        elif NESTED_ZIP in names:
            layout = "current"
            info = outer.getinfo(NESTED_ZIP)
            where = f"{archive} (nested {NESTED_ZIP})"
            try:
                with outer.open(info) as stream, _open_zip(stream, where) as inner:
                    files = _extract_members(inner, _scan(inner, where), tmp, where, budget)
            except _CORRUPT as exc:
                raise ArchiveError(f"{where}: corrupt: {exc}") from None
        else:
            raise ArchiveError(
                f"{archive}: not a UCI HAR archive: expected a nested {NESTED_ZIP!r} (current layout) or a "
                f"{DATASET_DIR!r}/ folder (legacy layout); members: {names[:10]}"
            )
        missing = [rel for rel in required_files() if not (tmp / rel).is_file()]
        if missing:
            raise ArchiveError(
                f"{archive}: unpacked, but {len(missing)} expected file(s) are missing: {', '.join(missing)}"
            )
    return Extracted(dest, layout, files, budget.used)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    """`python -m seqsweep.extract <archive> <folder>`: unpack the UCI HAR archive into <folder>."""
    parser = argparse.ArgumentParser(prog="python -m seqsweep.extract", description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="the verified UCI HAR zip (e.g. data/raw/har.zip)")
    parser.add_argument("folder", type=Path, help="where to unpack it (e.g. data/extracted/har)")
    args = parser.parse_args(argv)
    result = extract_har(args.archive, args.folder)
    print(f"{result.path}: {result.files} files, {result.bytes} bytes ({result.layout} UCI layout)", file=sys.stderr)


if __name__ == "__main__":
    main()
