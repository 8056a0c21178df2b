"""Specification of the runtime: how a stage's repeats train besides their params, decided once and
handed as one environment to every place a cell trains; and of the run record that keys reuse on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from types import SimpleNamespace

import pytest
from params_file import TINY_GRID, write_params
from train_fixtures import write_prepared_har

from seqsweep import engines, record, runtime, tracking
from seqsweep.runtime import Runtime

DET = "--xla_gpu_deterministic_ops=true"
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def test_the_environment_follows_from_the_runtime_alone_whatever_the_process_already_holds(monkeypatch):
    rt = Runtime("fused", "jax", "cpu", deterministic=True, user_xla_flags="--xla_dump_to=/tmp/x")
    monkeypatch.setenv("XLA_FLAGS", f"{DET} {ONE_THREAD} {DET}")
    first = rt.env(threads=1)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert rt.env(threads=1) == first, "not read from the environment it writes"
    assert first["KERAS_BACKEND"] == "jax" and first["TF_DETERMINISTIC_OPS"] == "1"
    assert first["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {DET} {ONE_THREAD}", "the user's flags first, each once"
    assert all(flag.startswith("--") for flag in first["XLA_FLAGS"].split()), "XLA ignores flags without --"
    loose = Runtime("fit", "tensorflow", "gpu", deterministic=False).env(gpu_memory_fraction=0.45)
    assert "TF_DETERMINISTIC_OPS" not in loose and DET not in loose["XLA_FLAGS"]
    assert loose["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45" and "OMP_NUM_THREADS" not in loose


def test_every_process_that_trains_shares_jaxs_compiled_programs_in_the_users_cache_or_the_users_own(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    env = Runtime("fused", "jax", "cpu", deterministic=True).env(threads=1)
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "seqsweep" / "jax")
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0", "Keras's small programs too"
    on_ray = Runtime("fused", "jax", "cpu", deterministic=True).env(threads=1, on_ray_node=True)
    assert on_ray["JAX_COMPILATION_CACHE_DIR"] == "${HOME}/.cache/seqsweep/jax", "each node's own, as Ray expands it"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/shared/jax")
    users = Runtime.recorded({"engine": "fused", "backend": "jax"}, platform="cpu")
    assert users.env()["JAX_COMPILATION_CACHE_DIR"] == users.env(on_ray_node=True)["JAX_COMPILATION_CACHE_DIR"]
    assert users.env()["JAX_COMPILATION_CACHE_DIR"] == "/shared/jax"


@pytest.mark.slow
def test_a_second_stage_loads_what_the_first_compiled_and_trains_the_same_numbers(tmp_path, empty_mlflow_db):
    """JAX's persistent compilation cache, as the default stage (auto: fused for har lstm) uses it: the
    second stage of the same program, in a fresh workspace and store, compiles nothing new."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "JAX_", "KERAS_", "XLA_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env |= {"JAX_LOG_COMPILES": "1", "JAX_EXPLAIN_CACHE_MISSES": "1"}  # JAX says, per program: cache hit or miss
    misses, hits, trained = {}, {}, {}
    for name in ("first", "second"):
        ws = tmp_path / name
        ws.mkdir()
        write_prepared_har(ws)
        write_params(ws, TINY_GRID)
        shutil.copy(empty_mlflow_db, ws / "mlflow.db")
        args = ["har", "lstm", "data/prepared/har", "runs/har-lstm.json"]
        done = subprocess.run(
            [sys.executable, "-m", "seqsweep.train", *args], cwd=ws, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        misses[name] = done.stderr.count("PERSISTENT COMPILATION CACHE MISS")
        hits[name] = done.stderr.count("Persistent compilation cache hit")
        (config,) = json.loads((ws / "runs/har-lstm.json").read_text())["configs"].values()
        trained[name] = [(r["seed"], r["test_accuracy"], r["history"]["loss"]) for r in config["repeats"]]
        assert not any(r["reused"] for r in config["repeats"])
    assert misses["first"] > 0 and any(
        p.name.startswith("jit_step") for p in (tmp_path / "cache/seqsweep/jax").iterdir()
    )
    assert (misses["second"], hits["second"]) == (0, misses["first"] + hits["first"]), "loaded, none compiled"
    assert trained["second"] == trained["first"]


def test_the_reuse_key_names_the_libraries_that_decide_results_for_the_backend_that_trains():
    fused = Runtime("fused", "jax", "cpu", deterministic=True).key()
    fit = Runtime("fit", "tensorflow", "cpu", deterministic=True).key()
    assert f"keras-{metadata.version('keras')}" in fused and f"keras-{metadata.version('keras')}" in fit
    assert f"jax-{metadata.version('jax')}" in fused and f"jaxlib-{metadata.version('jaxlib')}" in fused
    assert "tensorflow-" in fit and "jax" not in fit
    on_gpu = Runtime("fused", "jax", "gpu", deterministic=True, device="gpu:NVIDIA H200").key()
    assert on_gpu != fused and "NVIDIA H200" in on_gpu
    assert Runtime("fused", "jax", "cpu", deterministic=False).key() != fused
    keys = {record.parent_key("har", "lstm", "u2-b16-d0p25-e1", "data", "code", k, 42) for k in (fused, fit, on_gpu)}
    assert len(keys) == 3


def test_the_stage_sets_deterministic_flags_before_jax_starts_and_the_backend_before_keras_without_its_extras():
    script = (
        "import sys; from seqsweep import runtime\n"
        "rt = runtime.resolve('auto', True, 'har:lstm', on_ray=False)\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "print(rt.engine, rt.backend, rt.platform, runtime.seen())\n"
        # Keras came without the optional packages it would import for features seqsweep does not use
        "assert 'keras' in sys.modules and 'sklearn' not in sys.modules and 'matplotlib' not in sys.modules\n"
        "import sklearn.base, matplotlib.pyplot\n"  # which import normally afterwards
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS", "TF_DETERMINISTIC_OPS")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    engine, backend, platform, seen = out.stdout.strip().split(" ", 3)
    assert (engine, backend, platform) == ("fused", "jax", "cpu")
    assert "'backend': 'jax'" in seen and "'deterministic': 'true'" in seen


def test_a_fresh_worker_imports_keras_without_its_extras_when_it_first_names_its_device():
    # a pool worker or Ray task applies the runtime, then the first thing its cell asks Keras is the
    # device for the runs' tags: that import, too, leaves out what Keras would load for seqsweep's nothing
    script = (
        "import sys; from seqsweep import tracking; from seqsweep.runtime import Runtime\n"
        "Runtime('fused', 'jax', 'cpu', deterministic=True).apply(threads=1)\n"
        "print(tracking.device_name())\n"
        "assert 'keras' in sys.modules and 'sklearn' not in sys.modules and 'matplotlib' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "cpu"


def test_a_stage_process_ends_with_its_objects_frozen_after_its_atexit_handlers_not_collected_once_more():
    script = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('at exit, frozen:', gc.get_freeze_count() > 0, flush=True))\n"
        "from seqsweep.errors import exit_on_error\n"
        "@exit_on_error\n"
        "def main():\n"
        "    atexit.register(lambda: print('a handler of the stage ran', flush=True))\n"
        "    print('while it runs, frozen:', gc.get_freeze_count() > 0, flush=True)\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "while it runs, frozen: False",
        "a handler of the stage ran",
        "at exit, frozen: True",  # the interpreter's own teardown then skips them
    ]


def test_a_logged_model_requires_the_libraries_that_trained_it_pinned_as_installed():
    def pinned(distribution: str) -> str:
        return f"{distribution}=={metadata.version(distribution)}"

    assert runtime.requirements("jax") == [pinned("keras"), pinned("jax"), pinned("jaxlib"), pinned("numpy")]
    keras, tensorflow, numpy = runtime.requirements("tensorflow")
    assert (keras, numpy) == (pinned("keras"), pinned("numpy"))
    distribution = tensorflow.split("==")[0]  # TensorFlow may be installed as its CPU-only build
    assert distribution in ("tensorflow", "tensorflow-cpu") and tensorflow == pinned(distribution)


def test_a_recorded_runtime_is_rebuilt_for_a_rerun():
    rt = Runtime.recorded({"engine": "fused", "backend": "jax", "deterministic": "false"}, platform="cpu")
    assert (rt.engine, rt.backend, rt.deterministic) == ("fused", "jax", False)
    assert Runtime.recorded({}, platform="cpu").deterministic is True


# ---- the run record -----------------------------------------------------------------------------------


def test_any_number_of_epochs_and_the_confusion_matrix_round_trip_through_mlflow(tmp_path):
    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    experiment = tracker.experiment_id("har")
    run_id = tracker.start_run(experiment, "r0", "key", "repeat", {"seed": 1}, {})
    epochs = 400  # a long run: far beyond the 8,000 characters MLflow keeps of a tag
    loss = [1.0 / (e + 1) for e in range(epochs)]
    accuracy = [0.5 + e / (4 * epochs) for e in range(epochs)]
    for e in range(epochs):
        tracker.log_metrics(run_id, {"loss": loss[e], "accuracy": accuracy[e]}, step=e + 1)
    confusion = [[50 + i * j for j in range(6)] for i in range(6)]
    history = {"loss": loss, "accuracy": accuracy}
    result = engines.RepeatResult(1, history, 1.0, test_accuracy=0.9, test_loss=0.3, confusion=confusion, lanes=(1,))
    written = record.log_result(tracker, run_id, 0, result, [])
    read = record.read_row(tracker.client, tracker.client.get_run(run_id), 0, 1)
    assert read["history"] == {"loss": loss, "accuracy": accuracy} == written["history"]
    assert read["confusion"] == confusion and read["test_accuracy"] == 0.9 and read["reused"]
    assert all(len(v) <= 500 for v in tracker.client.get_run(run_id).data.tags.values()), "no curve in a tag"


@pytest.mark.parametrize(
    "status, kind, is_result",
    [
        ("FINISHED", None, True),
        ("FAILED", record.DIVERGED, True),  # a NaN loss is a result
        ("KILLED", record.CRASHED, False),  # a crash is not
        ("KILLED", record.INTERRUPTED, False),
        ("KILLED", record.KILLED, False),
        ("RUNNING", None, False),
    ],
)
def test_only_finished_and_diverged_repeats_count_as_trained(status, kind, is_result):
    run = SimpleNamespace(
        info=SimpleNamespace(status=status),
        data=SimpleNamespace(tags={record.KEY_TAG: "k", **({record.FAILURE_TAG: kind} if kind else {})}),
    )
    assert ("k" in record.trained([run])) == is_result


def test_an_exception_is_a_crash_and_a_signal_an_interruption():
    assert record.crash(RuntimeError("device lost\nmore")) == (record.CRASHED, "RuntimeError: device lost")
    assert record.crash(KeyboardInterrupt("signal SIGTERM"))[0] == record.INTERRUPTED
    assert {record.STATUS[k] for k in (record.CRASHED, record.INTERRUPTED, record.KILLED)} == {"KILLED"}
    assert record.STATUS[record.DIVERGED] == "FAILED"


def test_tensorflows_meaningless_error_line_is_dropped_and_everything_else_reaches_stderr_in_order():
    script = r"""
import os, sys
from seqsweep import runtime
runtime.drop_stderr_lines()
os.write(2, b"\rprogress 1/2")
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
os.write(2, b"E0000 00:00:1 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool which")
os.write(2, b" is not in the op definition: Op<name=MapDataset>\n")
os.write(2, b"E0000 a real error from C++\n")
print("error: the stage's last line", file=sys.stderr)
sys.exit(1)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == b"\rprogress 1/2E0000 a real error from C++\nerror: the stage's last line\n"
