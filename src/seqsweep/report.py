"""Stage report: read every training stage's results and answer "which architecture and which
settings, by how much, and is the difference real?" in the repo (metrics/summary.json for
`dvc metrics show` and `dvc exp show`, metrics/comparison.md and .csv, metrics/plots/ for
`dvc plots show`) and in MLflow (a summary run per dataset holding the same table and plots).

    python -m seqsweep.report runs metrics

Failed repeats are counted (n_failed), never dropped; a std over fewer than 2 repeats is shown as
n/a, never 0; synthetic data is labelled SYNTHETIC wherever a result appears."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from seqsweep import atomic, paths, plots, record, stats, tracking
from seqsweep.errors import DataFormatError, MissingInputError, exit_on_error
from seqsweep.params import load_params
from seqsweep.record import read_dataset
from seqsweep.results import SETTING_KEYS, DatasetReport, Row, data_label

REFERENCE_FILE = Path(__file__).with_name("reference_results.yaml")
CSV_COLUMNS = [
    "dataset",
    "data",
    "rank",
    "arch",
    "units",
    "batch_size",
    "dropout",
    "epochs",
    "n",
    "n_failed",
    "accuracy",
    "mean_pct",
    "std_pct",
    "min_pct",
    "max_pct",
    "val_mean_pct",
    "val_std_pct",
    "selected_on",
    "ci95_low_pct",
    "ci95_high_pct",
    "vs_best",
    "p_welch",
    "p_holm",
    "diff_to_best_pct",
    "diff_ci95_low_pct",
    "diff_ci95_high_pct",
    "hedges_g",
    "published",
    "config",
    "mlflow_parent_run_id",
]
MAX_LISTED_FAILURES = 20


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


def build_dataset(dataset: str, runs_dir: Path, archs: list[str], alpha: float, figures: list[dict]) -> DatasetReport:
    """Rank the configurations of `dataset`, test each against the best, and set published figures beside them."""
    rows, classes, synthetic = read_dataset(runs_dir, dataset, archs)
    summaries = {r.uid: stats.summarise(r.scores) for r in rows}  # validation accuracy when there is a split
    rank = stats.ranks(summaries)
    best_uid = stats.best_of(summaries)
    comparisons = stats.compare_to_best({r.uid: r.scores for r in rows}, best_uid, alpha)
    for row in rows:
        row.rank = rank[row.uid]
        row.comparison = comparisons[row.uid]
        row.published = [f for f in figures if matches(f, row)]
    rows.sort(key=lambda r: (r.rank, stats.rank_key(summaries[r.uid]), r.arch, r.units, r.batch_size, r.dropout))
    used = {id(f) for r in rows for f in r.published}
    return DatasetReport(
        dataset,
        rows,
        alpha,
        synthetic=synthetic,
        classes=classes,
        archs=list(archs),
        best=next((r for r in rows if r.uid == best_uid), None),
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


def ci_text(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{pct(ci[0])}, {pct(ci[1])}]"


def difference_text(c: stats.Comparison | None) -> str:
    """`-1.234 [-2.345, -0.123], g = -1.10`: the difference to the best in points, its 95% interval, the effect size."""
    if c is None or c.diff is None:
        return ""
    g = "" if c.hedges_g is None else f", g = {c.hedges_g:.2f}"
    return f"{100 * c.diff:+.3f} {ci_text(c.diff_ci)}{g}"


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
    on = "validation accuracy" if report.validation else "test accuracy"
    return (
        f"Significance, on {on}: {stats.METHOD} (m = {report.n_tested}), at alpha = {report.alpha:g}. "
        f'"{stats.TIE}": not significantly different from the best (Holm-adjusted p > {report.alpha:g}); '
        f'"{stats.WORSE}": significantly below it; "{stats.UNTESTABLE}": fewer than 2 finished repeats, '
        "cannot be tested. Uncertainty: 95% bootstrap intervals (BCa, 9999 resamples) of each mean and of "
        "its difference to the best; an interval of the difference that excludes 0 is a real gap, and "
        "Hedges' g gives its size in pooled standard deviations (|g| about 0.2 small, 0.8 large)."
    )


def csv_records(report: DatasetReport) -> list[dict]:
    return [
        {
            "dataset": r.dataset,
            "data": data_label(r.synthetic),
            "rank": r.rank,
            "arch": r.arch,
            "units": r.units,
            "batch_size": r.batch_size,
            "dropout": f"{r.dropout:g}",
            "epochs": r.epochs,
            "n": r.summary.n,
            "n_failed": r.n_failed,
            "accuracy": accuracy_text(r.summary),
            "mean_pct": pct(r.summary.mean),
            "std_pct": pct(r.summary.std),
            "min_pct": pct(r.summary.min),
            "max_pct": pct(r.summary.max),
            "val_mean_pct": pct(r.val_summary.mean) if r.validation else "",
            "val_std_pct": pct(r.val_summary.std) if r.validation else "",
            "selected_on": r.selected_on,
            "ci95_low_pct": pct(r.ci[0]) if r.ci else "n/a",
            "ci95_high_pct": pct(r.ci[1]) if r.ci else "n/a",
            "vs_best": r.comparison.verdict if r.comparison else "",
            "p_welch": "" if r.comparison is None or r.comparison.p_value is None else f"{r.comparison.p_value:.6g}",
            "p_holm": "" if r.comparison is None or r.comparison.p_holm is None else f"{r.comparison.p_holm:.6g}",
            "diff_to_best_pct": "" if r.comparison is None or r.comparison.diff is None else pct(r.comparison.diff),
            "diff_ci95_low_pct": pct(r.comparison.diff_ci[0]) if r.comparison and r.comparison.diff_ci else "",
            "diff_ci95_high_pct": pct(r.comparison.diff_ci[1]) if r.comparison and r.comparison.diff_ci else "",
            "hedges_g": "" if r.comparison is None or r.comparison.hedges_g is None else f"{r.comparison.hedges_g:.3f}",
            "published": "; ".join(figure_text(f) for f in r.published),
            "config": r.key,
            "mlflow_parent_run_id": r.parent_run_id or "",
        }
        for r in report.rows
    ]


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
        head += (
            "> **SYNTHETIC**: results marked SYNTHETIC come from generated sample data, not the official "
            "archives; they say nothing about the models.\n\n"
        )
    return head + (
        "Test accuracy of each configuration over its repeats: mean (+/- sample standard deviation), "
        "in percent; the std is n/a with fewer than 2 finished repeats. Ranked within each dataset, "
        "best mean first (of validation accuracy, where a validation split was held out). Plots: "
        "`dvc plots show` (data in metrics/plots/); the same table and plots "
        "are attached to a `summary` run per dataset in MLflow.\n\n"
    )


def md_section(report: DatasetReport) -> str:
    ds = report.dataset.upper()
    out = [f"## {ds} — {data_label(report.synthetic)}\n"]
    if not report.rows:
        return out[0] + "\nNo architecture trained.\n"
    if report.best is not None and report.validation:
        b, v = report.best, report.validation
        out.append(
            f"Chosen on validation: **{b.label}**, validation accuracy {accuracy_text(b.val_summary)}; "
            f"test accuracy {accuracy_text(b.summary)}, n = {b.summary.n}.\n"
        )
        out.append(
            f"Ranked by mean validation accuracy on {v['n_val']} training windows held out "
            f"({100 * v['share']:g}% asked; {v['held_out']}); the test set was never used to choose, so the "
            "chosen configuration's test accuracy is an unbiased estimate.\n"
        )
    elif report.best is not None:
        b = report.best
        out.append(f"Best: **{b.label}**, {accuracy_text(b.summary)}, n = {b.summary.n}.\n")
        out.append(
            "The best is chosen on the test accuracy it reports, so its figure is optimistic (the winner of "
            "many noisy comparisons); to choose on a held-out validation split instead: "
            "`dvc exp run -S train.validation=0.2`.\n"
        )
    else:
        out.append("Best: none (no configuration has a finished repeat).\n")
    out.append(significance_text(report) + "\n")
    header = [
        "rank",
        "arch",
        "units",
        "batch",
        "dropout",
        "epochs",
        "n",
        "n_failed",
        *(["validation accuracy % (mean +/- std)"] if report.validation else []),
        "accuracy % (mean +/- std)",
        "95% CI of the mean %",
        "min %",
        "max %",
        f"vs best{' on validation' if report.validation else ''} (Welch, Holm, alpha={report.alpha:g})",
        f"difference to best{' on validation' if report.validation else ''}, points [95% CI], Hedges' g",
        "published (reference study)",
    ]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(["---:", "---"] + ["---:"] * (len(header) - 5) + ["---", "---", "---"]) + "|")
    for r in report.rows:
        s = r.summary
        cells = [
            f"{r.rank} (chosen)" if report.validation and r is report.best else r.rank,
            r.arch,
            r.units,
            r.batch_size,
            f"{r.dropout:g}",
            r.epochs,
            s.n,
            r.n_failed,
            *([accuracy_text(r.val_summary)] if report.validation else []),
            accuracy_text(s),
            ci_text(r.ci),
            pct(s.min),
            pct(s.max),
            verdict_text(r.comparison),
            difference_text(r.comparison),
            "; ".join(figure_text(f) for f in r.published),
        ]
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
            out.append(
                f"- {r.label} repeat {rep['repeat']}: {rep['status']}"
                + (f" — {rep['reason']}" if rep.get("reason") else "")
            )
        if len(failures) > MAX_LISTED_FAILURES:
            out.append(f"- ... and {len(failures) - MAX_LISTED_FAILURES} more (see MLflow)")
    return "\n".join(out) + "\n"


def markdown(reports: list[DatasetReport]) -> str:
    return md_title(reports) + "\n".join(md_section(r) for r in reports)


def _best_doc(row: Row) -> dict:
    s = row.summary
    doc = {"config": row.setting, "test_accuracy_mean": s.mean, "test_accuracy_std": s.std, "n": s.n}
    if row.validation:
        doc["val_accuracy_mean"] = row.val_summary.mean
    return doc


def metrics_doc(reports: list[DatasetReport]) -> dict:
    """What `dvc metrics show` / `dvc exp show` compare across experiments, and nothing else: per
    dataset and architecture its best configuration's test accuracy (mean, sample std, n finished
    repeats; with a validation split its mean validation accuracy too) and which configuration that
    is; per dataset the overall best; whether the data is synthetic and what the best was chosen on.
    Its size depends on the architectures, never on the grid."""
    synthetic = any(r.synthetic for r in reports)
    doc: dict = {"data": data_label(synthetic)}
    doc["selected_on"] = "validation" if any(r.validation for r in reports) else "test"
    for report in reports:
        doc[report.dataset] = {arch: _best_doc(row) for arch, row in report.best_per_arch().items()}
    doc["best"] = {r.dataset: {"arch": r.best.arch, **_best_doc(r.best)} for r in reports if r.best is not None}
    return doc


def parent_note(row: Row, report: DatasetReport) -> str:
    """A configuration's result in one line, as its parent run's description in the MLflow UI: e.g.
    `90.29 +/- 1.01 % test accuracy over 10 repeats (95% CI 89.63-90.89), rank 2 of 3 in har`."""
    s, where = row.summary, f"rank {row.rank} of {len(report.rows)} in {report.dataset}"
    if report.validation:
        where += " by validation accuracy" + (" (chosen)" if row is report.best else "")
    elif row is report.best:
        where += " (best)"
    if s.n == 0:
        text = f"no finished repeat, {where}"
    else:
        std = "n/a" if s.std is None else f"{100 * s.std:.2f}"
        text = f"{100 * s.mean:.2f} +/- {std} % test accuracy over {s.n} repeat{'s' * (s.n != 1)}"
        if row.ci:
            text += f" (95% CI {100 * row.ci[0]:.2f}-{100 * row.ci[1]:.2f})"
        if report.validation:
            text += f", validation {100 * row.val_summary.mean:.2f} %"
        text += f", {where}"
    if row.n_failed:
        text += f"; {row.n_failed} failed"
    return text + (" [SYNTHETIC data]" if row.synthetic else "")


def n_indistinguishable(report: DatasetReport) -> int:
    return sum(r.comparison is not None and r.comparison.verdict == stats.TIE for r in report.rows)


# ---- MLflow ---------------------------------------------------------------------------------------


def log_summary_runs(reports: list[DatasetReport], params: dict) -> dict[str, str]:
    """Attach each dataset's table, summary and PNG plots to a `summary` run in its MLflow experiment;
    a rerun over the same table reuses that run. Returns the experiment id per dataset."""
    root = tracking.repo_root()
    tracker = tracking.Tracker(tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"], root), root)
    experiments = {}
    for report in reports:
        table = csv_text([report])
        md = md_title([report]) + md_section(report)
        key = hashlib.sha256(f"summary|{report.dataset}|{report.alpha}|{table}".encode()).hexdigest()[:24]
        experiment_id = tracker.experiment_id(report.dataset)
        existing = tracker.find_runs(
            experiment_id, f"tags.{record.KEY_TAG} = '{key}' and tags.{record.KIND_TAG} = 'summary'"
        )
        best = report.best
        tags = {
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
            "git_commit": tracking.git_commit(root),
            "data_synthetic": str(report.synthetic).lower(),
            "mlflow.note.content": md,
        }
        if existing:
            run_id = existing[0].info.run_id
            with tracker.writing():
                tracker.client.update_run(run_id, status="RUNNING")
            tracker.set_tags(run_id, {k: v for k, v in tags.items() if v is not None})
        else:
            run_params = {
                "dataset": report.dataset,
                "data": data_label(report.synthetic),
                "alpha": report.alpha,
                "significance": "welch+holm",
                "selected_on": "validation" if report.validation else "test",
                "archs": ",".join(report.archs),
                "n_configs": len(report.rows),
                "best_config": best.label if best else None,
            }
            run_id = tracker.start_run(
                experiment_id, "summary", key, "summary", {k: v for k, v in run_params.items() if v is not None}, tags
            )
        metrics = {"n_indistinguishable": n_indistinguishable(report)}
        if best is not None:
            metrics.update(
                best_test_accuracy_mean=best.summary.mean,
                best_test_accuracy_std=best.summary.std,
                best_n=best.summary.n,
            )
            if report.validation:
                metrics["best_val_accuracy_mean"] = best.val_summary.mean
        # (no per-architecture metrics here: the UI's chart view makes a section per metric prefix, and
        # each held one bar of this run above the parents' charts; the table and plots below have them)
        tracker.log_metrics(run_id, metrics)
        with tempfile.TemporaryDirectory(prefix="seqsweep-summary-") as tmp:
            folder = Path(tmp)
            (folder / "comparison.md").write_text(md)
            (folder / "comparison.csv").write_text(table)
            (folder / "summary.json").write_text(json.dumps(metrics_doc([report]), indent=2) + "\n")
            plots.write_pngs(
                folder / "plots",
                report,
                plots.plot_definitions(),
                paths.PLOT_TEMPLATES_DIR,
                rev=os.environ.get("DVC_EXP_NAME") or "workspace",
            )
            with tracker.writing():
                tracker.client.log_artifacts(run_id, str(folder))
        tracker.finish(run_id)
        describe_parents(tracker, experiment_id, report)
        experiments[report.dataset] = experiment_id
    return experiments


def describe_parents(tracker: tracking.Tracker, experiment_id: str, report: DatasetReport) -> None:
    """Write each configuration's result and rank as its parent run's description (parent_note)."""
    parents = {
        run.info.run_id: run.data.tags.get(tracking.NOTE_TAG)
        for run in tracker.find_runs(experiment_id, f"tags.{record.KIND_TAG} = 'parent'")
    }
    for row in report.rows:
        note = parent_note(row, report)
        if row.parent_run_id in parents and parents[row.parent_run_id] != note:
            tracker.set_tags(row.parent_run_id, {tracking.NOTE_TAG: note})


# ---- stage ----------------------------------------------------------------------------------------


def build_reports(runs_dir: Path, params: dict) -> list[DatasetReport]:
    """Read every training stage's results (all of them first, so one message names every missing
    stage); a dataset whose archs list is empty is not part of the study and not reported."""
    figures = load_reference()
    reports, missing = [], []
    for ds in (ds for ds in paths.DATASETS if params["archs"][ds]):
        try:
            reports.append(build_dataset(ds, runs_dir, params["archs"][ds], params["report"]["alpha"], figures))
        except MissingInputError as exc:
            missing.append(str(exc))
    if missing:
        raise MissingInputError("; ".join(missing))
    return reports


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seqsweep.report", description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the training stages' results (e.g. runs/)")
    parser.add_argument("out", type=Path, help="where to write summary.json, comparison.{md,csv} and plots/")
    args = parser.parse_args(argv)
    params = load_params()
    reports = build_reports(args.runs, params)
    with tracking.store_errors(tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"])):
        experiments = log_summary_runs(reports, params)
    summary, md, table, plot_dir = (
        args.out / name for name in ("summary.json", "comparison.md", "comparison.csv", "plots")
    )
    with atomic.atomic_dir(plot_dir) as tmp:
        plots.write_dvc_data(tmp, reports, left_out=tuple(ds for ds in paths.DATASETS if not params["archs"][ds]))
    atomic.write_text(table, csv_text(reports))
    atomic.write_text(md, markdown(reports))
    atomic.write_json(summary, metrics_doc(reports))
    for r in reports:
        best = f"{r.best.label}, {accuracy_text(r.best.summary)}, n = {r.best.summary.n}" if r.best else "none"
        print(f"report: {r.dataset} ({data_label(r.synthetic)}) best: {best}", file=sys.stderr)
    print(f"report: wrote {md}, {table}, {summary} and {plot_dir}/ (`dvc plots show`)", file=sys.stderr)
    for dataset, experiment_id in experiments.items():
        print(
            f"report: MLflow runs of {dataset}: {tracking.runs_link(experiment_id)} "
            "(with `mlflow ui` running; see the README)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
