"""Stage report: read every training stage's metrics and answer "which architecture and which
settings, by how much, and is the difference real?" in the repo (metrics/summary.json,
metrics/comparison.md and .csv, metrics/plots/ for `dvc plots show`) and in MLflow (a summary run
per dataset holding the same table and plots).

Failed repeats are counted (n_failed), never dropped; a std over fewer than 2 repeats is shown as
n/a, never 0; synthetic data is labelled SYNTHETIC wherever a result appears."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seqsweep import atomic, paths, plots, stats
from seqsweep.errors import DataFormatError, MissingInputError, SeqsweepError, exit_on_error
from seqsweep.models import ARCHS
from seqsweep.params import load_params
from seqsweep.train import details_path, metrics_path

REFERENCE_FILE = Path(__file__).with_name("reference_results.yaml")
SUMMARY_PATH = paths.METRICS_DIR / "summary.json"
MD_PATH = paths.METRICS_DIR / "comparison.md"
CSV_PATH = paths.METRICS_DIR / "comparison.csv"
SETTING_KEYS = ("units", "batch_size", "dropout", "epochs")
CSV_COLUMNS = [
    "dataset", "data", "rank", "arch", "units", "batch_size", "dropout", "epochs", "n", "n_failed",
    "accuracy", "mean_pct", "std_pct", "min_pct", "max_pct", "vs_best", "p_welch", "p_holm",
    "published", "config", "mlflow_parent_run_id",
]
MAX_LISTED_FAILURES = 20


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
    details: list[dict]
    synthetic: bool
    parent_run_id: str | None = None
    rank: int = 0
    comparison: stats.Comparison | None = None
    published: list[dict] = field(default_factory=list)

    @property
    def accuracies(self) -> list[float]:
        return [r["test_accuracy"] for r in self.repeats if r.get("status") == "FINISHED"]

    @property
    def n_failed(self) -> int:
        return sum(r.get("status") != "FINISHED" for r in self.repeats)

    @property
    def summary(self) -> stats.Summary:
        return stats.summarise(self.accuracies)

    @property
    def uid(self) -> str:
        """Unique within a dataset."""
        return f"{self.arch}/{self.key}"

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


# ---- inputs ---------------------------------------------------------------------------------------

def _read_json(path: Path, stage: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc}); rerun `dvc repro {stage}`") from None
    if not isinstance(doc, dict):
        raise DataFormatError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def load_training(dataset: str) -> list[tuple[dict, dict]]:
    """The (metrics, details) documents of every trained architecture of `dataset`, skipping the
    architectures left out of archs.<dataset>. A missing file names every stage to run."""
    missing = [(arch, p) for arch in ARCHS[dataset] for p in (metrics_path(dataset, arch), details_path(dataset, arch))
               if not p.is_file()]
    if missing:
        stages = " ".join(dict.fromkeys(f"train@{dataset}-{arch}" for arch, _ in missing))
        files = ", ".join(str(p) for _, p in missing)
        raise MissingInputError(f"training metrics missing: {files}; run `dvc repro {stages}` first "
                                "(or `dvc repro report`, which runs every stage it needs)")
    docs = []
    for arch in ARCHS[dataset]:
        stage = f"train@{dataset}-{arch}"
        metrics = _read_json(metrics_path(dataset, arch), stage)
        if metrics.get("skipped"):
            continue
        details = _read_json(details_path(dataset, arch), stage)
        for path, doc in ((metrics_path(dataset, arch), metrics), (details_path(dataset, arch), details)):
            if (doc.get("dataset"), doc.get("arch")) != (dataset, arch):
                raise DataFormatError(f"{path}: holds dataset {doc.get('dataset')!r} arch {doc.get('arch')!r}, "
                                      f"expected {dataset!r} {arch!r}")
            if not isinstance(doc.get("configs"), dict):
                raise DataFormatError(f"{path}: missing key 'configs' (an object per configuration)")
        docs.append((metrics, details))
    return docs


def _check_repeat(path: Path, key: str, rep) -> dict:
    where = f"{path}: configs.{key}.repeats"
    if not isinstance(rep, dict) or "repeat" not in rep or "status" not in rep:
        raise DataFormatError(f"{where}: each repeat needs 'repeat' and 'status', got {rep!r}")
    if rep["status"] == "FINISHED":
        acc = rep.get("test_accuracy")
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
            raise DataFormatError(f"{where}[{rep['repeat']}]: test_accuracy = {acc!r}; expected a fraction in [0, 1] "
                                  "for a FINISHED repeat")
    return rep


def rows_of(metrics: dict, details: dict) -> list[Row]:
    """The configurations of one (dataset, arch) metrics document, with their per-repeat details."""
    dataset, arch = metrics["dataset"], metrics["arch"]
    path = metrics_path(dataset, arch)
    rows = []
    for key, cfg in metrics["configs"].items():
        lacking = [k for k in (*SETTING_KEYS, "repeats") if k not in cfg]
        if lacking:
            raise DataFormatError(f"{path}: configs.{key}: missing key {lacking[0]!r}")
        if key not in details["configs"]:
            raise DataFormatError(f"{details_path(dataset, arch)}: no entry for configuration {key!r} of {path}; "
                                  f"rerun `dvc repro train@{dataset}-{arch}`")
        repeats = [_check_repeat(path, key, r) for r in cfg["repeats"]]
        rows.append(Row(dataset, arch, key, cfg["units"], cfg["batch_size"], float(cfg["dropout"]), cfg["epochs"],
                        repeats, details["configs"][key], bool(metrics.get("synthetic", True)),
                        cfg.get("mlflow_parent_run_id")))
    return rows


def load_reference(path: Path = REFERENCE_FILE) -> list[dict]:
    """The reference study's published figures (see reference_results.yaml for the matching rules)."""
    figures = yaml.safe_load(path.read_text())["figures"]
    for i, fig in enumerate(figures):
        for k in ("dataset", "arch", "setting", "mean"):
            if k not in fig:
                raise DataFormatError(f"{path}: figures[{i}] lacks key {k!r}")
    return figures


def matches(figure: dict, row: Row) -> bool:
    """Whether a published figure applies to the setting of `row` (null = unknown never matches)."""
    if figure["arch"] is None or (figure["dataset"], figure["arch"]) != (row.dataset, row.arch):
        return False
    for k in SETTING_KEYS:
        want = figure["setting"].get(k)
        if want == "any":
            continue
        if want is None or float(want) != float(getattr(row, k)):
            return False
    return True


# ---- analysis -------------------------------------------------------------------------------------

def build_dataset(dataset: str, docs: list[tuple[dict, dict]], alpha: float, figures: list[dict]) -> DatasetReport:
    """Rank the configurations of `dataset`, test each against the best, and set published figures beside them."""
    rows = [row for metrics, details in docs for row in rows_of(metrics, details)]
    summaries = {r.uid: r.summary for r in rows}
    rank = stats.ranks(summaries)
    best_uid = stats.best_of(summaries)
    comparisons = stats.compare_to_best({r.uid: r.accuracies for r in rows}, best_uid, alpha)
    for row in rows:
        row.rank = rank[row.uid]
        row.comparison = comparisons[row.uid]
        row.published = [f for f in figures if matches(f, row)]
    rows.sort(key=lambda r: (r.rank, stats.rank_key(r.summary), r.arch, r.units, r.batch_size, r.dropout))
    used = {id(f) for r in rows for f in r.published}
    classes = next((d.get("classes") for _, d in docs if d.get("classes")), None)
    return DatasetReport(
        dataset, rows, alpha, synthetic=any(bool(m.get("synthetic", True)) for m, _ in docs), classes=classes,
        archs=[m["arch"] for m, _ in docs], best=next((r for r in rows if r.uid == best_uid), None),
        unmatched=[f for f in figures if f["dataset"] == dataset and id(f) not in used],
    )


# ---- formatting -----------------------------------------------------------------------------------

def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.3f}"


def accuracy_text(s: stats.Summary) -> str:
    """`90.774% (+/-0.935)` as in the reference notebooks; std n/a below 2 repeats; n/a without any."""
    if s.mean is None:
        return "n/a (no finished repeat)"
    return f"{pct(s.mean)}% (+/-{pct(s.std)})"


def verdict_text(c: stats.Comparison | None) -> str:
    if c is None:
        return ""
    return c.verdict if c.p_holm is None else f"{c.verdict} (Holm p={c.p_holm:.3g})"


def figure_text(fig: dict) -> str:
    text = f"{fig['mean']:.2f}%" + (f" (+/-{fig['std']:.2f})" if fig.get("std") is not None else "")
    return text + (f", {fig['repeats']} repeat{'s' * (fig['repeats'] != 1)}" if fig.get("repeats") else "")


def setting_text(fig: dict) -> str:
    names = {"units": "units", "batch_size": "batch", "dropout": "dropout", "epochs": "epochs"}
    parts = []
    for k in SETTING_KEYS:
        v = fig["setting"].get(k)
        if v is not None:
            parts.append(f"{names[k]} {v:g}" if isinstance(v, (int, float)) else f"{names[k]} {v}")
    arch = fig["arch"] or "not built here"
    return f"{arch}" + (f", {', '.join(parts)}" if parts else "")


def significance_text(report: DatasetReport) -> str:
    return (f"Significance: {stats.METHOD} (m = {report.n_tested}), at alpha = {report.alpha:g}. "
            f"\"{stats.TIE}\": not significantly different from the best (Holm-adjusted p > {report.alpha:g}); "
            f"\"{stats.WORSE}\": significantly below it; \"{stats.UNTESTABLE}\": fewer than 2 finished repeats, "
            "cannot be tested.")


def csv_records(report: DatasetReport) -> list[dict]:
    return [{
        "dataset": r.dataset, "data": plots.data_label(r.synthetic), "rank": r.rank, "arch": r.arch,
        "units": r.units, "batch_size": r.batch_size, "dropout": f"{r.dropout:g}", "epochs": r.epochs, "n": r.summary.n,
        "n_failed": r.n_failed, "accuracy": accuracy_text(r.summary), "mean_pct": pct(r.summary.mean),
        "std_pct": pct(r.summary.std), "min_pct": pct(r.summary.min), "max_pct": pct(r.summary.max),
        "vs_best": r.comparison.verdict if r.comparison else "",
        "p_welch": "" if r.comparison is None or r.comparison.p_value is None else f"{r.comparison.p_value:.6g}",
        "p_holm": "" if r.comparison is None or r.comparison.p_holm is None else f"{r.comparison.p_holm:.6g}",
        "published": "; ".join(figure_text(f) for f in r.published), "config": r.key,
        "mlflow_parent_run_id": r.parent_run_id or "",
    } for r in report.rows]


def csv_text(reports: list[DatasetReport]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for report in reports:
        writer.writerows(csv_records(report))
    return buf.getvalue()


def md_title(reports: list[DatasetReport]) -> str:
    synthetic = any(r.synthetic for r in reports)
    head = "# seqsweep comparison" + (" — SYNTHETIC data" if synthetic else "") + "\n\n"
    if synthetic:
        head += ("> **SYNTHETIC**: results marked SYNTHETIC come from generated sample data, not the official "
                 "archives; they say nothing about the models.\n\n")
    return head + ("Test accuracy of each configuration over its repeats: mean (+/- sample standard deviation), "
                   "in percent; the std is n/a with fewer than 2 finished repeats. Ranked within each dataset, "
                   "best mean first. Plots: `dvc plots show` (data in metrics/plots/); the same table and plots "
                   "are attached to a `summary` run per dataset in MLflow.\n\n")


def md_section(report: DatasetReport) -> str:
    ds = report.dataset.upper()
    out = [f"## {ds} — {plots.data_label(report.synthetic)}\n"]
    if not report.rows:
        return out[0] + "\nNo architecture trained.\n"
    if report.best is not None:
        b = report.best
        out.append(f"Best: **{b.label}**, {accuracy_text(b.summary)}, n = {b.summary.n}.\n")
    else:
        out.append("Best: none (no configuration has a finished repeat).\n")
    out.append(significance_text(report) + "\n")
    header = ["rank", "arch", "units", "batch", "dropout", "epochs", "n", "n_failed", "accuracy % (mean +/- std)",
              "min %", "max %", f"vs best (Welch, Holm, alpha={report.alpha:g})", "published (reference study)"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(["---:", "---"] + ["---:"] * 9 + ["---", "---"]) + "|")
    for r in report.rows:
        s = r.summary
        cells = [r.rank, r.arch, r.units, r.batch_size, f"{r.dropout:g}", r.epochs, s.n, r.n_failed,
                 accuracy_text(s), pct(s.min), pct(s.max), verdict_text(r.comparison),
                 "; ".join(figure_text(f) for f in r.published)]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    if report.unmatched:
        out.append("\nPublished figures with no matching row here (a setting outside the grid, or unknown):\n")
        for f in report.unmatched:
            extra = f" (other runs: {', '.join(f['other_runs'])})" if f.get("other_runs") else ""
            out.append(f"- {setting_text(f)}: {figure_text(f)}{extra} — {f.get('source', '')}")
    failures = [(r, rep) for r in report.rows for rep in r.repeats if rep.get("status") != "FINISHED"]
    if failures:
        out.append(f"\nFailed repeats ({len(failures)}), counted in n_failed and left out of the statistics:\n")
        for r, rep in failures[:MAX_LISTED_FAILURES]:
            out.append(f"- {r.label} repeat {rep['repeat']}: {rep['status']}"
                       + (f" — {rep['reason']}" if rep.get("reason") else ""))
        if len(failures) > MAX_LISTED_FAILURES:
            out.append(f"- ... and {len(failures) - MAX_LISTED_FAILURES} more (see MLflow)")
    return "\n".join(out) + "\n"


def markdown(reports: list[DatasetReport]) -> str:
    return md_title(reports) + "\n".join(md_section(r) for r in reports)


def _config_doc(row: Row) -> dict:
    s = row.summary
    doc = {"config": row.key, "units": row.units, "batch_size": row.batch_size, "dropout": row.dropout,
           "epochs": row.epochs, "mean": s.mean, "std": s.std, "n": s.n, "n_failed": row.n_failed}
    if row.comparison is not None:
        doc["vs_best"] = row.comparison.verdict
        doc["p_holm"] = row.comparison.p_holm
    return doc


def dataset_summary(report: DatasetReport) -> dict:
    """Per architecture its best configuration; the dataset's overall best; the SYNTHETIC flag."""
    best = report.best
    return {
        "synthetic": report.synthetic,
        "data": plots.data_label(report.synthetic),
        "best": None if best is None else {"arch": best.arch, **_config_doc(best)},
        "n_configs": len(report.rows),
        "n_indistinguishable": sum(r.comparison is not None and r.comparison.verdict == stats.TIE for r in report.rows),
        "archs": {arch: _config_doc(row) for arch, row in report.best_per_arch().items()},
    }


def summary_doc(reports: list[DatasetReport], alpha: float) -> dict:
    synthetic = any(r.synthetic for r in reports)
    doc = {"synthetic": synthetic, "data": plots.data_label(synthetic), "alpha": alpha, "significance": "welch+holm"}
    doc.update({r.dataset: dataset_summary(r) for r in reports})
    return doc


# ---- MLflow ---------------------------------------------------------------------------------------

def log_summary_runs(reports: list[DatasetReport], params: dict) -> dict[str, str]:
    """Attach each dataset's table, summary and PNG plots to a `summary` run in its MLflow experiment;
    a rerun over the same table reuses that run. Returns the run id per dataset."""
    from seqsweep import tracking

    root = tracking.repo_root()
    tracker = tracking.Tracker(tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"], root), root)
    run_ids = {}
    for report in reports:
        table = csv_text([report])
        md = md_title([report]) + md_section(report)
        key = hashlib.sha256(f"summary|{report.dataset}|{report.alpha}|{table}".encode()).hexdigest()[:24]
        experiment_id = tracker.experiment_id(report.dataset)
        existing = tracker.find_runs(
            experiment_id, f"tags.{tracking.KEY_TAG} = '{key}' and tags.{tracking.KIND_TAG} = 'summary'")
        best = report.best
        tags = {"dvc_exp_name": os.environ.get("DVC_EXP_NAME"), "git_commit": tracking.git_commit(root),
                "data_synthetic": str(report.synthetic).lower(), "mlflow.note.content": md}
        if existing:
            run_id = existing[0].info.run_id
            with tracker.writing():
                tracker.client.update_run(run_id, status="RUNNING")
            tracker.set_tags(run_id, {k: v for k, v in tags.items() if v is not None})
        else:
            run_params = {"dataset": report.dataset, "data": plots.data_label(report.synthetic),
                          "alpha": report.alpha, "significance": "welch+holm", "archs": ",".join(report.archs),
                          "n_configs": len(report.rows), "best_config": best.label if best else None}
            run_id = tracker.start_run(experiment_id, "summary", key, "summary",
                                       {k: v for k, v in run_params.items() if v is not None}, tags)
        metrics = {"n_indistinguishable": dataset_summary(report)["n_indistinguishable"]}
        if best is not None:
            metrics.update(best_test_accuracy_mean=best.summary.mean, best_test_accuracy_std=best.summary.std,
                           best_n=best.summary.n)
        for arch, row in report.best_per_arch().items():
            metrics[f"{arch}/best_test_accuracy_mean"] = row.summary.mean
        tracker.log_metrics(run_id, metrics)
        with tempfile.TemporaryDirectory(prefix="seqsweep-summary-") as tmp:
            folder = Path(tmp)
            (folder / "comparison.md").write_text(md)
            (folder / "comparison.csv").write_text(table)
            (folder / "summary.json").write_text(json.dumps(dataset_summary(report), indent=2) + "\n")
            plots.write_pngs(folder / "plots", report)
            with tracker.writing():
                tracker.client.log_artifacts(run_id, str(folder))
        tracker.finish(run_id)
        run_ids[report.dataset] = run_id
    return run_ids


# ---- stage ----------------------------------------------------------------------------------------

def build_reports(params: dict) -> list[DatasetReport]:
    """Read every training stage's outputs (all of them first, so one message names every missing stage)."""
    figures = load_reference()
    missing: list[str] = []
    docs = {}
    for ds in paths.DATASETS:
        try:
            docs[ds] = load_training(ds)
        except MissingInputError as exc:
            missing.append(str(exc))
    if missing:
        raise MissingInputError("; ".join(missing))
    return [build_dataset(ds, docs[ds], params["report"]["alpha"], figures) for ds in paths.DATASETS]


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args:
        raise SeqsweepError(f"usage: python -m seqsweep.report (takes no arguments, got {args})")
    params = load_params()
    reports = build_reports(params)
    log_summary_runs(reports, params)
    with atomic.atomic_dir(plots.PLOTS_DIR) as tmp:
        plots.write_dvc_data(tmp, reports)
    atomic.write_text(CSV_PATH, csv_text(reports))
    atomic.write_text(MD_PATH, markdown(reports))
    atomic.write_json(SUMMARY_PATH, summary_doc(reports, params["report"]["alpha"]))
    for r in reports:
        best = f"{r.best.label}, {accuracy_text(r.best.summary)}, n = {r.best.summary.n}" if r.best else "none"
        print(f"report: {r.dataset} ({plots.data_label(r.synthetic)}) best: {best}", file=sys.stderr)
    print(f"report: wrote {MD_PATH}, {CSV_PATH}, {SUMMARY_PATH} and {plots.PLOTS_DIR}/ (`dvc plots show`)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
