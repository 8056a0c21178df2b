"""Stage train-<dataset>@<arch>: train every configuration of the grid `train.repeats` times, log each
repeat to MLflow, and write runs/<dataset>-<arch>.json: per configuration n, mean, std, min, max and
n_failed of test accuracy, and every repeat's accuracy, seed, status, learning curves and confusion
matrix (the report reads it; the format is documented in seqsweep.results).

    python -m seqsweep.train <dataset> <arch> <prepared folder> <run file>

Resumable: a repeat whose MLflow child run already FINISHED (or FAILED on NaN) under the same reuse
key (data digest, code digest, Keras version and backend, configuration, seed) is not trained again."""

from __future__ import annotations

import argparse
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
from seqsweep.errors import MissingInputError, SeqsweepError, exit_on_error
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


def load_prepared(folder: Path, dataset: str) -> tuple[dict[str, np.ndarray], dict]:
    """The prepared arrays and meta.json in `folder`; a missing file names the stage that makes it."""
    folder = Path(folder)
    for path in [*prepared_files(folder).values(), folder / "meta.json"]:
        if not path.is_file():
            raise MissingInputError(f"{path} is missing: run `dvc repro prepare-{dataset}` first")
    arrays = {name: np.load(path, allow_pickle=False) for name, path in prepared_files(folder).items()}
    return arrays, json.loads((folder / "meta.json").read_text())


def prepared_files(folder: Path) -> dict[str, Path]:
    return {name: Path(folder) / f"{name}.npy" for name in paths.PREPARED_ARRAYS}


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
    inputs: list


def train_arch(dataset: str, arch: str, prepared: Path, params: dict) -> dict:
    """Run the grid for one (dataset, architecture); returns the run file's document."""
    arrays, meta = load_prepared(prepared, dataset)
    files = prepared_files(prepared)
    train_params = params["train"]
    configure_backend(train_params["deterministic"])

    import keras
    from tqdm import tqdm

    from seqsweep import models, repeat

    architecture = models.get(dataset, arch)
    configs = grid.expand(params, architecture.epochs)
    repeats = train_params["repeats"]
    shape = repeat.shape_kwargs(dataset, meta, arrays["X_train"])
    data_digest = digest_files([*files.values(), Path(prepared) / "meta.json"])
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
    inputs = tracking.dataset_inputs(
        dataset,
        params["data"][dataset]["url"],
        synthetic,
        train=(arrays["X_train"], arrays["y_train"], digest_files([files["X_train"], files["y_train"]])),
        test=(arrays["X_test"], arrays["y_test"], digest_files([files["X_test"], files["y_test"]])),
    )
    experiment_id = tracker.experiment_id(dataset)
    sweep = Sweep(dataset, arch, arrays, shape, train_params, tracker, experiment_id, common_tags, inputs)

    configs_doc = {}
    logging_seconds = train_seconds = 0.0
    progress = tqdm(
        total=len(configs) * repeats, desc=f"train-{dataset}@{arch}", unit="repeat", file=sys.stderr, dynamic_ncols=True
    )
    for index, config in enumerate(configs):
        base = {"dataset": dataset, "arch": arch, **config.as_params()}
        parent_key = _key(dataset, arch, config.key, data_digest, code_digest, runtime, train_params["seed"])
        t0 = time.perf_counter()
        parent_id = tracker.open_parent(experiment_id, f"{arch} {config.key}", parent_key, base, common_tags)
        tracker.log_inputs(parent_id, inputs)
        children = tracker.children(experiment_id, parent_id)
        tracker.retire_stale(children)
        done = {c.data.tags.get(tracking.KEY_TAG): c for c in children if c.info.status in ("FINISHED", "FAILED")}
        logging_seconds += time.perf_counter() - t0

        rows = []
        for r in range(repeats):
            progress.set_postfix_str(f"config {index + 1}/{len(configs)} {config.key} repeat {r + 1}/{repeats}")
            seed = grid.repeat_seed(train_params["seed"], dataset, arch, config, r)
            run_key = _key(parent_key, r, seed)
            previous = done.get(run_key)
            if previous is not None:
                row = _reused(previous, r, seed)
            else:
                row, seconds, logged = _train_one(sweep, parent_id, run_key, base, config, r, seed)
                train_seconds += seconds
                logging_seconds += logged
            rows.append(row)
            progress.update(1)

        finished = [row["test_accuracy"] for row in rows if row["status"] == "FINISHED"]
        stats = summarise(finished)
        n_failed = sum(row["status"] != "FINISHED" for row in rows)
        t0 = time.perf_counter()
        tracker.log_metrics(
            parent_id,
            {
                "test_accuracy_mean": stats["mean"],
                "test_accuracy_std": stats["std"],
                "test_accuracy_min": stats["min"],
                "test_accuracy_max": stats["max"],
                "n_finished": stats["n"],
                "n_failed": n_failed,
            },
        )
        tracker.finish(
            parent_id,
            "FINISHED" if finished else "FAILED",
            None if finished else "no repeat of this configuration finished",
        )
        logging_seconds += time.perf_counter() - t0
        configs_doc[config.key] = {
            **config.as_params(),
            **stats,
            "n_failed": n_failed,
            "mlflow_parent_run_id": parent_id,
            "repeats": rows,
        }
    progress.close()

    overhead = logging_seconds / train_seconds if train_seconds else None
    return {
        "dataset": dataset,
        "arch": arch,
        "synthetic": synthetic,
        "classes": meta.get("classes"),
        "data_digest": data_digest,
        "code_digest": code_digest,
        "runtime": runtime,
        "repeats": repeats,
        "timing": {
            "train_seconds": round(train_seconds, 3),
            "mlflow_seconds": round(logging_seconds, 3),
            "mlflow_overhead": None if overhead is None else round(overhead, 5),
        },
        "configs": configs_doc,
    }


def _reused(run, r: int, seed: int) -> dict:
    """A finished or failed repeat read back from its MLflow child run."""
    status = run.info.status
    row = {
        "repeat": r,
        "seed": seed,
        "status": status,
        "test_accuracy": run.data.metrics.get("test_accuracy") if status == "FINISHED" else None,
        "mlflow_run_id": run.info.run_id,
        "reused": True,
    }
    if status != "FINISHED":
        row["reason"] = run.data.tags.get(tracking.REASON_TAG)
    row["history"] = json.loads(run.data.tags.get(HISTORY_TAG, "{}"))
    row["confusion"] = json.loads(run.data.tags.get(CONFUSION_TAG, "null"))
    return row


def _train_one(sweep: Sweep, parent_id: str, run_key: str, base: dict, config: grid.Config, r: int, seed: int):
    """Train one repeat inside its own MLflow child run; a NaN loss marks the run FAILED with the reason.
    Returns the repeat's row, the seconds spent in fit and the seconds spent logging."""
    from seqsweep import repeat  # imports Keras: only after configure_backend()

    tracker = sweep.tracker
    t0 = time.perf_counter()
    run_id = tracker.start_run(
        sweep.experiment_id,
        f"{sweep.arch} {config.key} r{r}",
        run_key,
        "repeat",
        {**base, "repeat": r, "seed": seed},
        sweep.tags,
        parent_id=parent_id,
    )
    tracker.log_inputs(run_id, sweep.inputs)
    logged = time.perf_counter() - t0
    before = tracker.seconds
    try:
        result = repeat.run_repeat(
            sweep.dataset,
            sweep.arch,
            config,
            seed,
            sweep.arrays,
            sweep.shape,
            callbacks=[tracking.epoch_logger(tracker, run_id)],
            verbose=sweep.train_params["verbose"],
            keep_model=sweep.train_params["save_model"],
        )
    except BaseException as exc:
        tracker.finish(
            run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", f"{type(exc).__name__}: {exc}"
        )
        raise
    logged += tracker.seconds - before
    t0 = time.perf_counter()
    row = {
        "repeat": r,
        "seed": seed,
        "status": "FINISHED" if result.failure is None else "FAILED",
        "test_accuracy": result.test_accuracy,
        "mlflow_run_id": run_id,
        "reused": False,
    }
    tags = {HISTORY_TAG: json.dumps(result.history, separators=(",", ":"))}
    if result.failure is None:
        tags[CONFUSION_TAG] = json.dumps(result.confusion, separators=(",", ":"))
        tracker.log_metrics(
            run_id,
            {
                "test_accuracy": result.test_accuracy,
                "test_loss": result.test_loss,
                "train_seconds": result.train_seconds,
            },
        )
        if result.model is not None:
            tracker.log_model(run_id, result.model)
    else:
        row["reason"] = result.failure
        tracker.log_metrics(run_id, {"train_seconds": result.train_seconds})
    tracker.set_tags(run_id, tags)
    tracker.finish(run_id, row["status"], result.failure)
    logged += time.perf_counter() - t0
    row["history"], row["confusion"] = result.history, result.confusion
    return row, result.train_seconds, logged


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seqsweep.train", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=paths.DATASETS)
    parser.add_argument("arch", help="an architecture listed in archs.<dataset>")
    parser.add_argument("prepared", type=Path, help="the prepared arrays (e.g. data/prepared/har)")
    parser.add_argument("output", type=Path, help="the run file to write (e.g. runs/har-lstm.json)")
    args = parser.parse_args(argv)
    doc = train_arch(args.dataset, args.arch, args.prepared, load_params())
    atomic.write_json(args.output, doc)
    empty = [key for key, c in doc["configs"].items() if c["n"] == 0]
    timing = doc["timing"]
    stage = f"train-{args.dataset}@{args.arch}"
    if timing["mlflow_overhead"] is not None:
        print(
            f"{stage}: MLflow logging took {timing['mlflow_seconds']:.2f} s, "
            f"{100 * timing['mlflow_overhead']:.2f}% of {timing['train_seconds']:.1f} s training",
            file=sys.stderr,
        )
    if empty:
        raise SeqsweepError(
            f"{stage}: no repeat finished for configuration(s) {', '.join(empty)} "
            f"(see failure_reason in MLflow; results written to {args.output})"
        )


if __name__ == "__main__":
    main()
