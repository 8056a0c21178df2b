"""Stage prepare-har: parse UCI HAR's raw Inertial Signals into windows X (N, 128, 9) float32 and labels y.

Run by DVC as `python -m seqsweep.prepare_har data/extracted/har data/prepared/har`; reads the
unpacked archive (output of extract-har), writes data/prepared/har/{X_train,y_train,X_test,y_test}.npy,
subject_{train,test}.npy (the volunteer of each window, for a validation split by subject) and
meta.json atomically. The data is official when every file read is the published one (by SHA-256,
published_data.yaml), whatever archive or mirror it came from.

- X: float32, channels in the tutorials' order (CHANNELS): total_acc x,y,z, body_acc x,y,z,
  body_gyro x,y,z. Each value is the float32 of the double nearest the decimal text, i.e. exactly
  what the reference loader (`pandas.read_csv(sep=r"\\s+")` per file, numpy dstack) gives once cast.
- y: int64 (what `read_csv(...).values - 1` gives in the tutorials), activity id - 1, so 0..5; the
  names are `meta.json["classes"]`, from activity_labels.txt.

Every file is read once, as bytes, and validated while parsed: 128 values per line, the same number
of rows in the 9 signal files as in y_<split>.txt, labels 1..6, finite numbers. Any violation raises
DataFormatError naming the file and the 1-based line. The files come in fixed 16-character fields
(`  2.8858451e-001 -2.0294171e-002`); those are decoded by vectorised numpy straight into the output
(about 2x faster than pandas); any other whitespace-separated layout goes through numpy's C parser.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

import numpy as np

from seqsweep.atomic import save_arrays_dir
from seqsweep.checksum import content_record
from seqsweep.errors import DataFormatError, MissingInputError, exit_on_error
from seqsweep.params import load_params
from seqsweep.paths import PREPARED_ARRAYS, SUBJECT_ARRAYS

DATASET = "har"
ROOT_NAME = "UCI HAR Dataset"
SPLITS = ("train", "test")
CHANNELS = tuple(f"{signal}_{axis}" for signal in ("total_acc", "body_acc", "body_gyro") for axis in "xyz")
WINDOW = 128  # samples per window: 2.56 s at 50 Hz
N_CLASSES = 6
MAX_SUBJECT = 30  # the published data set's volunteers are numbered 1..30
X_DTYPE = np.float32
Y_DTYPE = np.int64

_FIELD = 16  # bytes per value in the published fixed-width layout
_CHUNK_ROWS = 512  # rows decoded at a time by the fixed-width path (keeps temporaries small)
_NUMBER = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_EXP10 = 22  # 10**k is an exact double for k <= 22, so one multiply/divide rounds correctly
_MUL = np.array([1.0] * _MAX_EXP10 + [10.0**k for k in range(_MAX_EXP10 + 1)])  # index: exponent + 22
_DIV = np.array([10.0**k for k in range(_MAX_EXP10, 0, -1)] + [1.0] * (_MAX_EXP10 + 1))


def signal_path(root: Path, split: str, channel: str) -> Path:
    """`<root>/<split>/Inertial Signals/<channel>_<split>.txt`."""
    return root / split / "Inertial Signals" / f"{channel}_{split}.txt"


def _read(path: Path) -> bytes:
    """A file's bytes; a missing file is a DataFormatError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: missing (the extracted dataset is incomplete)") from None
    except IsADirectoryError:
        raise DataFormatError(f"{path}: is a directory, expected a text file") from None


def _lines(data: bytes) -> list[bytes]:
    """The lines of `data` (a final newline does not start another line)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _line_count(data: bytes) -> int:
    """Number of lines, counting a last line without its newline."""
    return data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)


def _decode_fixed_width(data: bytes, out: np.ndarray) -> bool:
    """Decode the published layout (each line: WINDOW fields `[ -]d.ddddddde[+-]ddd`, then `\\n`) into `out`.

    Returns False, having possibly written part of `out`, when the bytes are not exactly that layout;
    the caller then uses the general parser. Exact: the 8-digit mantissa is an integer and 10**k
    (|k| <= 22) an exact double, so one multiply or divide gives the correctly rounded double, which
    is what strtod (and so pandas and numpy) give before the cast to float32.
    """
    width = WINDOW * _FIELD
    stride = width + 1
    n = len(data) // stride
    if n == 0 or len(data) != n * stride or out.shape != (n, WINDOW):
        return False
    rows = np.frombuffer(data, dtype=np.uint8).reshape(n, stride)
    zero, ten = np.uint8(48), np.uint8(10)
    for r0 in range(0, n, _CHUNK_ROWS):
        chunk = rows[r0 : r0 + _CHUNK_ROWS]
        if not (chunk[:, width] == ten).all():
            return False
        f = chunk[:, :width].reshape(len(chunk), WINDOW, _FIELD)
        sign = f[..., 1]
        exp_sign = f[..., 12]
        if not (
            (f[..., 0] == 32).all()  # ' '
            and ((sign == 32) | (sign == 45)).all()  # ' ' or '-'
            and (f[..., 3] == 46).all()  # '.'
            and ((f[..., 11] | 32) == 101).all()  # 'e' or 'E'
            and ((exp_sign == 43) | (exp_sign == 45)).all()  # '+' or '-'
        ):
            return False
        mantissa = np.zeros(f.shape[:2], dtype=np.int32)
        for k in (2, 4, 5, 6, 7, 8, 9, 10):
            digit = f[..., k] - zero
            if not (digit <= 9).all():
                return False
            mantissa *= 10
            mantissa += digit
        exponent = np.zeros(f.shape[:2], dtype=np.int32)
        for k in (13, 14, 15):
            digit = f[..., k] - zero
            if not (digit <= 9).all():
                return False
            exponent *= 10
            exponent += digit
        np.negative(exponent, out=exponent, where=exp_sign == 45)
        exponent -= 7 - _MAX_EXP10  # value = mantissa * 10**(exponent - 7); index into _MUL/_DIV
        if exponent.min() < 0 or exponent.max() > 2 * _MAX_EXP10:
            return False
        value = mantissa * _MUL[exponent] / _DIV[exponent]
        np.negative(value, out=value, where=sign == 45)  # on the float, so that -0.0 stays -0.0
        out[r0 : r0 + len(chunk)] = value
    return True


def _diagnose(data: bytes, path: Path) -> DataFormatError:
    """The first defect in a signal file that the fast parsers refused, as an error naming its line."""
    lines = _lines(data)
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if len(tokens) != WINDOW:
            return DataFormatError(f"{path}: line {number}: {len(tokens)} values, expected {WINDOW}")
        for column, token in enumerate(tokens, start=1):
            if not _NUMBER.fullmatch(token):
                shown = token.decode("ascii", "backslashreplace")
                return DataFormatError(f"{path}: line {number}: value {column} {shown!r} is not a number")
    return DataFormatError(f"{path}: could not be parsed as whitespace-separated numbers")


def _check_rows(path: Path, found: int, expected_rows: int | None, reference: Path | None) -> None:
    """A DataFormatError unless `path` has rows, and `expected_rows` of them when that is given."""
    if found == 0:
        raise DataFormatError(f"{path}: line 1: file is empty, expected {expected_rows or 'some'} rows")
    if expected_rows is not None and found != expected_rows:
        where = f"line {expected_rows + 1}: extra row" if found > expected_rows else f"line {found + 1}: missing row"
        raise DataFormatError(
            f"{path}: {where}; has {found} rows but {reference.name if reference else 'the labels'} has {expected_rows}"
        )


def read_signal(
    path: str | Path, out: np.ndarray | None = None, *, expected_rows: int | None = None, reference: Path | None = None
) -> np.ndarray:
    """Parse one Inertial Signals file (one window of WINDOW values per line) into float32 `out` (n, WINDOW).

    `out` may be a strided view such as X[:, :, channel]; when None, an array is allocated. With
    `expected_rows`, a different number of rows is a DataFormatError naming the file (and `reference`,
    the file that set the count) and the first missing or extra line.
    """
    path = Path(path)
    data = _read(path)
    rows = _line_count(data)
    _check_rows(path, rows, expected_rows, reference)
    if out is None:
        out = np.empty((rows, WINDOW), dtype=X_DTYPE)
    if _decode_fixed_width(data, out):
        return out
    try:
        values = np.loadtxt(io.BytesIO(data), dtype=X_DTYPE, comments=None, ndmin=2, encoding="latin-1")
    except ValueError:
        raise _diagnose(data, path) from None
    if values.shape != (rows, WINDOW):
        # loadtxt skips blank lines and accepts any consistent width; name the offending line.
        raise _diagnose(data, path)
    finite = np.isfinite(values)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise DataFormatError(f"{path}: line {row + 1}: value {column + 1} is not a finite float32")
    out[...] = values
    return out


def _read_ids(path: Path, what: str, hi: int) -> np.ndarray:
    """One positive integer id (1..hi) per line, as int64; a bad line is a DataFormatError naming it."""
    data = _read(path)
    lines = _lines(data)
    if not lines:
        raise DataFormatError(f"{path}: line 1: file is empty, expected one {what} (1..{hi}) per line")
    ids = np.empty(len(lines), dtype=np.int64)
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        token = tokens[0] if len(tokens) == 1 else None
        if token is None or not token.isdigit() or not 1 <= int(token) <= hi:
            shown = line.decode("ascii", "backslashreplace").strip()
            raise DataFormatError(f"{path}: line {number}: {shown!r} is not {what} in 1..{hi}")
        ids[number - 1] = int(token)
    return ids


def read_labels(path: str | Path) -> np.ndarray:
    """Parse y_<split>.txt (one activity id 1..N_CLASSES per line) into Y_DTYPE labels 0..N_CLASSES-1."""
    return (_read_ids(Path(path), "an activity id", N_CLASSES) - 1).astype(Y_DTYPE)


def read_subjects(path: str | Path, expected_rows: int, labels: Path) -> np.ndarray:
    """Parse subject_<split>.txt (the volunteer, 1..MAX_SUBJECT, of each window) into int64 ids, one
    per window of `labels`: what the validation split keeps together (seqsweep.prepared)."""
    path = Path(path)
    subjects = _read_ids(path, "a subject id", MAX_SUBJECT)
    _check_rows(path, len(subjects), expected_rows, labels)
    return subjects


def read_classes(path: str | Path) -> list[str]:
    """Parse activity_labels.txt (`<id> <NAME>` for ids 1..N_CLASSES in order) into the class names."""
    path = Path(path)
    lines = [line for line in _lines(_read(path)) if line.strip()]
    names = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if len(tokens) != 2 or tokens[0] != str(number).encode():
            shown = line.decode("ascii", "backslashreplace").strip()
            raise DataFormatError(f"{path}: line {number}: {shown!r}, expected '{number} <ACTIVITY_NAME>'")
        names.append(tokens[1].decode("ascii", "backslashreplace"))
    if len(names) != N_CLASSES:
        raise DataFormatError(f"{path}: {len(names)} activities, expected {N_CLASSES}")
    return names


def load_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """X (N, WINDOW, 9) float32 in CHANNELS order and y (N,) labels 0..5 for `split` of `root` ('UCI HAR Dataset')."""
    root = Path(root)
    labels_path = root / split / f"y_{split}.txt"
    y = read_labels(labels_path)
    X = np.empty((len(y), WINDOW, len(CHANNELS)), dtype=X_DTYPE)
    for c, channel in enumerate(CHANNELS):
        read_signal(signal_path(root, split, channel), X[:, :, c], expected_rows=len(y), reference=labels_path)
    return X, y


def files_read(root: Path) -> dict[str, Path]:
    """Every file `prepare` reads, by its path under `UCI HAR Dataset/` (as published_data.yaml names them)."""
    names = ["activity_labels.txt"]
    for split in SPLITS:
        names += [f"{split}/y_{split}.txt", f"{split}/subject_{split}.txt"]
        names += [str(signal_path(Path(), split, channel)) for channel in CHANNELS]
    return {name: root / name for name in names}


def prepare(source: str | Path, dest: str | Path) -> dict:
    """Parse the extracted dataset under `source` and write the arrays and meta.json to `dest` atomically.

    `official` is decided by content: every file read must have its published SHA-256 (meta.json
    records each file's digest and whether it is the published one), so the same files from another
    archive or mirror are official too, and yield the very same prepared folder."""
    source, dest = Path(source), Path(dest)
    root = source / ROOT_NAME
    if not root.is_dir():
        what = f"{source} does not contain '{ROOT_NAME}/'" if source.is_dir() else f"{source} is missing"
        raise MissingInputError(f"{what}; run `dvc repro extract-har` first")
    classes = read_classes(root / "activity_labels.txt")
    arrays = {}
    for split in SPLITS:
        arrays[f"X_{split}"], arrays[f"y_{split}"] = load_split(root, split)
        subjects, labels = root / split / f"subject_{split}.txt", root / split / f"y_{split}.txt"
        arrays[f"subject_{split}"] = read_subjects(subjects, len(arrays[f"y_{split}"]), labels)
    files, differing = content_record(DATASET, files_read(root))
    meta = {
        "dataset": DATASET,
        "official": not differing,
        "unofficial_files": differing,
        "files": files,
        "n_train": len(arrays["y_train"]),
        "n_test": len(arrays["y_test"]),
        "subjects": {split: sorted(map(int, set(arrays[f"subject_{split}"]))) for split in SPLITS},
        "shapes": {name: list(arrays[name].shape) for name in PREPARED_ARRAYS},
        "dtypes": {name: arrays[name].dtype.name for name in PREPARED_ARRAYS},
        "channels": list(CHANNELS),
        "classes": classes,
    }
    save_arrays_dir(dest, {name: arrays[name] for name in (*PREPARED_ARRAYS, *SUBJECT_ARRAYS)}, meta)
    return meta


def data_label(meta: dict) -> str:
    """`official`, or why not: the files that differ from the published ones."""
    if meta["official"]:
        return "official"
    first, *others = meta["unofficial_files"]
    if others:
        return f"SYNTHETIC / unofficial: {first} and {len(others)} more files differ from the published ones"
    return f"SYNTHETIC / unofficial: {first} differs from the published file"


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    """`python -m seqsweep.prepare_har <extracted folder> <prepared folder>`."""
    parser = argparse.ArgumentParser(prog="python -m seqsweep.prepare_har", description=__doc__.splitlines()[0])
    parser.add_argument("extracted", type=Path, help="the unpacked archive (e.g. data/extracted/har)")
    parser.add_argument("prepared", type=Path, help="where to write the arrays (e.g. data/prepared/har)")
    args = parser.parse_args(argv)
    load_params()  # every stage validates the whole file before doing any work
    meta = prepare(args.extracted, args.prepared)
    print(
        f"{args.prepared}: {meta['n_train']} train / {meta['n_test']} test windows ({data_label(meta)})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
