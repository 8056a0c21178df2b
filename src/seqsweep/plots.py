"""Plot data of the report: the files `dvc plots show` renders (metrics/plots/, declared in dvc.yaml
with the Vega-Lite templates in .dvc/plots/) and the same plots as PNGs for the MLflow summary runs.

Both are drawn from the same data points, so the repo and MLflow show the same thing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqsweep import paths, stats

if TYPE_CHECKING:
    from seqsweep.report import DatasetReport, Row

PLOTS_DIR = paths.METRICS_DIR / "plots"
CURVE_METRICS = {"accuracy": "training accuracy", "loss": "training loss"}
DEFAULT_CLASSES = {"imdb": ["negative", "positive"]}  # IMDB labels: 0 negative, 1 positive


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * x, 4)


def data_label(synthetic: bool) -> str:
    """How every result is labelled: SYNTHETIC unless it comes from the official archive."""
    return "SYNTHETIC" if synthetic else "official"


# ---- data points --------------------------------------------------------------------------------

def repeat_points(report: DatasetReport) -> list[dict]:
    """One point per finished repeat: the test accuracy (%) of every repeat of every configuration."""
    points = []
    for row in report.rows:
        for rep in row.repeats:
            if rep.get("status") == "FINISHED" and rep.get("test_accuracy") is not None:
                points.append({
                    "configuration": row.label, "rank": row.rank, "arch": row.arch, "units": row.units,
                    "batch_size": row.batch_size, "dropout": row.dropout, "epochs": row.epochs,
                    "repeat": rep["repeat"], "test_accuracy": _pct(rep["test_accuracy"]),
                    "data": data_label(row.synthetic),
                })
    return points


def units_points(report: DatasetReport) -> list[dict]:
    """One point per configuration: mean test accuracy (%) against units, per arch, batch size and dropout."""
    return [{
        "arch": row.arch, "units": row.units, "batch_size": row.batch_size, "dropout": row.dropout,
        "epochs": row.epochs, "mean": _pct(row.summary.mean), "std": _pct(row.summary.std), "n": row.summary.n,
        "configuration": row.label, "data": data_label(row.synthetic),
    } for row in sorted(report.rows, key=lambda r: (r.arch, r.batch_size, r.dropout, r.units))]


def finished_histories(row: Row) -> list[dict]:
    """The per-epoch histories of the finished repeats of `row` (failed repeats may hold NaN)."""
    finished = {rep["repeat"] for rep in row.repeats if rep.get("status") == "FINISHED"}
    return [d.get("history") or {} for d in row.details if d.get("repeat") in finished]


def curve_points(report: DatasetReport) -> list[dict]:
    """Learning curves of the best configuration of each arch: per epoch the mean over its finished
    repeats with a band of one standard deviation (lower/upper are null where std is undefined)."""
    points = []
    for row in report.best_per_arch().values():
        histories = finished_histories(row)
        for metric, name in CURVE_METRICS.items():
            for epoch, s in enumerate(stats.epoch_band([h.get(metric, []) for h in histories]), start=1):
                if s.mean is None:
                    continue
                lower = None if s.std is None else s.mean - s.std
                upper = None if s.std is None else s.mean + s.std
                points.append({
                    "arch": row.arch, "configuration": row.label, "metric": name, "epoch": epoch,
                    "mean": s.mean, "lower": lower, "upper": upper, "n": s.n, "data": data_label(row.synthetic),
                })
    return points


def confusion_matrix(row: Row) -> np.ndarray | None:
    """The confusion matrix (rows: true class, columns: predicted) summed over the finished repeats."""
    finished = {rep["repeat"] for rep in row.repeats if rep.get("status") == "FINISHED"}
    mats = [np.asarray(d["confusion"], dtype=np.int64) for d in row.details
            if d.get("repeat") in finished and d.get("confusion") is not None]
    return np.sum(mats, axis=0) if mats else None


def class_names(report: DatasetReport, size: int) -> list[str]:
    classes = report.classes or DEFAULT_CLASSES.get(report.dataset)
    return list(classes) if classes and len(classes) == size else [str(i) for i in range(size)]


def confusion_cells(report: DatasetReport) -> list[dict]:
    """Every cell (zeros included, in class order) of the best configuration's confusion matrix summed
    over its finished repeats; `share` is the cell's fraction of its actual class (the recall on the diagonal)."""
    if report.best is None:
        return []
    matrix = confusion_matrix(report.best)
    if matrix is None:
        return []
    names = class_names(report, matrix.shape[0])
    totals = matrix.sum(axis=1)
    return [{
        "actual": names[i], "predicted": names[j], "count": int(matrix[i, j]),
        "share": round(float(matrix[i, j] / totals[i]), 6) if totals[i] else 0.0,
        "actual_index": i, "predicted_index": j, "configuration": report.best.label,
        "repeats": report.best.summary.n, "data": data_label(report.synthetic),
    } for i in range(matrix.shape[0]) for j in range(matrix.shape[1])]


# ---- DVC plot files -----------------------------------------------------------------------------

def _write_json(path: Path, points: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(points, indent=1, allow_nan=False) + "\n")


def write_dvc_data(folder: Path, reports: list[DatasetReport], confusion_datasets=("har",)) -> list[Path]:
    """Write the plot data files under `folder` (the caller makes it atomic); returns their paths."""
    written = []
    for report in reports:
        ds = report.dataset
        for kind, points in (("repeats", repeat_points(report)), ("units", units_points(report)),
                             ("curves", curve_points(report))):
            path = folder / kind / f"{ds}.json"
            _write_json(path, points)
            written.append(path)
        if ds in confusion_datasets:
            path = folder / "confusion" / f"{ds}.json"
            _write_json(path, confusion_cells(report))
            written.append(path)
    return written


# ---- PNGs for MLflow ------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(report: DatasetReport, what: str) -> str:
    return f"{report.dataset.upper()}: {what}" + (" (SYNTHETIC data)" if report.synthetic else "")


def _arch_colors(archs: list[str]) -> dict[str, tuple]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {arch: cmap(i % 10) for i, arch in enumerate(archs)}


def write_pngs(folder: Path, report: DatasetReport) -> list[Path]:
    """Draw the report's plots for one dataset as PNGs under `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    out = [_strip_png(folder / "repeats.png", report, plt), _units_png(folder / "units.png", report, plt),
           _curves_png(folder / "learning_curves.png", report, plt)]
    matrix = confusion_matrix(report.best) if report.best is not None else None
    if matrix is not None:
        out.append(_confusion_png(folder / "confusion.png", report, matrix, plt))
    return out


def _strip_png(path: Path, report: DatasetReport, plt) -> Path:
    rows = report.rows
    colors = _arch_colors(report.archs)
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.28 * len(rows) + 1.5)))
    jitter = np.random.default_rng(0)
    for y, row in enumerate(rows):
        acc = [100 * a for a in row.accuracies]
        if acc:
            ax.scatter(acc, y + jitter.uniform(-0.2, 0.2, len(acc)), s=14, color=colors[row.arch], alpha=0.7)
            ax.plot([100 * row.summary.mean] * 2, [y - 0.35, y + 0.35], color="black", lw=1.5)
    ax.set_yticks(range(len(rows)), [f"{r.rank}. {r.label}" + ("" if r.summary.n else " (no finished repeat)")
                                     for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (%) of each repeat; bar: mean")
    for arch, color in colors.items():
        ax.scatter([], [], color=color, label=arch)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(_title(report, "test accuracy of every repeat, best first"), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _units_png(path: Path, report: DatasetReport, plt) -> Path:
    archs = report.archs
    cols = min(3, len(archs))
    nrows = math.ceil(len(archs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False, sharey=True)
    batches = sorted({r.batch_size for r in report.rows})
    dropouts = sorted({r.dropout for r in report.rows})
    cmap = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-."]
    for ax, arch in zip(axes.flat, archs):
        units = sorted({r.units for r in report.rows if r.arch == arch})
        position = {u: i for i, u in enumerate(units)}  # the grid's values, evenly spaced
        for bi, batch in enumerate(batches):
            for di, dropout in enumerate(dropouts):
                pts = sorted((r.units, 100 * r.summary.mean) for r in report.rows
                             if r.arch == arch and r.batch_size == batch and r.dropout == dropout
                             and r.summary.mean is not None)
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot([position[x] for x in xs], ys, marker="o", color=cmap(bi % 10),
                            linestyle=styles[di % len(styles)], label=f"batch {batch}, dropout {dropout:g}")
        ax.set_xticks(range(len(units)), [str(u) for u in units])
        ax.set_xlim(-0.3, len(units) - 0.7)
        ax.set_title(arch, fontsize=9)
        ax.set_xlabel("units")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(archs):]:
        ax.axis("off")
    axes[0][0].set_ylabel("mean test accuracy (%)")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(_title(report, "mean test accuracy against units, a line per batch size"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _curves_png(path: Path, report: DatasetReport, plt) -> Path:
    points = curve_points(report)
    colors = _arch_colors(report.archs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, CURVE_METRICS.values()):
        for arch in report.archs:
            pts = [p for p in points if p["arch"] == arch and p["metric"] == name]
            if not pts:
                continue
            epochs = [p["epoch"] for p in pts]
            ax.plot(epochs, [p["mean"] for p in pts], marker="o", ms=3, color=colors[arch],
                    label=f"{pts[0]['configuration']} (n={pts[0]['n']})")
            band = [p for p in pts if p["lower"] is not None]
            if band:
                ax.fill_between([p["epoch"] for p in band], [p["lower"] for p in band], [p["upper"] for p in band],
                                color=colors[arch], alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(report, "learning curves of each arch's best configuration (mean, band: +/- 1 std)"),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _confusion_png(path: Path, report: DatasetReport, matrix: np.ndarray, plt) -> Path:
    names = class_names(report, matrix.shape[0])
    fig, ax = plt.subplots(figsize=(0.9 * len(names) + 3, 0.8 * len(names) + 2.5))
    ax.imshow(matrix, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    best = report.best
    ax.set_title(_title(report, f"confusion matrix of {best.label}\nsummed over its {best.summary.n} finished repeats"),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
