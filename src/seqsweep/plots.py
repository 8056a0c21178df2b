"""Plots of the report, drawn once: the data points `dvc plots show` renders (metrics/plots/, declared
in dvc.yaml's `plots` with the Vega-Lite templates in .dvc/plots/), and the same templates filled with
the same points and rendered to PNG (vl-convert, no browser) for the MLflow summary runs. A figure
is changed in one place, its template, and looks the same in both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seqsweep import stats
from seqsweep.errors import MissingInputError
from seqsweep.results import DatasetReport, Row, data_label

# Per-epoch metrics of the learning curves: (name shown, factor): accuracy in %, like every other plot.
CURVE_METRICS = {"accuracy": ("training accuracy (%)", 100.0), "loss": ("training loss (cross-entropy)", 1.0)}
DEFAULT_CLASSES = {"imdb": ["negative", "positive"]}  # IMDB labels: 0 negative, 1 positive


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * x, 4)


# ---- data points --------------------------------------------------------------------------------


def repeat_points(report: DatasetReport) -> list[dict]:
    """One point per finished repeat: the test accuracy (%) of every repeat of every configuration."""
    points = []
    for row in report.rows:
        for rep in row.repeats:
            if rep.get("status") == "FINISHED" and rep.get("test_accuracy") is not None:
                points.append(
                    {
                        "configuration": row.label,
                        "rank": row.rank,
                        "arch": row.arch,
                        "units": row.units,
                        "batch_size": row.batch_size,
                        "dropout": row.dropout,
                        "epochs": row.epochs,
                        "repeat": rep["repeat"],
                        "test_accuracy": _pct(rep["test_accuracy"]),
                        "data": data_label(row.synthetic),
                    }
                )
    return points


def units_points(report: DatasetReport) -> list[dict]:
    """One point per configuration: mean test accuracy (%) against units, per arch, batch size and dropout."""
    return [
        {
            "arch": row.arch,
            "units": row.units,
            "batch_size": row.batch_size,
            "dropout": row.dropout,
            "epochs": row.epochs,
            "mean": _pct(row.summary.mean),
            "std": _pct(row.summary.std),
            "n": row.summary.n,
            "configuration": row.label,
            "data": data_label(row.synthetic),
        }
        for row in sorted(report.rows, key=lambda r: (r.arch, r.batch_size, r.dropout, r.units))
    ]


def finished_histories(row: Row) -> list[dict]:
    """The per-epoch histories of the finished repeats of `row` (failed repeats may hold NaN)."""
    return [rep.get("history") or {} for rep in row.finished]


def curve_points(report: DatasetReport) -> list[dict]:
    """Learning curves of the best configuration of each arch: per epoch the mean over its finished
    repeats with a band of one standard deviation (lower/upper are null where std is undefined)."""
    points = []
    for row in report.best_per_arch().values():
        histories = finished_histories(row)
        for metric, (name, factor) in CURVE_METRICS.items():
            for epoch, s in enumerate(stats.epoch_band([h.get(metric, []) for h in histories]), start=1):
                if s.mean is None:
                    continue
                band = (None, None) if s.std is None else (factor * (s.mean - s.std), factor * (s.mean + s.std))
                points.append(
                    {
                        "arch": row.arch,
                        "configuration": row.label,
                        "metric": name,
                        "epoch": epoch,
                        "mean": factor * s.mean,
                        "lower": band[0],
                        "upper": band[1],
                        "n": s.n,
                        "data": data_label(row.synthetic),
                    }
                )
    return points


def confusion_matrix(row: Row) -> np.ndarray | None:
    """The confusion matrix (rows: true class, columns: predicted) summed over the finished repeats."""
    mats = [np.asarray(rep["confusion"], dtype=np.int64) for rep in row.finished if rep.get("confusion") is not None]
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
    return [
        {
            "actual": names[i],
            "predicted": names[j],
            "count": int(matrix[i, j]),
            "share": round(float(matrix[i, j] / totals[i]), 6) if totals[i] else 0.0,
            "actual_index": i,
            "predicted_index": j,
            "configuration": report.best.label,
            "repeats": report.best.summary.n,
            "data": data_label(report.synthetic),
        }
        for i in range(matrix.shape[0])
        for j in range(matrix.shape[1])
    ]


# ---- DVC plot files -----------------------------------------------------------------------------


def _write_json(path: Path, points: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(points, indent=1, allow_nan=False) + "\n")


def write_dvc_data(
    folder: Path, reports: list[DatasetReport], confusion_datasets=("har",), left_out: tuple[str, ...] = ()
) -> list[Path]:
    """Write the plot data files under `folder` (the caller makes it atomic); returns their paths. A
    dataset `left_out` of the study gets empty ones, which `dvc plots show` skips without an error."""
    written = []
    for ds in left_out:
        for kind in ("repeats", "units", "curves", *(("confusion",) if ds in confusion_datasets else ())):
            path = folder / kind / f"{ds}.json"
            _write_json(path, [])
            written.append(path)
    for report in reports:
        ds = report.dataset
        for kind, points in (
            ("repeats", repeat_points(report)),
            ("units", units_points(report)),
            ("curves", curve_points(report)),
        ):
            path = folder / kind / f"{ds}.json"
            _write_json(path, points)
            written.append(path)
        if ds in confusion_datasets:
            path = folder / "confusion" / f"{ds}.json"
            _write_json(path, confusion_cells(report))
            written.append(path)
    return written


# ---- PNGs for MLflow: the same figures, drawn from the same specifications ---------------------

# Which function writes the data of each plot: the data file dvc.yaml names is <folder>/<kind>/<dataset>.json.
POINTS = {"repeats": repeat_points, "units": units_points, "curves": curve_points, "confusion": confusion_cells}
PNG_SCALE = 2.0  # pixels per CSS pixel: sharp when MLflow's viewer scales the image down
VEGA_LITE = "5.8"  # the oldest Vega-Lite vl-convert bundles (DVC's page loads 5.2 from its CDN)


def plot_definitions(dvc_yaml: Path = Path("dvc.yaml")) -> dict[str, dict]:
    """dvc.yaml's top-level `plots` (id -> template, title, x, y {data file: field}, labels): the one
    definition of every figure, for `dvc plots show` and for the PNGs alike. (DVC does not allow
    dvc.yaml as a stage dependency: a changed title reaches MLflow at the report's next run.)"""
    import yaml

    if not dvc_yaml.is_file():
        raise MissingInputError(
            f"{dvc_yaml.resolve()} not found: the report draws the plots dvc.yaml defines, so run "
            "it from the repository root (`dvc repro report`)"
        )
    plots = yaml.safe_load(dvc_yaml.read_text()).get("plots") or []
    return {plot_id: props for item in plots for plot_id, props in item.items()}


def filled_spec(template: Path, points: list[dict], props: dict, rev: str) -> dict:
    """The Vega-Lite spec `dvc plots show` draws for these points: the template filled by DVC's own
    renderer (dvc_render), each point carrying the rev, filename and field DVC adds."""
    from dvc_render import VegaRenderer

    filename, field = next(iter(props["y"].items()))
    points = [{**p, "rev": rev, "filename": filename, "field": field} for p in points]
    renderer = VegaRenderer(
        points,
        template.stem,
        template=str(template),
        title=props.get("title", ""),
        x=props["x"],
        y=field,
        x_label=props.get("x_label", props["x"]),
        y_label=props.get("y_label", field),
        anchors_y_definitions=[{"filename": filename, "field": field}],
    )
    return renderer.get_filled_template()


def write_pngs(
    folder: Path, report: DatasetReport, definitions: dict[str, dict], templates: Path, rev: str = "workspace"
) -> list[Path]:
    """Render every plot of dvc.yaml that shows `report`'s dataset as <folder>/<plot id>.png, from
    its Vega-Lite template and the same points `dvc plots show` reads (vl-convert: no browser)."""
    import vl_convert

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for plot_id, props in definitions.items():
        data_file = Path(next(iter(props["y"])))
        if data_file.stem != report.dataset or data_file.parent.name not in POINTS:
            continue
        points = POINTS[data_file.parent.name](report)
        if not points:
            continue
        if report.synthetic:
            props = {**props, "title": f"{props.get('title', plot_id)} (SYNTHETIC data)"}
        spec = filled_spec(templates / f"{props['template']}.json", points, props, rev)
        path = folder / f"{plot_id}.png"
        path.write_bytes(vl_convert.vegalite_to_png(spec, vl_version=VEGA_LITE, scale=PNG_SCALE))
        written.append(path)
    return written
