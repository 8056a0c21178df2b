"""Retrain one repeat from what MLflow recorded and compare its test accuracy with the recorded one.

    python -m seqsweep.tools.rerun <child run id> [--prepared data/prepared/<dataset>]

Run from the repository root (it reads params.yaml for the tracking URI, unless MLFLOW_TRACKING_URI
is set). The run's params give the configuration and seed; its tags give the engine, the Keras
backend and the lanes (the seeds trained in the same compiled program, and their dropout rates where
they differed), so the program is rebuilt as it ran. The prepared data must be what trained it (its
digest is checked). Exit status 0 when the accuracy is reproduced exactly, 1 when it differs or the
rerun cannot be made."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seqsweep import engines, grid, prepared, record, tracking
from seqsweep.errors import SeqsweepError, exit_on_error
from seqsweep.models import import_keras
from seqsweep.params import load_params
from seqsweep.runtime import Runtime


def rerun(run_id: str, prepared_dir: Path | None = None) -> tuple[float | None, float | None]:
    """(recorded, reproduced) test accuracy of the child run `run_id`."""
    uri = tracking.resolve_tracking_uri(load_params()["mlflow"]["tracking_uri"])
    run = tracking.Tracker(uri).client.get_run(run_id)
    p, tags = run.data.params, run.data.tags
    if tags.get(record.KIND_TAG) != "repeat":
        raise SeqsweepError(f"run {run_id} is not a repeat (seqsweep_kind = {tags.get(record.KIND_TAG)!r})")
    dataset, arch, seed = p["dataset"], p["arch"], int(p["seed"])
    lanes = tuple(int(s) for s in tags.get(record.LANES_TAG, str(seed)).split(","))
    rates = tags.get(record.LANE_DROPOUTS_TAG)  # only where the lanes' rates differed
    dropouts = tuple(float(d) for d in rates.split(",")) if rates else ()
    # the runtime the repeat recorded (engine, backend, deterministic flags), before Keras is imported
    Runtime.recorded(tags, platform="cpu").apply()

    prepared_dir = prepared_dir or Path("data/prepared") / dataset
    arrays, meta = prepared.load(prepared_dir, dataset)
    digest = prepared.data_digest(prepared_dir)
    if digest != tags.get("data_digest"):
        raise SeqsweepError(
            f"{prepared_dir} has data digest {digest}, the run trained on {tags.get('data_digest')}: not the same data"
        )
    keras = import_keras()
    backend = tags.get("backend", "tensorflow")
    if keras.backend.backend() != backend:
        raise SeqsweepError(f"the run trained on Keras backend {backend}; this process runs {keras.backend.backend()}")
    config = grid.Config(int(p["units"]), int(p["batch_size"]), float(p["dropout"]), int(p["epochs"]))
    shape = engines.shape_kwargs(dataset, meta, arrays["X_train"])
    program = engines.Program(dataset, arch, config, lanes, shape, dropouts)
    result = engines.train(tags.get("engine", "fit"), program, arrays)[lanes.index(seed)]
    return run.data.metrics.get("test_accuracy"), result.test_accuracy


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqsweep.tools.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("run_id", help="an MLflow child run (one repeat)")
    parser.add_argument("--prepared", type=Path, default=None, help="the prepared arrays (default data/prepared/<ds>)")
    args = parser.parse_args(argv)
    recorded, again = rerun(args.run_id, args.prepared)
    same = recorded is not None and recorded == again
    print(
        f"run {args.run_id}: recorded test accuracy {recorded}, rerun {again}: "
        f"{'reproduced exactly' if same else 'DIFFERENT'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
