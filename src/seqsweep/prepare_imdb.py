"""Stage prepare-imdb: Keras's imdb.npz -> padded word-id matrices, exactly as the tutorials' Keras calls give.

Run by DVC as `python -m seqsweep.prepare_imdb data/raw/imdb.npz data/prepared/imdb`; reads the verified
download (output of download@imdb) and params data.imdb.{sha256,num_words,maxlen}, writes
data/prepared/imdb/{X_train,y_train,X_test,y_test}.npy and meta.json atomically.

Output equals, element for element and in dtype,
    (x_train, y_train), (x_test, y_test) = keras.datasets.imdb.load_data(num_words=num_words)
    X_train = keras.utils.pad_sequences(x_train, maxlen=maxlen)   # likewise X_test
i.e. train then test shuffled by one np.random.RandomState(113), each review prefixed with start id 1, word
ids + 3, ids >= num_words replaced by OOV id 2, then pre-padded with 0 / pre-truncated to maxlen, int32.
y keeps the dtype Keras returns (the stored labels' dtype: int64 in the published file). It is computed
with vectorised numpy, without importing Keras.

The x members are pickled object arrays, so a tampered file could run code if unpickled blindly. Nothing
here calls np.load(allow_pickle=True): numeric members load with allow_pickle=False, object members with
an unpickler that resolves only the numpy globals needed to rebuild an object ndarray and refuses every
other global (e.g. `posix.system`) before anything runs, even when the file's checksum is the configured
one. Every review must then be a list of non-negative ints and every label 0 or 1.
"""

from __future__ import annotations

import argparse
import io
import itertools
import pickle
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from seqsweep.atomic import save_arrays_dir
from seqsweep.checksum import content_record, sha256_file
from seqsweep.errors import ArchiveError, ChecksumError, DataFormatError, MissingInputError, exit_on_error
from seqsweep.params import load_params
from seqsweep.paths import PREPARED_ARRAYS

DATASET = "imdb"
MEMBERS = ("x_train", "y_train", "x_test", "y_test")
# keras.datasets.imdb.load_data defaults, which the tutorials use.
SEED = 113
START_CHAR = 1
OOV_CHAR = 2
INDEX_FROM = 3
X_DTYPE = np.int32  # keras.utils.pad_sequences' default dtype
MAX_MEMBER_BYTES = 1 << 30  # the published members are about 50 MB uncompressed; refuse zip bombs

try:  # numpy >= 2 spells it numpy._core; files written by numpy 1.x name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

# The only globals a pickled 1-D object ndarray of int lists refers to. Resolved here, never imported by name.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy object arrays and plain Python containers; any other global is refused unresolved."""

    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataFormatError(
                f"{self.where}: refusing to unpickle global '{module}.{name}' (only numpy array reconstruction "
                f"is allowed); the file is corrupt or malicious, delete it and run `dvc repro download@imdb`"
            ) from None

    def persistent_load(self, pid):
        raise DataFormatError(f"{self.where}: refusing a pickle persistent id; the file is corrupt or malicious")


def _read_npy(data: bytes, where: str) -> np.ndarray:
    """Parse one .npy member: numeric arrays without pickle, object arrays with the restricted unpickler."""
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):  # 3.0 differs only in a utf-8 header, which 2.0's reader skips alike
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise DataFormatError(f"{where}: not a valid .npy array ({exc})") from None
    if not dtype.hasobject:
        fh.seek(0)
        try:
            return np.lib.format.read_array(fh, allow_pickle=False)
        except ValueError as exc:
            raise DataFormatError(f"{where}: not a valid .npy array ({exc})") from None
    if dtype != np.dtype(object) or len(shape) != 1:
        raise DataFormatError(f"{where}: dtype {dtype} shape {shape}; expected a 1-D object array of int lists")
    try:
        array = _RestrictedUnpickler(fh, where).load()
    except DataFormatError:
        raise
    except Exception as exc:  # any malformed pickle stream (UnpicklingError, EOFError, TypeError, ...)
        raise DataFormatError(f"{where}: the pickled object array is malformed ({type(exc).__name__}: {exc})") from None
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(object) or array.shape != shape:
        got = f"{type(array).__name__} {getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}".strip()
        raise DataFormatError(f"{where}: the pickle holds {got}, but the header declares object array {shape}")
    return array


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The four arrays of a Keras-layout imdb.npz, loaded without unpickling anything but numpy arrays."""
    path = Path(path)
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for member in MEMBERS:
                where = f"{path} member {member}.npy"
                try:
                    info = zf.getinfo(f"{member}.npy")
                except KeyError:
                    raise ArchiveError(f"{path}: lacks member {member}.npy; members: {names}") from None
                if info.file_size > MAX_MEMBER_BYTES:
                    raise ArchiveError(f"{where}: declares {info.file_size} bytes, more than {MAX_MEMBER_BYTES}")
                arrays[member] = _read_npy(zf.read(info), where)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ArchiveError(f"{path}: not a readable .npz (zip) archive: {exc}") from None
    return arrays


def _flatten_reviews(x: np.ndarray, order: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate an object array of int lists; return the ids of reviews x[order] concatenated (int64) and
    each one's length. Errors name the review by its stored index."""
    if x.ndim != 1:
        raise DataFormatError(f"{where}: shape {x.shape}; expected a 1-D array of reviews")
    if set(map(type, x)) - {list}:
        i = next(i for i, review in enumerate(x) if type(review) is not list)
        raise DataFormatError(f"{where}: review {i} is a {type(x[i]).__name__}, expected a list of ints")
    if set(map(type, itertools.chain.from_iterable(x))) - {int}:  # bool and numpy scalars are refused too
        for i, review in enumerate(x):
            for j, w in enumerate(review):
                if type(w) is not int:
                    raise DataFormatError(
                        f"{where}: review {i} item {j} is {w!r} ({type(w).__name__}), expected a non-negative int"
                    )
    reviews = x[order]
    lengths = np.fromiter(map(len, reviews), dtype=np.int64, count=len(reviews))
    try:
        ids = np.fromiter(itertools.chain.from_iterable(reviews), dtype=np.int64, count=int(lengths.sum()))
    except OverflowError:
        raise DataFormatError(f"{where}: a word id does not fit in 64 bits") from None
    if ids.size and ids.min() < 0:
        at = int(np.argmax(ids < 0))
        row = int(np.searchsorted(np.cumsum(lengths), at, side="right"))
        item = at - int(lengths[:row].sum())
        raise DataFormatError(f"{where}: review {order[row]} item {item} is {ids[at]}, expected a non-negative int")
    return ids, lengths


def _check_labels(y: np.ndarray, n: int, where: str) -> None:
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"{where}: dtype {y.dtype} shape {y.shape}; expected {n} integer labels")
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
        raise DataFormatError(f"{where}: label {bad[0]} is {y[bad[0]]}, expected 0 or 1")


def encode_pad(ids: np.ndarray, lengths: np.ndarray, num_words: int, maxlen: int) -> np.ndarray:
    """Keras's start/index_from/OOV encoding then pad_sequences(maxlen) (pre-pad 0, pre-truncate), int32.

    `ids` holds the reviews' raw word ids back to back, `lengths` how many each has; row i is review i.
    """
    # id + INDEX_FROM, or OOV_CHAR where that reaches num_words (the int32 cast can only wrap discarded ids).
    words = np.where(ids < num_words - INDEX_FROM, ids.astype(X_DTYPE) + X_DTYPE(INDEX_FROM), X_DTYPE(OOV_CHAR))
    kept = np.minimum(lengths, maxlen)  # word ids of each review that survive pre-truncation
    ends = np.cumsum(lengths)
    marks = np.zeros(len(ids) + 1, dtype=np.int8)  # +1 where a review's kept tail starts, -1 where it ends
    np.add.at(marks, ends - kept, 1)
    np.add.at(marks, ends, -1)
    tail = np.cumsum(marks[:-1], dtype=np.int8).view(bool)
    out = np.zeros((len(lengths), maxlen), dtype=X_DTYPE)
    out[np.arange(maxlen) >= (maxlen - kept)[:, None]] = words[tail]  # boolean fill is row-major, like the tails
    short = np.flatnonzero(lengths < maxlen)  # reviews whose start id survives truncation
    out[short, maxlen - 1 - lengths[short]] = START_CHAR if START_CHAR < num_words else OOV_CHAR
    return out


def keras_permutations(n_train: int, n_test: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The shuffles load_data applies: one RandomState(seed) shuffles arange(n_train), then arange(n_test)."""
    rng = np.random.RandomState(seed)
    train = np.arange(n_train)
    rng.shuffle(train)
    test = np.arange(n_test)
    rng.shuffle(test)
    return train, test


def prepare_arrays(arrays: dict[str, np.ndarray], num_words: int, maxlen: int, where: str) -> dict[str, np.ndarray]:
    """X_train, y_train, X_test, y_test from the raw npz arrays, as load_data + pad_sequences give them."""
    orders = dict(
        zip(("train", "test"), keras_permutations(len(arrays["x_train"]), len(arrays["x_test"])), strict=True)
    )
    out = {}
    for split in ("train", "test"):
        ids, lengths = _flatten_reviews(arrays[f"x_{split}"], orders[split], f"{where} member x_{split}.npy")
        _check_labels(arrays[f"y_{split}"], len(lengths), f"{where} member y_{split}.npy")
        out[f"X_{split}"] = encode_pad(ids, lengths, num_words, maxlen)
        del ids
    # load_data concatenates the shuffled labels and splits them again: y takes their common dtype.
    labels = np.concatenate([arrays["y_train"][orders["train"]], arrays["y_test"][orders["test"]]])
    out["y_train"], out["y_test"] = labels[: len(orders["train"])], labels[len(orders["train"]) :]
    return {name: out[name] for name in PREPARED_ARRAYS}


def prepare(source: str | Path, dest: str | Path, sha256: str, num_words: int, maxlen: int) -> dict:
    """Verify `source` against `sha256`, load it safely and write the arrays and meta.json to `dest` atomically."""
    source, dest = Path(source), Path(dest)
    if not source.is_file():
        raise MissingInputError(f"{source} is missing; run `dvc repro download@imdb` first")
    actual = sha256_file(source)
    if actual != sha256:
        raise ChecksumError(
            f"{source}: SHA-256 is {actual} but data.imdb.sha256 is {sha256}; run `dvc repro download@imdb`"
        )
    arrays = prepare_arrays(read_npz(source), num_words, maxlen, str(source))
    files, differing = content_record(DATASET, {"imdb.npz": source})
    meta = {
        "dataset": DATASET,
        "official": not differing,
        "unofficial_files": differing,
        "files": files,
        "n_train": len(arrays["y_train"]),
        "n_test": len(arrays["y_test"]),
        "shapes": {name: list(arrays[name].shape) for name in PREPARED_ARRAYS},
        "dtypes": {name: arrays[name].dtype.name for name in PREPARED_ARRAYS},
        "num_words": num_words,
        "maxlen": maxlen,
        "encoding": {
            "seed": SEED,
            "start_char": START_CHAR,
            "oov_char": OOV_CHAR,
            "index_from": INDEX_FROM,
            "padding": "pre",
            "truncating": "pre",
            "pad_value": 0,
        },
    }
    save_arrays_dir(dest, {name: arrays[name] for name in PREPARED_ARRAYS}, meta)
    return meta


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    """`python -m seqsweep.prepare_imdb <imdb.npz> <prepared folder>`."""
    parser = argparse.ArgumentParser(prog="python -m seqsweep.prepare_imdb", description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="the verified imdb.npz (e.g. data/raw/imdb.npz)")
    parser.add_argument("prepared", type=Path, help="where to write the arrays (e.g. data/prepared/imdb)")
    args = parser.parse_args(argv)
    params = load_params()["data"][DATASET]
    dest = args.prepared
    meta = prepare(args.archive, dest, params["sha256"], params["num_words"], params["maxlen"])
    label = "official" if meta["official"] else "SYNTHETIC / unofficial: imdb.npz differs from the published file"
    print(f"{dest}: {meta['n_train']} train / {meta['n_test']} test reviews ({label})", file=sys.stderr)


if __name__ == "__main__":
    main()
