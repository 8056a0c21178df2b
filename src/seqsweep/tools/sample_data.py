"""Synthetic stand-ins for the UCI HAR archive and Keras's imdb.npz, in the exact upstream layouts and number
formats and learnable, so the pipeline, its tests and the offline demo run without the real downloads.

Everything written here is SYNTHETIC (the HAR README says so); results computed on it say nothing about
the real datasets. Output is deterministic for given sizes and seed: fixed zip timestamps, member order
and compression, so a file's SHA-256 is stable and can be pinned in params.yaml.

CLI: `python -m seqsweep.tools.sample_data OUTDIR [--size tiny|small|full] [--seed N]`.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

from seqsweep.atomic import atomic_path
from seqsweep.checksum import sha256_file

# ---------------------------------------------------------------------------------------------- HAR

DATASET_DIR = "UCI HAR Dataset"
NESTED_ZIP = "UCI HAR Dataset.zip"
NAMES_FILE = "UCI HAR Dataset.names"
ACTIVITIES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
SIGNALS = tuple(f"{kind}_{axis}" for kind in ("total_acc", "body_acc", "body_gyro") for axis in "xyz")
TRAIN_CLASS_COUNTS = (1226, 1073, 986, 1286, 1374, 1407)  # the real train split's counts, for proportions
TRAIN_SUBJECTS = (1, 3, 5, 6, 7, 8, 11, 14, 15, 16, 17, 19, 21, 22, 23, 25, 26, 27, 28, 29, 30)
TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
RECORDING_ORDER = (5, 4, 6, 1, 3, 2)  # activities in the order each subject performed them (labels 1..6)
WINDOW, STEP, RATE = 128, 64, 50.0  # 2.56 s windows at 50 Hz with 50% overlap
FIELD = 16  # characters per number: "  2.8858451e-001" / " -2.0294171e-002"
N_FEATURES = 561
ZIP_TIME = (2012, 12, 10, 10, 38, 0)  # fixed member timestamp: reruns are byte-identical
ROWS_PER_CHUNK = 512


def har_feature_names() -> list[str]:
    """The 561 feature names in the order features.txt lists them (duplicates included, as upstream)."""
    names: list[str] = []
    xyz = "XYZ"
    for sig in ("tBodyAcc", "tGravityAcc", "tBodyAccJerk", "tBodyGyro", "tBodyGyroJerk"):
        for fn in ("mean", "std", "mad", "max", "min"):
            names += [f"{sig}-{fn}()-{a}" for a in xyz]
        names.append(f"{sig}-sma()")
        for fn in ("energy", "iqr", "entropy"):
            names += [f"{sig}-{fn}()-{a}" for a in xyz]
        names += [f"{sig}-arCoeff()-{a},{k}" for a in xyz for k in range(1, 5)]
        names += [f"{sig}-correlation()-{p}" for p in ("X,Y", "X,Z", "Y,Z")]
    for sig in ("tBodyAccMag", "tGravityAccMag", "tBodyAccJerkMag", "tBodyGyroMag", "tBodyGyroJerkMag"):
        names += [f"{sig}-{fn}()" for fn in ("mean", "std", "mad", "max", "min", "sma", "energy", "iqr", "entropy")]
        names += [f"{sig}-arCoeff(){k}" for k in range(1, 5)]
    bands = [
        "1,8",
        "9,16",
        "17,24",
        "25,32",
        "33,40",
        "41,48",
        "49,56",
        "57,64",
        "1,16",
        "17,32",
        "33,48",
        "49,64",
        "1,24",
        "25,48",
    ]
    for sig in ("fBodyAcc", "fBodyAccJerk", "fBodyGyro"):
        for fn in ("mean", "std", "mad", "max", "min"):
            names += [f"{sig}-{fn}()-{a}" for a in xyz]
        names.append(f"{sig}-sma()")
        for fn in ("energy", "iqr", "entropy", "maxInds", "meanFreq"):
            names += [f"{sig}-{fn}()-{a}" for a in xyz]
        for a in xyz:
            names += [f"{sig}-skewness()-{a}", f"{sig}-kurtosis()-{a}"]
        for _ in xyz:
            names += [f"{sig}-bandsEnergy()-{b}" for b in bands]
    for sig in ("fBodyAccMag", "fBodyBodyAccJerkMag", "fBodyBodyGyroMag", "fBodyBodyGyroJerkMag"):
        names += [
            f"{sig}-{fn}()"
            for fn in (
                "mean",
                "std",
                "mad",
                "max",
                "min",
                "sma",
                "energy",
                "iqr",
                "entropy",
                "maxInds",
                "meanFreq",
                "skewness",
                "kurtosis",
            )
        ]
    names += [
        "angle(tBodyAccMean,gravity)",
        "angle(tBodyAccJerkMean),gravityMean)",
        "angle(tBodyGyroMean,gravityMean)",
        "angle(tBodyGyroJerkMean,gravityMean)",
        "angle(X,gravityMean)",
        "angle(Y,gravityMean)",
        "angle(Z,gravityMean)",
    ]
    assert len(names) == N_FEATURES, len(names)
    return names


_POW10 = 10 ** np.arange(7, -1, -1, dtype=np.int64)  # mantissa digit weights, most significant first


def format_fixed16(values: np.ndarray) -> bytes:
    """Render a 2-D float array as upstream HAR text: one line per row, each value a 16-character field
    `  d.ddddddde±xxx` (sign in the 2nd column, 7 decimals, three-digit exponent), lines ending in LF.

    Vectorised: digits and exponents are computed with numpy and written into a byte matrix."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("cannot format NaN or infinite values")
    rows, cols = values.shape
    flat = values.ravel()
    mag = np.abs(flat)
    nonzero = mag > 0
    exp = np.zeros(flat.shape, dtype=np.int64)
    exp[nonzero] = np.floor(np.log10(mag[nonzero])).astype(np.int64)
    digits = np.rint(mag * np.power(10.0, 7 - exp)).astype(np.int64)  # 8 significant digits
    over = digits >= 10**8  # rounding carried into a new digit (9.99999999 -> 10.0000000)
    digits[over] = np.rint(digits[over] / 10).astype(np.int64)
    exp[over] += 1
    under = nonzero & (digits < 10**7)  # log10 landed just below an integer
    digits[under] = np.rint(mag[under] * np.power(10.0, 8 - exp[under])).astype(np.int64)
    exp[under] -= 1
    if np.abs(exp).max(initial=0) > 999:
        raise ValueError("value out of range for a three-digit exponent")

    out = np.empty((rows, cols * FIELD + 1), dtype=np.uint8)
    out[:, -1] = ord("\n")
    f = out[:, :-1].reshape(rows, cols, FIELD)
    f[..., 0] = ord(" ")
    f[..., 1] = np.where(flat < 0, ord("-"), ord(" ")).reshape(rows, cols)
    d = (digits[:, None] // _POW10 % 10).astype(np.uint8).reshape(rows, cols, 8) + ord("0")
    f[..., 2] = d[..., 0]
    f[..., 3] = ord(".")
    f[..., 4:11] = d[..., 1:]
    f[..., 11] = ord("e")
    f[..., 12] = np.where(exp < 0, ord("-"), ord("+")).reshape(rows, cols)
    e = np.abs(exp).reshape(rows, cols)
    f[..., 13] = e // 100 + ord("0")
    f[..., 14] = e // 10 % 10 + ord("0")
    f[..., 15] = e % 10 + ord("0")
    return out.tobytes()


def _largest_remainder(total: int, weights) -> np.ndarray:
    """Split `total` into integer parts proportional to `weights` (each at least 1 when total allows)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    parts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - parts), kind="stable")[: total - parts.sum()]:
        parts[i] += 1
    if total >= len(w):
        while (parts == 0).any():
            parts[np.argmax(parts)] -= 1
            parts[np.argmin(parts)] += 1
    return parts


def _split_plan(n: int, subjects: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(subject, label, windows) segments for a split of `n` windows: class proportions as upstream, spread
    round-robin over subjects so every subject appears once n >= len(subjects), in recording order."""
    per_class = _largest_remainder(n, TRAIN_CLASS_COUNTS)
    s = len(subjects)
    counts = np.zeros((s, 6), dtype=np.int64)
    offset = 0
    for k, c in enumerate(per_class):
        counts[:, k] = c // s
        for j in range(c % s):
            counts[(offset + j) % s, k] += 1
        offset += c % s
    return [
        (subj, label, int(counts[i, label - 1]))
        for i, subj in enumerate(subjects)
        for label in RECORDING_ORDER
        if counts[i, label - 1]
    ]


# Per-class generative parameters (g for acceleration, rad/s for the gyroscope). Walking variants differ in
# cadence, amplitude and axis balance; static postures differ in where gravity points.
_GRAVITY = {
    1: (0.97, -0.20, 0.08),
    2: (0.93, -0.22, 0.25),
    3: (0.99, -0.15, 0.00),
    4: (0.90, 0.00, 0.38),
    5: (0.97, -0.12, 0.16),
    6: (0.05, 0.62, 0.78),
}
_CADENCE = {1: 1.90, 2: 1.60, 3: 2.15}  # Hz
_ACC_AMP = {1: (0.25, 0.10, 0.12), 2: (0.20, 0.10, 0.17), 3: (0.38, 0.13, 0.15)}
_GYRO_AMP = {1: (0.50, 0.35, 0.30), 2: (0.60, 0.50, 0.35), 3: (0.55, 0.30, 0.45)}


def _segment(rng: np.random.Generator, label: int, windows: int, subj: dict) -> np.ndarray:
    """One continuous recording of `windows` overlapping windows: array (windows, 128, 9) in SIGNALS order."""
    length = STEP * (windows + 1)
    t = np.arange(length) / RATE
    gravity = np.array(_GRAVITY[label]) + subj["tilt"] + rng.normal(0, 0.03, 3)
    gravity /= np.linalg.norm(gravity)
    grav = np.repeat(gravity[None, :], length, axis=0)
    if label in _CADENCE:
        cadence = _CADENCE[label] * subj["pace"] * (1 + rng.normal(0, 0.04))
        amp = subj["vigour"] * (1 + rng.normal(0, 0.12))
        envelope = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 2 * np.pi))
        phase = 2 * np.pi * cadence * t + 0.3 * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 2 * np.pi))
        body = np.empty((length, 3))
        gyro = np.empty((length, 3))
        for a in range(3):
            p1, p2, p3 = rng.uniform(0, 2 * np.pi, 3)
            body[:, a] = _ACC_AMP[label][a] * (np.sin(phase + p1) + 0.45 * np.sin(2 * phase + p2))
            gyro[:, a] = _GYRO_AMP[label][a] * np.sin(phase + p1 + p3 * 0.25 + np.pi / 2)
        body *= (amp * envelope)[:, None]
        gyro *= (amp * envelope)[:, None]
        grav += 0.04 * np.sin(phase / 2)[:, None] * rng.normal(0, 1, 3)[None, :]  # torso sway
        body += rng.normal(0, 0.035, body.shape)
        gyro += rng.normal(0, 0.06, gyro.shape)
    else:
        drift = np.cumsum(rng.normal(0, 0.002, (length, 3)), axis=0)  # slow posture shifts
        grav += drift - drift.mean(axis=0)
        body = rng.normal(0, 0.008, (length, 3))
        gyro = rng.normal(0, 0.025, (length, 3)) + 0.3 * np.diff(drift, axis=0, prepend=drift[:1])
    total = body + grav + rng.normal(0, 0.01, (length, 3))
    signal = np.concatenate([total, body, gyro], axis=1)  # (length, 9)
    idx = np.arange(windows)[:, None] * STEP + np.arange(WINDOW)[None, :]
    return signal[idx]


def _har_split(rng: np.random.Generator, n: int, subjects: tuple[int, ...]):
    """Generate one split: signals (n, 128, 9), labels (n,), subjects (n,)."""
    x, y, s = [], [], []
    people = {}
    for subj in subjects:  # a subject's phone tilt, pace and vigour: why unseen subjects are harder
        people[subj] = dict(tilt=rng.normal(0, 0.07, 3), pace=1 + rng.normal(0, 0.06), vigour=1 + rng.normal(0, 0.15))
    for subj, label, windows in _split_plan(n, subjects):
        x.append(_segment(rng, label, windows, people[subj]))
        y += [label] * windows
        s += [subj] * windows
    signals = np.concatenate(x) if x else np.zeros((0, WINDOW, 9))
    return signals, np.asarray(y, dtype=np.int64), np.asarray(s, dtype=np.int64)


def _base_features(signals: np.ndarray) -> np.ndarray:
    """Simple per-window statistics of every channel and of the three magnitudes: (n, 63)."""
    mags = np.stack([np.linalg.norm(signals[..., 3 * k : 3 * k + 3], axis=-1) for k in range(3)], axis=-1)
    stats = [
        signals.mean(1),
        signals.std(1),
        signals.max(1),
        signals.min(1),
        np.abs(signals).mean(1),
        (signals**2).mean(1),
        mags.mean(1),
        mags.std(1),
        mags.max(1),
    ]
    return np.concatenate(stats, axis=1)


def _engineered_features(signals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cheap stand-in for the 561 engineered features: the base statistics, each column a noisy affine
    copy of one of them, scaled to [-1, 1] over the whole dataset (as upstream normalised them)."""
    base = _base_features(signals)
    pick = np.arange(N_FEATURES) % base.shape[1]
    sign = rng.choice([-1.0, 1.0], N_FEATURES)
    feats = base[:, pick] * sign + rng.normal(0, 0.02, (len(base), N_FEATURES)) * base[:, pick].std(0)
    lo, hi = feats.min(0), feats.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip(2 * (feats - lo) / span - 1, -1, 1)


def _zinfo(name: str, compress: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    """A member header with fixed timestamp and Unix permissions, so reruns are byte-identical."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.create_system = 3
    if name.endswith("/"):
        info.external_attr = (0o40755 << 16) | 0x10
        info.compress_type = zipfile.ZIP_STORED
    else:
        info.external_attr = 0o100644 << 16
        info.compress_type = compress
    return info


def _apple_double() -> bytes:
    """A 4096-byte AppleDouble resource-fork file, the kind macOS leaves as `__MACOSX/.../._name`."""
    header = struct.pack(">II16sH", 0x00051607, 0x00020000, b"Mac OS X        ", 2)
    header += struct.pack(">III", 9, 50, 3760) + struct.pack(">III", 2, 3810, 286)
    finder = b"TEXT" + b"\x00" * 30 + b"ATTR" + b"\x00" * (3760 - 38)
    fork = struct.pack(">IIII", 256, 256, 30, 30).ljust(286, b"\x00")
    return header + finder + fork


class _Tree:
    """Writes the inner archive the way macOS's zip lays it out: directory entries on first use and each
    file followed by its `__MACOSX/` resource-fork twin."""

    def __init__(self, zf: zipfile.ZipFile):
        self.zf = zf
        self.dirs: set[str] = set()
        self.junk = _apple_double()

    def _dirs_of(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i]) + "/"
            if d not in self.dirs:
                self.dirs.add(d)
                self.zf.writestr(_zinfo(d), b"")

    def add(self, name: str, chunks) -> None:
        """Add `name` (under DATASET_DIR) from an iterable of byte chunks, then its junk twin."""
        full = f"{DATASET_DIR}/{name}"
        self._dirs_of(full)
        with self.zf.open(_zinfo(full), "w") as out:
            for chunk in chunks:
                out.write(chunk)
        junk = "/".join(["__MACOSX", *full.split("/")[:-1], "._" + full.split("/")[-1]])
        self._dirs_of(junk)
        self.zf.writestr(_zinfo(junk), self.junk)


def _chunked_text(values: np.ndarray):
    """Yield the fixed-width text of `values` a block of rows at a time (bounded memory)."""
    for start in range(0, len(values), ROWS_PER_CHUNK):
        yield format_fixed16(values[start : start + ROWS_PER_CHUNK])


def _ints_text(values: np.ndarray) -> bytes:
    return "".join(f"{v}\n" for v in values.tolist()).encode()


_README = """\
==================================================================
SYNTHETIC Human Activity Recognition data, generated by seqsweep
==================================================================
This archive is NOT the UCI HAR Dataset. It was generated by seqsweep.tools.sample_data
(seed {seed}) in the same layout and number format as the real archive, so that the
seqsweep pipeline can be tested and demonstrated offline.

The signals are simulated: walking variants are periodic body accelerations at different
cadences and amplitudes, static postures differ in the direction of gravity in total_acc,
and noise plus per-subject variation keep the task from being trivial. The 561 "features"
are simple statistics of those signals, not the real engineered features.

Any accuracy computed on this data is a property of the generator, not of the real
dataset, and must be reported as synthetic.

- {n_train} training windows (subjects {n_train_subj}), {n_test} test windows (subjects {n_test_subj}).
- Activity labels: see activity_labels.txt. Feature names: see features.txt.
- Each window: 128 readings at 50 Hz (2.56 s), consecutive windows overlap by 50%.
"""

_FEATURES_INFO = """\
Feature Selection (SYNTHETIC)
=================
The names in features.txt follow the real dataset's list; the values in X_<split>.txt are
seqsweep's simple statistics of the simulated inertial signals, normalised to [-1, 1].
"""

_NAMES = """\
SYNTHETIC stand-in for "Human Activity Recognition Using Smartphones", generated by
seqsweep.tools.sample_data. Not the UCI data set: see README.txt inside {inner}.
"""


def _write_inner(path: Path, n_train: int, n_test: int, seed: int) -> None:
    """Write the inner archive (`UCI HAR Dataset/...` plus `__MACOSX/` junk) to `path`."""
    rng = np.random.default_rng([seed, 240])  # 240: the UCI id, a fixed stream tag for HAR
    splits = {"train": _har_split(rng, n_train, TRAIN_SUBJECTS), "test": _har_split(rng, n_test, TEST_SUBJECTS)}
    all_signals = np.concatenate([splits["train"][0], splits["test"][0]])
    feats = _engineered_features(all_signals, rng) if len(all_signals) else np.zeros((0, N_FEATURES))
    features = {"train": feats[:n_train], "test": feats[n_train:]}
    readme = _README.format(
        seed=seed,
        n_train=n_train,
        n_test=n_test,
        n_train_subj=len(set(splits["train"][2].tolist())),
        n_test_subj=len(set(splits["test"][2].tolist())),
    )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        tree = _Tree(zf)
        tree.add(".DS_Store", [b"\x00\x00\x00\x01Bud1" + b"\x00" * 6138])
        tree.add("activity_labels.txt", ["".join(f"{i} {a}\n" for i, a in enumerate(ACTIVITIES, 1)).encode()])
        tree.add("features.txt", ["".join(f"{i} {n}\n" for i, n in enumerate(har_feature_names(), 1)).encode()])
        tree.add("features_info.txt", [_FEATURES_INFO.encode()])
        tree.add("README.txt", [readme.encode()])
        for split in ("test", "train"):
            signals, labels, subjects = splits[split]
            for c, name in enumerate(SIGNALS):
                tree.add(f"{split}/Inertial Signals/{name}_{split}.txt", _chunked_text(signals[..., c]))
            tree.add(f"{split}/subject_{split}.txt", [_ints_text(subjects)])
            tree.add(f"{split}/X_{split}.txt", _chunked_text(features[split]))
            tree.add(f"{split}/y_{split}.txt", [_ints_text(labels)])


def write_har_archive(path, n_train: int = 7352, n_test: int = 2947, *, layout: str = "current", seed: int = 0) -> Path:
    """Write a synthetic UCI HAR archive to `path` and return it.

    layout="current": the zip UCI serves today (`UCI HAR Dataset.names` + nested `UCI HAR Dataset.zip`);
    layout="legacy": the nested zip itself, as the old URL served it."""
    if layout not in ("current", "legacy"):
        raise ValueError(f"layout must be 'current' or 'legacy', not {layout!r}")
    if n_train < 0 or n_test < 0:
        raise ValueError(f"sizes must be non-negative, got n_train={n_train}, n_test={n_test}")
    path = Path(path)
    with atomic_path(path) as tmp:
        if layout == "legacy":
            _write_inner(tmp, n_train, n_test, seed)
        else:
            inner = tmp.with_name(tmp.name + ".inner")
            try:
                _write_inner(inner, n_train, n_test, seed)
                with zipfile.ZipFile(tmp, "w") as zf:
                    zf.writestr(_zinfo(NAMES_FILE), _NAMES.format(inner=NESTED_ZIP).encode())
                    with open(inner, "rb") as src, zf.open(_zinfo(NESTED_ZIP, zipfile.ZIP_STORED), "w") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
            finally:
                inner.unlink(missing_ok=True)
        os.chmod(tmp, 0o644)  # a download's usual mode, not the temporary file's 0600
    return path


# --------------------------------------------------------------------------------------------- IMDB

IMDB_VOCAB = 88_585  # highest word rank in the real file
ZIPF_EXPONENT = 1.2
N_SENTIMENT = 300  # sentiment-bearing words per polarity


def _npy_object_bytes(array: np.ndarray) -> bytes:
    """An .npy of an object array as numpy 1.x wrote the real file: a 1.0 header then a protocol-3 pickle
    whose ndarray reconstructor is spelled `numpy.core.multiarray` (numpy 2 spells it `numpy._core`)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(array))
    payload = pickle.dumps(array, protocol=3)
    new_spelling = b"cnumpy._core.multiarray\n_reconstruct\n"
    if payload.find(new_spelling, 0, 64) >= 0:
        payload = payload.replace(new_spelling, b"cnumpy.core.multiarray\n_reconstruct\n", 1)
    return buf.getvalue() + payload


def _npy_plain_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _imdb_split(rng: np.random.Generator, n: int, cdf: np.ndarray, pos: np.ndarray, neg: np.ndarray):
    """Generate `n` reviews (object array of int lists) and balanced 0/1 labels (int64)."""
    labels = np.zeros(n, dtype=np.int64)
    labels[: n // 2] = 1
    labels = rng.permutation(labels)
    # Review lengths: log-normal around the real median (~174 words), clipped to 10..2500.
    lengths = np.clip(np.rint(rng.lognormal(np.log(174), 0.78, n)), 10, 2500).astype(np.int64)
    total = int(lengths.sum())
    tokens = np.searchsorted(cdf, rng.random(total), side="right").astype(np.int64) + 1
    tokens = np.minimum(tokens, IMDB_VOCAB)
    # Background words are neutral: a draw that lands on an opinion word moves to the next neutral rank.
    neutral = np.ones(IMDB_VOCAB + 2, dtype=bool)
    neutral[pos] = neutral[neg] = False
    neutral[IMDB_VOCAB + 1] = True
    next_neutral = np.minimum.accumulate(np.where(neutral, np.arange(IMDB_VOCAB + 2), IMDB_VOCAB + 1)[::-1])[::-1]
    tokens = np.minimum(next_neutral[tokens], IMDB_VOCAB)
    review = np.repeat(np.arange(n), lengths)
    # Each review has its own density of opinion words and its own clarity (share agreeing with its label).
    density = rng.uniform(0.02, 0.08, n)[review]
    clarity = rng.beta(8, 2.2, n)[review]
    opinion = rng.random(total) < density
    agrees = rng.random(total) < clarity
    positive = np.where(agrees, labels[review] == 1, labels[review] == 0)
    k = int(opinion.sum())
    choice = rng.integers(0, len(pos), k)
    tokens[opinion] = np.where(positive[opinion], pos[choice], neg[choice])
    flat = tokens.tolist()
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    x = np.empty(n, dtype=object)
    for i in range(n):
        x[i] = flat[bounds[i] : bounds[i + 1]]
    return x, labels


def imdb_sentiment_words(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The word ranks the generator for `seed` uses as positive and as negative words (disjoint; most
    below 5000, a few above so that num_words clipping loses some signal)."""
    rng = np.random.default_rng([seed, 113, 1])
    common = rng.choice(np.arange(20, 5000), size=2 * (N_SENTIMENT - 20), replace=False)
    rare = rng.choice(np.arange(5000, 20000), size=40, replace=False)
    pos = np.concatenate([common[: N_SENTIMENT - 20], rare[:20]])
    neg = np.concatenate([common[N_SENTIMENT - 20 :], rare[20:]])
    return np.sort(pos), np.sort(neg)


def write_imdb_npz(path, n_train: int = 25000, n_test: int = 25000, *, seed: int = 0) -> Path:
    """Write a synthetic imdb.npz (Keras's layout: x_train, y_train, x_test, y_test; x as pickled object
    arrays of int lists of word ranks from 1; y as int64 0/1) to `path` and return it."""
    if n_train < 0 or n_test < 0:
        raise ValueError(f"sizes must be non-negative, got n_train={n_train}, n_test={n_test}")
    path = Path(path)
    ranks = np.arange(1, IMDB_VOCAB + 1, dtype=np.float64)
    cdf = np.cumsum(1.0 / (ranks + 2.7) ** ZIPF_EXPONENT)
    cdf /= cdf[-1]
    pos, neg = imdb_sentiment_words(seed)
    rng = np.random.default_rng([seed, 113])
    x_train, y_train = _imdb_split(rng, n_train, cdf, pos, neg)
    x_test, y_test = _imdb_split(rng, n_test, cdf, pos, neg)
    members = [
        ("x_train.npy", _npy_object_bytes(x_train)),
        ("y_train.npy", _npy_plain_bytes(y_train)),
        ("x_test.npy", _npy_object_bytes(x_test)),
        ("y_test.npy", _npy_plain_bytes(y_test)),
    ]
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # as numpy.savez dates members
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o100600 << 16
                zf.writestr(info, data)
        os.chmod(tmp, 0o644)
    return path


# ---------------------------------------------------------------------------------------------- CLI

SIZES = {
    "tiny": dict(har=(96, 48), imdb=(300, 200)),
    "small": dict(har=(1500, 600), imdb=(2000, 1000)),
    "full": dict(har=(7352, 2947), imdb=(25000, 25000)),
}


def main(argv=None) -> int:
    """Write OUTDIR/har.zip and OUTDIR/imdb.npz and print how to point params.yaml at them."""
    parser = argparse.ArgumentParser(prog="python -m seqsweep.tools.sample_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path, help="folder to write har.zip and imdb.npz into")
    parser.add_argument(
        "--size",
        choices=list(SIZES),
        default="small",
        help="tiny: HAR 96/48, IMDB 300/200; small (default): HAR 1500/600, IMDB 2000/1000; "
        "full: the real sizes, HAR 7352/2947, IMDB 25000/25000 (train/test)",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0); same seed, same bytes")
    args = parser.parse_args(argv)
    sizes = SIZES[args.size]
    out = args.outdir.resolve()
    written = {
        "har": write_har_archive(out / "har.zip", *sizes["har"], seed=args.seed),
        "imdb": write_imdb_npz(out / "imdb.npz", *sizes["imdb"], seed=args.seed),
    }
    print(f"SYNTHETIC data ({args.size}, seed {args.seed}); results on it are not results on the real datasets.")
    flags, yaml_lines = [], ["data:"]
    for ds, path in written.items():
        digest = sha256_file(path)
        url = path.as_uri()
        print(f"{path}  {path.stat().st_size} bytes  sha256 {digest}")
        flags += [f"-S 'data.{ds}.url={url}'", f"-S 'data.{ds}.sha256={digest}'"]
        yaml_lines += [f"  {ds}:", f"    url: {url}", f"    sha256: {digest}"]
    print("\nRun the pipeline on it without editing params.yaml:")
    print("  dvc exp run " + " ".join(flags))
    print("\nor set these keys in params.yaml (keep the other keys as they are):")
    print("\n".join("  " + line for line in yaml_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
