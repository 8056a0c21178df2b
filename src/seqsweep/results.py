"""The results of training as the report and its plots see them: one `Row` per configuration of an
architecture (its repeats, their summary, how it compares with the best), one `DatasetReport` per
dataset, and the reader of the training stages' output files (`runs/<dataset>-<arch>.json`).

The run file format, as `seqsweep.train` writes it:

    {"dataset", "arch", "synthetic", "classes", "data_digest", "code_digest", "runtime", "repeats",
     "configs": {<config key>: {"units", "batch_size", "dropout", "epochs", "n", "mean", "std", "min",
                                "max", "n_failed", "mlflow_parent_run_id",
                                "repeats": [{"repeat", "seed", "status", "test_accuracy", "mlflow_run_id",
                                             "reused", "reason"?, "history", "confusion"}, ...]}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from seqsweep import paths, stats
from seqsweep.errors import DataFormatError, MissingInputError

SETTING_KEYS = ("units", "batch_size", "dropout", "epochs")


@dataclass
class Row:
    """One configuration of one architecture: its repeats, their summary and how it compares."""

    dataset: str
    arch: str
    key: str
    units: int
    batch_size: int
    dropout: float
    epochs: int
    repeats: list[dict]
    synthetic: bool
    parent_run_id: str | None = None
    rank: int = 0
    comparison: stats.Comparison | None = None
    published: list[dict] = field(default_factory=list)

    @property
    def finished(self) -> list[dict]:
        return [r for r in self.repeats if r.get("status") == "FINISHED"]

    @property
    def accuracies(self) -> list[float]:
        return [r["test_accuracy"] for r in self.finished]

    @property
    def n_failed(self) -> int:
        return len(self.repeats) - len(self.finished)

    @property
    def summary(self) -> stats.Summary:
        return stats.summarise(self.accuracies)

    @property
    def uid(self) -> str:
        """Unique within a dataset."""
        return f"{self.arch}/{self.key}"

    @property
    def setting(self) -> str:
        """The configuration as a short label, e.g. `u100-b64-d0.5-e15`."""
        return f"u{self.units}-b{self.batch_size}-d{self.dropout:g}-e{self.epochs}"

    @property
    def label(self) -> str:
        return f"{self.arch} u{self.units} b{self.batch_size} d{self.dropout:g} e{self.epochs}"


@dataclass
class DatasetReport:
    """The ranked rows of one dataset, its best configuration and the published figures left unmatched."""

    dataset: str
    rows: list[Row]
    alpha: float
    synthetic: bool
    classes: list[str] | None
    archs: list[str]
    best: Row | None
    unmatched: list[dict]

    @property
    def n_tested(self) -> int:
        return sum(r.comparison is not None and r.comparison.p_holm is not None for r in self.rows)

    def best_per_arch(self) -> dict[str, Row]:
        """The best configuration (first in rank order, with a finished repeat) of each architecture."""
        out: dict[str, Row] = {}
        for row in self.rows:
            if row.summary.n and row.arch not in out:
                out[row.arch] = row
        return out


def data_label(synthetic: bool) -> str:
    """How every result is labelled: SYNTHETIC unless it comes from the official archive."""
    return "SYNTHETIC" if synthetic else "official"


# ---- reading the training stages' run files -------------------------------------------------------


def read_dataset(runs_dir: Path, dataset: str, archs: list[str]) -> tuple[list[Row], list[str] | None, bool]:
    """The rows of every architecture of `dataset` listed in `archs`, the class names and whether the
    data is synthetic. A missing file names every stage to run."""
    files = {arch: paths.run_file(runs_dir, dataset, arch) for arch in archs}
    missing = [arch for arch, path in files.items() if not path.is_file()]
    if missing:
        stages = " ".join(f"train-{dataset}@{arch}" for arch in missing)
        raise MissingInputError(
            f"training results missing: {', '.join(str(files[a]) for a in missing)}; run `dvc repro {stages}` "
            "first (or `dvc repro report`, which runs every stage it needs)"
        )
    rows: list[Row] = []
    classes, synthetic = None, False
    for arch, path in files.items():
        doc = _read_json(path, f"train-{dataset}@{arch}")
        if (doc.get("dataset"), doc.get("arch")) != (dataset, arch):
            raise DataFormatError(
                f"{path}: holds dataset {doc.get('dataset')!r} arch {doc.get('arch')!r}, expected {dataset!r} {arch!r}"
            )
        if not isinstance(doc.get("configs"), dict):
            raise DataFormatError(f"{path}: missing key 'configs' (an object per configuration)")
        classes = classes or doc.get("classes")
        synthetic = synthetic or bool(doc.get("synthetic", True))
        rows += _rows_of(path, doc)
    return rows, classes, synthetic


def _read_json(path: Path, stage: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc}); rerun `dvc repro {stage}`") from None
    if not isinstance(doc, dict):
        raise DataFormatError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _check_repeat(path: Path, key: str, rep) -> dict:
    where = f"{path}: configs.{key}.repeats"
    if not isinstance(rep, dict) or "repeat" not in rep or "status" not in rep:
        raise DataFormatError(f"{where}: each repeat needs 'repeat' and 'status', got {rep!r}")
    if rep["status"] == "FINISHED":
        acc = rep.get("test_accuracy")
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
            raise DataFormatError(
                f"{where}[{rep['repeat']}]: test_accuracy = {acc!r}; "
                "expected a fraction in [0, 1] for a FINISHED repeat"
            )
    return rep


def _rows_of(path: Path, doc: dict) -> list[Row]:
    rows = []
    for key, cfg in doc["configs"].items():
        lacking = [k for k in (*SETTING_KEYS, "repeats") if k not in cfg]
        if lacking:
            raise DataFormatError(f"{path}: configs.{key}: missing key {lacking[0]!r}")
        repeats = [_check_repeat(path, key, r) for r in cfg["repeats"]]
        rows.append(
            Row(
                doc["dataset"],
                doc["arch"],
                key,
                cfg["units"],
                cfg["batch_size"],
                float(cfg["dropout"]),
                cfg["epochs"],
                repeats,
                bool(doc.get("synthetic", True)),
                cfg.get("mlflow_parent_run_id"),
            )
        )
    return rows
