"""Stage train@<dataset>-<arch>: train every configuration of the grid `repeats` times, log each
repeat to MLflow, and write metrics/train/<dataset>-<arch>.json (DVC metrics) plus a details file
(per-epoch curves and confusion matrices) for the report.

Resumable: a repeat whose MLflow child run already FINISHED (or FAILED on NaN) under the same reuse
key (data digest, code digest, Keras version and backend, configuration, seed) is not trained again."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqsweep import atomic, grid, paths, tracking
from seqsweep.errors import MissingInputError, ParamsError, SeqsweepError, exit_on_error
from seqsweep.models import ARCHS
from seqsweep.params import load_params

PACKAGE_DIR = Path(__file__).resolve().parent
HISTORY_TAG = "seqsweep_history"
CONFUSION_TAG = "seqsweep_confusion"


def code_files(dataset: str) -> list[Path]:
    """The source files that decide a repeat's result; their digest is part of every reuse key."""
    return [PACKAGE_DIR / p for p in ("repeat.py", "grid.py", "models/__init__.py", f"models/{dataset}.py")]


def digest_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def metrics_path(dataset: str, arch: str) -> Path:
    return paths.TRAIN_METRICS_DIR / f"{dataset}-{arch}.json"


def details_path(dataset: str, arch: str) -> Path:
    return paths.TRAIN_METRICS_DIR / f"{dataset}-{arch}.details.json"


def load_prepared(dataset: str) -> tuple[dict[str, np.ndarray], dict, list[Path]]:
    """The prepared arrays and meta.json of `dataset`; a missing file names the stage that makes it."""
    folder = paths.prepared_dir(dataset)
    files = [folder / f"{name}.npy" for name in paths.PREPARED_ARRAYS] + [folder / "meta.json"]
    for path in files:
        if not path.is_file():
            raise MissingInputError(f"{path} is missing: run `dvc repro prepare@{dataset}` first")
    arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in paths.PREPARED_ARRAYS}
    return arrays, json.loads((folder / "meta.json").read_text()), files


def configure_backend(deterministic: bool) -> None:
    """Set, before Keras is imported, the switches for deterministic kernels and quiet logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A new model per repeat makes TensorFlow warn about retracing; expected here, so only errors show.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if deterministic:
        os.environ["TF_DETERMINISTIC_OPS"] = "1"
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_deterministic_ops=true").strip()


def summarise(accuracies: list[float]) -> dict:
    """n, mean, std (sample, ddof=1; undefined for n < 2), min, max of the finished repeats."""
    a = np.asarray(accuracies, dtype=np.float64)
    return {
        "n": int(a.size),
        "mean": float(a.mean()) if a.size else None,
        "std": float(a.std(ddof=1)) if a.size > 1 else None,
        "min": float(a.min()) if a.size else None,
        "max": float(a.max()) if a.size else None,
    }


def _key(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


@dataclass
class Sweep:
    """What every repeat of one (dataset, architecture) grid shares."""

    dataset: str
    arch: str
    arrays: dict[str, np.ndarray]
    shape: dict
    train_params: dict
    tracker: tracking.Tracker
    experiment_id: str
    tags: dict


def train_arch(dataset: str, arch: str, params: dict) -> dict:
    """Run the grid for one (dataset, architecture); returns the metrics document."""
    arrays, meta, data_files = load_prepared(dataset)
    train_params = params["train"]
    configure_backend(train_params["deterministic"])

    import keras
    from tqdm import tqdm

    from seqsweep import models, repeat

    configs = grid.expand(params, models.dataset_module(dataset).EPOCHS[arch])
    repeats = train_params["repeats"]
    shape = repeat.shape_kwargs(dataset, meta, arrays["X_train"])
    data_digest = digest_files(data_files)
    code_digest = digest_files(code_files(dataset))
    runtime = f"keras-{keras.__version__}-{keras.backend.backend()}-det{int(train_params['deterministic'])}"
    synthetic = not meta.get("official", False)

    root = tracking.repo_root()
    tracker = tracking.Tracker(tracking.resolve_tracking_uri(params["mlflow"]["tracking_uri"], root), root)
    common_tags = {
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
        "git_commit": tracking.git_commit(root),
        "data_digest": data_digest,
        "code_digest": code_digest,
        "runtime": runtime,
        "data_synthetic": str(synthetic).lower(),
    }
    sweep = Sweep(dataset, arch, arrays, shape, train_params, tracker, tracker.experiment_id(dataset), common_tags)
    experiment_id = sweep.experiment_id

    configs_doc, details_doc = {}, {}
    logging_seconds = train_seconds = 0.0
    progress = tqdm(total=len(configs) * repeats, desc=f"train {dataset}-{arch}", unit="repeat",
                    file=sys.stderr, dynamic_ncols=True)
    for index, config in enumerate(configs):
        base = {"dataset": dataset, "arch": arch, **config.as_params()}
        parent_key = _key(dataset, arch, config.key, data_digest, code_digest, runtime, train_params["seed"])
        t0 = time.perf_counter()
        parent_id = tracker.open_parent(experiment_id, f"{arch} {config.key}", parent_key, base, common_tags)
        children = tracker.children(experiment_id, parent_id)
        tracker.retire_stale(children)
        done = {c.data.tags.get(tracking.KEY_TAG): c for c in children if c.info.status in ("FINISHED", "FAILED")}
        logging_seconds += time.perf_counter() - t0

        rows, curves = [], []
        for r in range(repeats):
            progress.set_postfix_str(f"config {index + 1}/{len(configs)} {config.key} repeat {r + 1}/{repeats}")
            seed = grid.repeat_seed(train_params["seed"], dataset, arch, config, r)
            run_key = _key(parent_key, r, seed)
            previous = done.get(run_key)
            if previous is not None:
                row, curve = _reused(previous, r, seed)
            else:
                row, curve, seconds, logged = _train_one(sweep, parent_id, run_key, base, config, r, seed)
                train_seconds += seconds
                logging_seconds += logged
            rows.append(row)
            curves.append(curve)
            progress.update(1)

        finished = [row["test_accuracy"] for row in rows if row["status"] == "FINISHED"]
        stats = summarise(finished)
        n_failed = sum(row["status"] != "FINISHED" for row in rows)
        t0 = time.perf_counter()
        tracker.log_metrics(parent_id, {
            "test_accuracy_mean": stats["mean"], "test_accuracy_std": stats["std"],
            "test_accuracy_min": stats["min"], "test_accuracy_max": stats["max"],
            "n_finished": stats["n"], "n_failed": n_failed,
        })
        tracker.finish(parent_id, "FINISHED" if finished else "FAILED",
                       None if finished else "no repeat of this configuration finished")
        logging_seconds += time.perf_counter() - t0
        configs_doc[config.key] = {**config.as_params(), **stats, "n_failed": n_failed,
                                   "mlflow_parent_run_id": parent_id, "repeats": rows}
        details_doc[config.key] = curves
    progress.close()

    overhead = logging_seconds / train_seconds if train_seconds else None
    return {
        "dataset": dataset, "arch": arch, "synthetic": synthetic, "data_digest": data_digest,
        "code_digest": code_digest, "runtime": runtime, "repeats": repeats, "configs": configs_doc,
        "timing": {"train_seconds": round(train_seconds, 3), "mlflow_seconds": round(logging_seconds, 3),
                   "mlflow_overhead": None if overhead is None else round(overhead, 5)},
    }, {"dataset": dataset, "arch": arch, "classes": meta.get("classes"), "configs": details_doc}


def _reused(run, r: int, seed: int):
    """A finished or failed repeat read back from its MLflow child run."""
    status = run.info.status
    acc = run.data.metrics.get("test_accuracy") if status == "FINISHED" else None
    row = {"repeat": r, "seed": seed, "status": status, "test_accuracy": acc, "mlflow_run_id": run.info.run_id,
           "reused": True}
    if status != "FINISHED":
        row["reason"] = run.data.tags.get("failure_reason")
    curve = {"repeat": r, "history": json.loads(run.data.tags.get(HISTORY_TAG, "{}")),
             "confusion": json.loads(run.data.tags.get(CONFUSION_TAG, "null"))}
    return row, curve


def _train_one(sweep: Sweep, parent_id: str, run_key: str, base: dict, config: grid.Config, r: int, seed: int):
    """Train one repeat inside its own MLflow child run; a NaN loss marks the run FAILED with the reason.
    Returns the metrics row, the curves, the seconds spent in fit and the seconds spent logging."""
    from seqsweep import repeat  # imports Keras: only after configure_backend()

    tracker = sweep.tracker
    t0 = time.perf_counter()
    run_id = tracker.start_run(sweep.experiment_id, f"{sweep.arch} {config.key} r{r}", run_key, "repeat",
                               {**base, "repeat": r, "seed": seed}, sweep.tags, parent_id=parent_id)
    logged = time.perf_counter() - t0
    before = tracker.seconds
    try:
        result = repeat.run_repeat(
            sweep.dataset, sweep.arch, config, seed, sweep.arrays, sweep.shape,
            callbacks=[tracking.epoch_logger(tracker, run_id)], verbose=sweep.train_params["verbose"],
            keep_model=sweep.train_params["save_model"],
        )
    except BaseException as exc:
        tracker.finish(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED",
                       f"{type(exc).__name__}: {exc}")
        raise
    logged += tracker.seconds - before
    t0 = time.perf_counter()
    history = json.dumps(result.history, separators=(",", ":"))
    row = {"repeat": r, "seed": seed, "status": "FINISHED" if result.failure is None else "FAILED",
           "test_accuracy": result.test_accuracy, "mlflow_run_id": run_id, "reused": False}
    tags = {HISTORY_TAG: history}
    if result.failure is None:
        tags[CONFUSION_TAG] = json.dumps(result.confusion, separators=(",", ":"))
        tracker.log_metrics(run_id, {"test_accuracy": result.test_accuracy, "test_loss": result.test_loss,
                                     "train_seconds": result.train_seconds})
        if result.model is not None:
            tracker.log_model(run_id, result.model)
    else:
        row["reason"] = result.failure
        tracker.log_metrics(run_id, {"train_seconds": result.train_seconds})
    tracker.set_tags(run_id, tags)
    tracker.finish(run_id, row["status"], result.failure)
    logged += time.perf_counter() - t0
    return row, {"repeat": r, "history": result.history, "confusion": result.confusion}, result.train_seconds, logged


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SeqsweepError("usage: python -m seqsweep.train <dataset> <arch>")
    dataset, arch = args
    if dataset not in ARCHS:
        raise ParamsError(f"unknown dataset {dataset!r}; expected one of {list(ARCHS)}")
    if arch not in ARCHS[dataset]:
        raise ParamsError(f"unknown architecture {arch!r} for {dataset}; expected one of {list(ARCHS[dataset])}")
    params = load_params()
    if arch not in params["archs"][dataset]:
        doc = {"dataset": dataset, "arch": arch, "skipped": f"not listed in archs.{dataset}", "configs": {}}
        atomic.write_json(metrics_path(dataset, arch), doc)
        atomic.write_json(details_path(dataset, arch), {"dataset": dataset, "arch": arch, "configs": {}})
        print(f"train@{dataset}-{arch}: skipped (not listed in archs.{dataset})", file=sys.stderr)
        return
    metrics, details = train_arch(dataset, arch, params)
    atomic.write_json(details_path(dataset, arch), details)
    atomic.write_json(metrics_path(dataset, arch), metrics)
    empty = [key for key, c in metrics["configs"].items() if c["n"] == 0]
    timing = metrics["timing"]
    if timing["mlflow_overhead"] is not None:
        print(f"train@{dataset}-{arch}: MLflow logging took {timing['mlflow_seconds']:.2f} s, "
              f"{100 * timing['mlflow_overhead']:.2f}% of {timing['train_seconds']:.1f} s training", file=sys.stderr)
    if empty:
        raise SeqsweepError(f"train@{dataset}-{arch}: no repeat finished for configuration(s) {', '.join(empty)} "
                            f"(see failure_reason in MLflow; metrics written to {metrics_path(dataset, arch)})")


if __name__ == "__main__":
    main()
