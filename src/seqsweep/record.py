"""The run record: what training leaves behind for every repeat and configuration, in MLflow and in
the stage's run file, and how a rerun reads it back. One home for the tag names, the reuse keys, the
failure kinds, and the run file's writer beside its reader.

In MLflow, one experiment per dataset:
- a parent run per (architecture, configuration): params, tags, and the summary of its repeats
  (`test_accuracy_mean/std/min/max`, `n_finished`, `n_failed`; with a validation split also
  `val_accuracy_mean/std`);
- a child run per repeat (`mlflow.parentRunId`): params incl. repeat and seed; per-epoch `loss` and
  `accuracy` (with a validation split, `val_loss` and `val_accuracy`) as metric history (step =
  epoch); final `test_accuracy`, `test_loss`, `train_seconds`; the confusion matrix as the artifact
  `confusion.json`; tags below (tag `validation` says what was held out).

A repeat's outcome (tags `seqsweep_failure` and `failure_reason` say why it did not finish):
- FINISHED: a result.
- FAILED, `diverged`: its loss turned non-finite. Also a result: counted (`n_failed`), reused.
- KILLED, `crashed`: an exception interrupted training (a bug, an out-of-memory error, a lost device).
  Not a result: the stage stops naming the cause, and the next run trains the repeat again.
- KILLED, `interrupted`: a signal (Ctrl-C, SIGTERM) stopped the stage; trained again next run.
- KILLED, `killed`: the process training it died (found RUNNING by a later run, or by Ray's retry of
  its task); trained again.

Reuse: a repeat whose child run is FINISHED, or FAILED as diverged, under the same reuse key is not
trained again. The key covers what decides the result: data digest, code digest, the runtime (Keras,
JAX + jaxlib or TensorFlow versions, backend, device, engine, determinism), the validation share,
configuration and seed.

The run file `runs/<dataset>-<arch>.json` (a plain DVC out; the report reads it):

    {"dataset", "arch", "synthetic", "classes", "data_digest", "code_digest", "runtime", "engine",
     "repeats", "timing", "validation": null or {"share", "held_out", "n_train", "n_val", "digest"},
     "configs": {<config key>: {"units", "batch_size", "dropout", "epochs", "n", "mean", "std", "min",
                                "max", "val_mean", "val_std", "n_failed", "mlflow_parent_run_id",
                                "repeats": [{"repeat", "seed", "status", "test_accuracy", "val_accuracy",
                                             "mlflow_run_id", "reused", "reason"?, "history",
                                             "confusion"}, ...]}}}
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

from seqsweep import paths, stats
from seqsweep.engines import EPOCH_METRICS
from seqsweep.errors import DataFormatError, MissingInputError
from seqsweep.results import SETTING_KEYS, Row

KEY_TAG = "seqsweep_key"  # parent: configuration key; child: reuse key of the repeat
KIND_TAG = "seqsweep_kind"  # "parent", "repeat" or "summary"
OWNER_TAG = "seqsweep_owner"  # host:pid of the stage process a run belongs to, to detect killed runs
FAILURE_TAG = "seqsweep_failure"  # a failure kind, below
REASON_TAG = "failure_reason"  # what happened, in words
LANES_TAG = "lanes"  # the seeds trained in the same compiled program, in lane order
LANE_DROPOUTS_TAG = "lane_dropouts"  # and their dropout rates, where they differed (the dropout axis fused)
EPOCHS_TAG = "epochs_done"  # a repeat's epochs trained so far, updated with each epoch's metrics

DIVERGED, CRASHED, INTERRUPTED, KILLED = "diverged", "crashed", "interrupted", "killed"
STATUS = {DIVERGED: "FAILED", CRASHED: "KILLED", INTERRUPTED: "KILLED", KILLED: "KILLED"}

HISTORY_METRICS = EPOCH_METRICS  # logged per epoch, step = epoch (val_ ones with train.validation only)
CONFUSION_ARTIFACT = "confusion.json"


# ---- reuse keys --------------------------------------------------------------------------------------


def _key(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def parent_key(
    dataset: str, arch: str, config_key: str, data: str, code: str, runtime: str, base_seed: int, validation: float = 0
) -> str:
    """The key of a configuration's parent run: everything but the repeat decides it (the validation
    share only when there is one, so studies without it keep their keys)."""
    held_out = [f"val{validation!r}"] if validation else []
    return _key(dataset, arch, config_key, data, code, runtime, base_seed, *held_out)


def repeat_key(parent: str, repeat: int, seed: int) -> str:
    return _key(parent, repeat, seed)


def trained(children: list) -> dict:
    """The child runs that hold a result (FINISHED, or FAILED as diverged), by reuse key."""
    return {
        c.data.tags.get(KEY_TAG): c
        for c in children
        if c.info.status == "FINISHED" or (c.info.status == "FAILED" and c.data.tags.get(FAILURE_TAG) == DIVERGED)
    }


def crash(exc: BaseException) -> tuple[str, str]:
    """The failure kind and reason of a repeat interrupted by `exc`."""
    kind = INTERRUPTED if isinstance(exc, KeyboardInterrupt | SystemExit) else CRASHED
    text = str(exc).strip().splitlines()
    return kind, f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


# ---- a repeat: written after training, read back by a rerun --------------------------------------


def log_result(tracker, run_id: str, repeat: int, result, requirements: list[str]) -> dict:
    """Log an engine's RepeatResult to its child run and close it; returns its row of the run file.
    `requirements`: the pip requirements of its model, when it kept one (train.save_model)."""
    kind = None if result.failure is None else DIVERGED
    row = {
        "repeat": repeat,
        "seed": result.seed,
        "status": "FINISHED" if kind is None else STATUS[kind],
        "test_accuracy": result.test_accuracy,
        "val_accuracy": result.val_accuracy,
        "mlflow_run_id": run_id,
        "reused": False,
    }
    tracker.set_tags(
        run_id,
        {
            LANES_TAG: ",".join(map(str, result.lanes)),
            **({LANE_DROPOUTS_TAG: ",".join(map(repr, result.lane_dropouts))} if result.lane_dropouts else {}),
        },
    )
    if kind is None:
        tracker.log_metrics(
            run_id,
            {
                "test_accuracy": result.test_accuracy,
                "test_loss": result.test_loss,
                "train_seconds": result.train_seconds,
            },
        )
        tracker.log_dict(
            run_id, {"rows": "true class", "columns": "predicted class", "matrix": result.confusion}, CONFUSION_ARTIFACT
        )
        if result.model is not None:
            tracker.log_model(run_id, result.model, requirements)
    else:
        row["reason"] = result.failure
        tracker.log_metrics(run_id, {"train_seconds": result.train_seconds})
    tracker.finish(run_id, row["status"], result.failure, kind)
    row["history"], row["confusion"] = result.history, result.confusion
    return row


def read_row(client, run, repeat: int, seed: int) -> dict:
    """A finished or diverged repeat read back from its child run: accuracy, curves (metric history)
    and confusion matrix (artifact)."""
    status = run.info.status
    row = {
        "repeat": repeat,
        "seed": seed,
        "status": status,
        "test_accuracy": run.data.metrics.get("test_accuracy") if status == "FINISHED" else None,
        "val_accuracy": run.data.metrics.get("val_accuracy") if status == "FINISHED" else None,
        "mlflow_run_id": run.info.run_id,
        "reused": True,
    }
    if status != "FINISHED":
        row["reason"] = run.data.tags.get(REASON_TAG)
    logged = [key for key in HISTORY_METRICS if not key.startswith("val_") or key in run.data.metrics]
    row["history"] = {key: _curve(client.get_metric_history(run.info.run_id, key)) for key in logged}
    row["confusion"] = None
    if status == "FINISHED":
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run.info.run_id, CONFUSION_ARTIFACT, tmp)
            row["confusion"] = json.loads(Path(path).read_text())["matrix"]
    return row


def _curve(metrics: list) -> list[float | None]:
    """Per-epoch values in step order; non-finite ones (MLflow keeps NaN, clamps infinity) as None."""
    by_step = {m.step: m.value for m in metrics}
    return [by_step[s] if math.isfinite(by_step[s]) and abs(by_step[s]) < 1.7e308 else None for s in sorted(by_step)]


# ---- a configuration and the run file ------------------------------------------------------------


def config_doc(config, rows: list[dict], parent_id: str) -> dict:
    """A configuration's entry in the run file: its settings, the summary of its finished repeats
    (stats.summarise, the one summary the report uses too), the failures, and every repeat."""
    finished = [r for r in rows if r["status"] == "FINISHED"]
    summary = stats.summarise([r["test_accuracy"] for r in finished])
    val = stats.summarise([r["val_accuracy"] for r in finished if r.get("val_accuracy") is not None])
    return {
        **config.as_params(),
        "n": summary.n,
        "mean": summary.mean,
        "std": summary.std,
        "min": summary.min,
        "max": summary.max,
        "val_mean": val.mean,
        "val_std": val.std,
        "n_failed": len(rows) - summary.n,
        "mlflow_parent_run_id": parent_id,
        "repeats": rows,
    }


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
                validation=doc.get("validation"),
            )
        )
    return rows
