"""The results of training as the report and its plots see them: one `Row` per configuration of an
architecture (its repeats, their summary, how it compares with the best) and one `DatasetReport` per
dataset. The run files they are read from are written and read by `seqsweep.record`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from seqsweep import stats

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
    validation: dict | None = None  # the run file's validation split; None: chosen on test accuracy
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
    def val_accuracies(self) -> list[float]:
        return [r["val_accuracy"] for r in self.finished if r.get("val_accuracy") is not None]

    @property
    def val_summary(self) -> stats.Summary:
        return stats.summarise(self.val_accuracies)

    @property
    def selected_on(self) -> str:
        """What configurations are ranked and chosen by: `validation` accuracy, or `test` accuracy."""
        return "validation" if self.validation else "test"

    @property
    def scores(self) -> list[float]:
        """The accuracies this configuration is ranked and compared by (validation's when there is a split)."""
        return self.val_accuracies if self.validation else self.accuracies

    @property
    def n_failed(self) -> int:
        return len(self.repeats) - len(self.finished)

    @property
    def summary(self) -> stats.Summary:
        return stats.summarise(self.accuracies)

    @functools.cached_property
    def ci(self) -> tuple[float, float] | None:
        """95% bootstrap confidence interval of the mean test accuracy (None below 2 repeats)."""
        return stats.mean_ci(self.accuracies)

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
    def validation(self) -> dict | None:
        """The validation split the configurations were chosen on (None: chosen on test accuracy)."""
        return next((r.validation for r in self.rows if r.validation), None)

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
