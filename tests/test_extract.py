"""Specification of the extract stage: both UCI archive layouts, junk skipped, unsafe or corrupt archives
refused with nothing written, and the files the prepare stage reads checked."""

from __future__ import annotations

import io
import random
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from seqsweep import download, extract
from seqsweep.errors import ArchiveError
from seqsweep.extract import DATASET_DIR, NESTED_ZIP, extract_har, required_files

MIB = 1 << 20


# ------------------------------------------------------------------------------------------ helpers


def valid_members() -> dict[str, bytes]:
    """The smallest member set that passes the layout check (contents are placeholders)."""
    members = {f"{DATASET_DIR}/": b"", f"{DATASET_DIR}/README.txt": b"synthetic\n"}
    for i, rel in enumerate(required_files()):
        members[rel] = f"{i}\n".encode()
    return members


def zip_bytes(members, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of `members`: a dict name -> bytes, or a list of (name or ZipInfo, bytes)."""
    buf = io.BytesIO()
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in items:
            zf.writestr(name, data)
    return buf.getvalue()


def write_archive(path: Path, members, *, layout: str) -> Path:
    """`members` as the legacy archive (the zip itself) or the current one (nested in an outer zip)."""
    inner = zip_bytes(members)
    if layout == "legacy":
        path.write_bytes(inner)
    else:
        path.write_bytes(zip_bytes({"UCI HAR Dataset.names": b"names\n", NESTED_ZIP: inner}, zipfile.ZIP_STORED))
    return path


def assert_nothing_written(dest: Path) -> None:
    """Neither the output nor a temporary sibling exists."""
    assert not dest.exists()
    if dest.parent.exists():
        assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")] == []


@pytest.fixture
def dest(tmp_path) -> Path:
    return tmp_path / "extracted" / "har"


LAYOUTS = pytest.mark.parametrize("layout", ["current", "legacy"])


# -------------------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("name, layout", [("har.zip", "current"), ("har-legacy.zip", "legacy")])
def test_extracts_sample_archive_in_either_layout_byte_for_byte(sample_archives, dest, name, layout):
    archive = sample_archives[name]
    result = extract_har(archive, dest)
    assert result.layout == layout and result.path == dest
    with zipfile.ZipFile(archive) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read(NESTED_ZIP))) if layout == "current" else outer
        expected = {
            i.filename: inner.read(i) for i in inner.infolist() if not i.is_dir() and not extract.is_junk(i.filename)
        }
    written = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert written == expected
    assert result.files == len(expected) and result.bytes == sum(map(len, expected.values()))
    assert set(required_files()) <= set(written)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["har"]


def test_main_downloads_then_extracts_in_the_workspace(workspace, capsys):
    download.main(["har", "data/raw/har.zip"])
    extract.main(["data/raw/har.zip", "data/extracted/har"])
    root = workspace / "data/extracted/har" / DATASET_DIR
    for split in ("train", "test"):
        assert len(list((root / split / "Inertial Signals").iterdir())) == 9
        assert (root / split / f"y_{split}.txt").stat().st_size > 0
    assert not (workspace / "data/extracted/har/__MACOSX").exists()
    assert "current UCI layout" in capsys.readouterr().err


def test_stages_run_as_dvc_runs_them(workspace):
    download_cmd = ["-m", "seqsweep.download", "har", "data/raw/har.zip"]
    extract_cmd = ["-m", "seqsweep.extract", "data/raw/har.zip", "data/extracted/har"]
    for args in (download_cmd, extract_cmd):
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert (workspace / "data/extracted/har" / DATASET_DIR / "test/y_test.txt").is_file()
    (workspace / "data/raw/har.zip").write_bytes(b"not a zip")
    done = subprocess.run([sys.executable, *extract_cmd], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: data/raw/har.zip: not a readable zip")
    assert not (workspace / "data/extracted/har").exists()


def test_main_without_the_download_exits_1_naming_the_stage_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        extract.main(["data/raw/har.zip", "data/extracted/har"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "data/raw/har.zip" in err and "download@har" in err


@LAYOUTS
def test_macos_junk_is_skipped(tmp_path, dest, layout):
    members = valid_members() | {
        "__MACOSX/": b"",
        f"__MACOSX/{DATASET_DIR}/._README.txt": b"\x00\x05\x16\x07resource fork",
        f"{DATASET_DIR}/train/._y_train.txt": b"\x00\x05\x16\x07resource fork",
    }
    extract_har(write_archive(tmp_path / "har.zip", members, layout=layout), dest)
    names = {p.relative_to(dest).as_posix() for p in dest.rglob("*")}
    assert not any("__MACOSX" in n or "/._" in n for n in names)
    assert f"{DATASET_DIR}/README.txt" in names


def test_a_rerun_replaces_an_earlier_extraction(tmp_path, dest):
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("from another archive")
    extract_har(write_archive(tmp_path / "har.zip", valid_members(), layout="current"), dest)
    assert not (dest / "stale.txt").exists()


# ------------------------------------------------------------------------------- corrupt or unknown


def test_a_file_that_is_not_a_zip_is_refused_naming_it(tmp_path, dest):
    archive = tmp_path / "har.zip"
    archive.write_bytes(b"<html>Service Unavailable</html>")
    with pytest.raises(ArchiveError, match="har.zip: not a readable zip"):
        extract_har(archive, dest)
    assert_nothing_written(dest)


def test_a_failed_extraction_also_removes_an_earlier_one(tmp_path, dest):
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("from another archive")
    archive = tmp_path / "har.zip"
    archive.write_bytes(b"not a zip")
    with pytest.raises(ArchiveError):
        extract_har(archive, dest)
    assert_nothing_written(dest)


@LAYOUTS
def test_a_bad_crc_is_refused_naming_archive_and_member(tmp_path, dest, layout):
    members = valid_members()
    victim = required_files()[3]
    members[victim] = b"ORIGINAL-CONTENT" * 64
    inner = bytearray(zip_bytes(members, zipfile.ZIP_STORED))
    at = bytes(inner).index(b"ORIGINAL-CONTENT")
    inner[at : at + 8] = b"TAMPERED"
    archive = tmp_path / "har.zip"
    if layout == "legacy":
        archive.write_bytes(inner)
    else:
        archive.write_bytes(zip_bytes({NESTED_ZIP: bytes(inner)}, zipfile.ZIP_STORED))
    with pytest.raises(ArchiveError, match="har.zip.*CRC") as err:
        extract_har(archive, dest)
    assert victim in str(err.value) or NESTED_ZIP in str(err.value)
    assert_nothing_written(dest)


def test_a_nested_zip_that_is_not_a_zip_is_refused_naming_both(tmp_path, dest):
    archive = tmp_path / "har.zip"
    archive.write_bytes(zip_bytes({"UCI HAR Dataset.names": b"x", NESTED_ZIP: b"not a zip at all"}))
    with pytest.raises(ArchiveError, match=f"har.zip \\(nested {NESTED_ZIP}\\): not a readable zip"):
        extract_har(archive, dest)
    assert_nothing_written(dest)


def test_an_archive_in_neither_layout_is_refused_listing_its_members(tmp_path, dest):
    archive = tmp_path / "har.zip"
    archive.write_bytes(zip_bytes({"something/else.txt": b"x"}))
    with pytest.raises(ArchiveError, match="not a UCI HAR archive.*something/else.txt"):
        extract_har(archive, dest)
    assert_nothing_written(dest)


@LAYOUTS
def test_a_missing_signal_file_is_refused_listing_it(tmp_path, dest, layout):
    members = valid_members()
    gone = [f"{DATASET_DIR}/test/Inertial Signals/body_gyro_z_test.txt", f"{DATASET_DIR}/train/y_train.txt"]
    for rel in gone:
        del members[rel]
    with pytest.raises(ArchiveError, match="2 expected file") as err:
        extract_har(write_archive(tmp_path / "har.zip", members, layout=layout), dest)
    assert all(rel in str(err.value) for rel in gone)
    assert_nothing_written(dest)


# ---------------------------------------------------------------------------------------- unsafe


UNSAFE_NAMES = [
    "../evil.txt",
    f"{DATASET_DIR}/../../evil.txt",
    "/tmp/evil.txt",
    "C:/evil.txt",
    "..\\evil.txt",
    "\\evil.txt",
]


@LAYOUTS
@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_traversal_and_absolute_members_are_refused_naming_them(tmp_path, dest, layout, name):
    members = list(valid_members().items()) + [(zipfile.ZipInfo(name), b"pwned")]
    with pytest.raises(ArchiveError, match="unsafe member path") as err:
        extract_har(write_archive(tmp_path / "har.zip", members, layout=layout), dest)
    assert repr(name) in str(err.value)
    assert_nothing_written(dest)
    assert not list(tmp_path.rglob("evil.txt"))


@LAYOUTS
def test_a_symlink_member_is_refused_naming_it(tmp_path, dest, layout):
    link = zipfile.ZipInfo(f"{DATASET_DIR}/train/y_train.txt")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    members = [(n, d) for n, d in valid_members().items() if n != link.filename] + [(link, b"/etc/passwd")]
    with pytest.raises(ArchiveError, match="symbolic link") as err:
        extract_har(write_archive(tmp_path / "har.zip", members, layout=layout), dest)
    assert link.filename in str(err.value)
    assert_nothing_written(dest)


@LAYOUTS
def test_a_highly_compressed_member_is_refused_as_a_bomb(tmp_path, dest, layout):
    members = valid_members() | {f"{DATASET_DIR}/zeros.txt": bytes(8 * MIB)}  # ~1000:1 with deflate
    with pytest.raises(ArchiveError, match="zeros.txt.*compression ratio.*zip bomb"):
        extract_har(write_archive(tmp_path / "har.zip", members, layout=layout), dest)
    assert_nothing_written(dest)


@LAYOUTS
def test_an_archive_declaring_more_than_the_size_cap_is_refused(tmp_path, dest, layout, monkeypatch):
    monkeypatch.setattr(extract, "MAX_TOTAL_BYTES", 4 * MIB)  # the real cap is 2 GiB; same rule, cheaper
    members = valid_members() | {f"{DATASET_DIR}/part{i}.bin": random.Random(i).randbytes(2 * MIB) for i in range(3)}
    with pytest.raises(ArchiveError, match="declare .* bytes uncompressed, over the limit of 4194304"):
        extract_har(write_archive(tmp_path / "har.zip", members, layout=layout), dest)
    assert_nothing_written(dest)


def test_the_size_cap_is_two_gib_and_the_real_archive_fits():
    assert extract.MAX_TOTAL_BYTES == 2 * 1024**3 > 283_000_000


@LAYOUTS
def test_an_archive_with_too_many_members_is_refused(tmp_path, dest, layout, monkeypatch):
    monkeypatch.setattr(extract, "MAX_MEMBERS", len(valid_members()) + 2)
    members = valid_members() | {f"{DATASET_DIR}/many/{i}.txt": b"" for i in range(5)}
    with pytest.raises(ArchiveError, match="members exceed the limit"):
        extract_har(write_archive(tmp_path / "har.zip", members, layout=layout), dest)
    assert_nothing_written(dest)


def lie_about_size(data: bytes, name: str, declared: int) -> bytes:
    """Rewrite the uncompressed size that the local and central headers give for member `name`."""
    out = bytearray(data)
    encoded = name.encode()
    for sig, size_at, name_len_at, name_at in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        pos = out.find(sig)
        while pos >= 0:
            (n,) = struct.unpack_from("<H", out, pos + name_len_at)
            if out[pos + name_at : pos + name_at + n] == encoded:
                struct.pack_into("<I", out, pos + size_at, declared)
            pos = out.find(sig, pos + 1)
    return bytes(out)


@LAYOUTS
def test_a_member_whose_header_understates_its_size_is_refused(tmp_path, dest, layout):
    # 4 MiB of zeros declared as 40 KiB: the declared ratio looks harmless, the data is a bomb.
    bomb = f"{DATASET_DIR}/train/Inertial Signals/body_acc_x_train.txt"
    members = valid_members() | {bomb: bytes(4 * MIB)}
    inner = lie_about_size(zip_bytes(members), bomb, 40 * 1024)
    with zipfile.ZipFile(io.BytesIO(inner)) as zf:
        assert zf.getinfo(bomb).file_size == 40 * 1024  # the lie is what a reader sees
    archive = tmp_path / "har.zip"
    if layout == "legacy":
        archive.write_bytes(inner)
    else:
        archive.write_bytes(zip_bytes({NESTED_ZIP: inner}, zipfile.ZIP_STORED))
    with pytest.raises(ArchiveError, match="body_acc_x_train.txt.*(CRC|declared)"):
        extract_har(archive, dest)
    assert_nothing_written(dest)


@LAYOUTS
def test_a_duplicated_member_is_refused(tmp_path, dest, layout):
    rel = required_files()[0]
    members = list(valid_members().items()) + [(rel, b"second copy")]
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = write_archive(tmp_path / "har.zip", members, layout=layout)
    with pytest.raises(ArchiveError, match="appears more than once"):
        extract_har(archive, dest)
    assert_nothing_written(dest)
