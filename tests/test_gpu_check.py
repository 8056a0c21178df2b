"""Specification of bench/gpu_check.py, the one script a GPU lease runs: it needs nothing but keras, jax
and numpy and a checkout (no install), and its smoke run on a CPU goes through every measurement the
GPU run makes, so the script cannot rot between leases."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOT_ON_THE_GPU_HOST = ("mlflow", "dvc", "tensorflow", "pandas", "yaml")  # jax itself needs scipy

# Runs the script as `python bench/gpu_check.py ARGS` would, in an interpreter where those packages
# cannot be imported and seqsweep is not installed (the editable install's src/ is off sys.path).
WITHOUT_EXTRAS = textwrap.dedent(f"""
    import runpy, sys
    from pathlib import Path

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {NOT_ON_THE_GPU_HOST!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (not on the GPU host)", name=name)

    sys.meta_path.insert(0, NotInstalled())
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path({str(REPO / "src")!r})]
    sys.argv[0] = {str(REPO / "bench" / "gpu_check.py")!r}
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


def test_the_gpu_check_runs_on_keras_jax_and_numpy_alone_and_reports_every_figure_its_smoke_run_measures(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, "--smoke", "--out", str(out)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "PYTHONPATH")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())

    assert doc["device"]["platform"] == "cpu" and doc["date"] and "random" in doc["timing_data"]
    assert {"jax", "jaxlib", "keras"} <= set(doc["versions"])
    # a row per architecture timed, each engine's seconds per repeat-epoch positive and finite
    assert [row["model"] for row in doc["rows"]] == doc["settings"]["archs"] and not doc["skipped"]
    for row in doc["rows"]:
        timed = [row["fused"][str(lanes)] for lanes in doc["settings"]["lanes"]] + [row["fit"]]
        for seconds in [t["s_per_repeat_epoch"] for t in timed] + [t["overhead_s"] for t in timed]:
            assert math.isfinite(seconds) and seconds > 0, row
        assert row["fused"][str(doc["settings"]["lanes"][-1])]["xla_estimate_bytes"] > 0
        assert row["model"] in proc.stdout  # the table
    # the program of more lanes is the stage's: every dropout rate of the grid, a lane each at its own
    grid_rates = yaml.safe_load((REPO / "params.yaml").read_text())["model"]["dropout"]
    for row in doc["rows"]:
        assert row["fused"][str(doc["settings"]["lanes"][-1])]["dropouts"] == sorted(grid_rates)
        assert row["fused"][str(doc["settings"]["lanes"][0])]["dropouts"] == [doc["settings"]["dropout"]]
    # parity: a p-value; the same seeds trained by both engines
    parity = doc["parity"]
    assert 0 <= parity["p_value"] <= 1
    assert len(parity["fused"]["accuracies"]) == len(parity["fit"]["accuracies"]) == parity["repeats"] >= 2
    # told it has room for fewer lanes than asked, the fused engine trains them in smaller programs
    split = doc["split"]
    assert sum(split["programs"]) == split["lanes_asked"] and max(split["programs"]) <= split["room_for"]
    assert not split["failures"]
    # the study estimate: positive, over params.yaml's grid and architectures (written out in the script)
    study = doc["study"]
    assert study["fused_upper_s"] > 0 and study["fit_upper_s"] > 0 and study["repeat_epochs"] > 0
    assert study["lanes_per_program"] == [doc["settings"]["lanes"][-1]]  # the most lanes measured
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert study["grid"] == {
        "units": params["model"]["units"],
        "batch_size": params["train"]["batch_size"],
        "dropout": params["model"]["dropout"],
        "repeats": params["train"]["repeats"],
        "seed": params["train"]["seed"],
    }
    assert study["archs"] == params["archs"]
    assert {a["model"] for a in study["architectures"]} | set(study["missing"]) == {
        f"{dataset}:{arch}" for dataset, archs in params["archs"].items() for arch in archs
    }
