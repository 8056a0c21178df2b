"""Specification of the training engines: the fused engine (all repeats of a configuration as one
JAX program) trains exactly the repeats the fit engine would, fails one lane alone, splits itself
when memory is short, learns what fit learns, and is chosen or refused as the README says.

The Keras backend is fixed when Keras is imported, and this test process runs TensorFlow, so the JAX
side of each test runs in a subprocess (as `dvc repro` runs stages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from seqsweep import engines, grid, stats
from seqsweep.runtime import Runtime

pytestmark = pytest.mark.slow


def in_jax(script: str, timeout: int = 600, unoptimised: bool = False) -> dict:
    """Run `script` in a fresh interpreter on the JAX backend; it prints one JSON line, returned.
    `unoptimised`: XLA's CPU backend without optimisations (a third of the compile time), for tests of
    behaviour that every compilation shares, not of the numbers users' programs compute."""
    prelude = textwrap.dedent("""
        import json, sys
        import numpy as np
        from seqsweep import engines, grid

        def har_data(n_train=128, n_test=64, seed=0, separation=0.6, timesteps=128):
            rng = np.random.default_rng(seed)
            out = {}
            for split, n in (("train", n_train), ("test", n_test)):
                y = rng.integers(0, 6, n)
                X = rng.normal(size=(n, timesteps, 9)) + y[:, None, None] * separation
                out[f"X_{split}"] = X.astype("float32")
                out[f"y_{split}"] = y
            return out

        SHAPE = {"timesteps": 128, "channels": 9, "n_classes": 6}
    """)
    # the environment a stage gives its training processes: Keras on JAX, deterministic, JAX's compiled
    # programs cached (a second model of the same architecture loads its step instead of compiling it)
    flags = "--xla_backend_optimization_level=0" if unoptimised else ""
    runtime = Runtime("fused", "jax", "cpu", deterministic=True, user_xla_flags=flags)
    env = {**os.environ, **runtime.env(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_fused_repeat_is_the_fit_repeat_of_its_seed_and_dropout_rate_batched_with_others():
    """Same initial weights, shuffling, dropout masks and optimizer: each lane's per-epoch loss and
    its test accuracy are those of `fit` for its seed on the same backend, up to float rounding;
    batch 60 over 128 examples leaves a partial last batch, as fit does. A program may span the dropout
    axis, each lane dropping out at its own rate (in a Dropout layer, and inside an LSTM's cell). With
    a validation split, its per-epoch loss and accuracy are fit's too. Both compile without XLA's
    backend optimisations (half the test's CPU): what makes them one repeat is the program each builds,
    not how LLVM optimises it; the optimised numbers are checked by the parity test below and by
    bench/bench_engine_parity.py at full size."""
    script = """
        import dataclasses
        arrays = har_data()
        program = engines.Program("har", "lstm", grid.Config(8, 60, 0.5, 2), (11, 22, 33), SHAPE,
                                  dropouts=(0.5, 0.1, 0.5))
        fit = engines.train("fit", program, arrays)
        fused = engines.train("fused", program, arrays)
        rng = np.random.default_rng(1)  # a few IMDB-like reviews: LSTM(dropout=d, recurrent_dropout=d)
        words = {"X_train": rng.integers(1, 50, (48, 12)).astype("int32"), "y_train": rng.integers(0, 2, 48),
                 "X_test": rng.integers(1, 50, (16, 12)).astype("int32"), "y_test": rng.integers(0, 2, 16)}
        recurrent = engines.Program("imdb", "lstm_recurrent_dropout", grid.Config(4, 16, 0.25, 1), (5, 6),
                                    {"num_words": 50, "maxlen": 12}, dropouts=(0.25, 0.5))
        cells = [engines.train(e, recurrent, words) for e in ("fit", "fused")]
        try:  # a rate of 0 builds no dropout at all: not a lane beside others (cell.groups never asks)
            engines.train("fused", dataclasses.replace(recurrent, arch="lstm_dropout", dropouts=(0.5, 0.0)), words)
        except engines.EngineUnavailable as exc:
            refused = str(exc)
        from seqsweep.prepared import Validation, with_validation
        held_out = with_validation(arrays, Validation(0.25, seed=5))
        short = engines.Program("har", "lstm", grid.Config(8, 60, 0.5, 1), (11, 22), SHAPE)
        val = [engines.train(e, short, held_out) for e in ("fit", "fused")]
        print(json.dumps({"fit": [(r.history, r.test_accuracy, r.lanes, r.lane_dropouts) for r in fit],
                          "fused": [(r.history, r.test_accuracy, r.lanes, r.lane_dropouts) for r in fused],
                          "recurrent": [[r.history["loss"] for r in results] for results in cells],
                          "refused": refused,
                          "val": [[(r.history, r.val_accuracy, r.lane_dropouts) for r in results] for results in val],
                          "tensorflow_imported": "tensorflow" in sys.modules}))
    """
    out = in_jax(script, unoptimised=True)
    for (fit_history, fit_accuracy, fit_lanes, _), (history, accuracy, lanes, dropouts) in zip(
        out["fit"], out["fused"], strict=True
    ):
        assert history["loss"] == pytest.approx(fit_history["loss"], rel=1e-5)
        assert history["accuracy"] == pytest.approx(fit_history["accuracy"], abs=1e-6)
        assert accuracy == pytest.approx(fit_accuracy, abs=1 / 64 + 1e-9)  # at most one test example apart
        assert len(fit_lanes) == 1 and lanes == [11, 22, 33] and dropouts == [0.5, 0.1, 0.5]
    losses = [h["loss"][0] for h, _, _, _ in out["fused"]]
    assert len(set(losses)) == 3, "each lane is its own repeat"
    fit_recurrent, fused_recurrent = out["recurrent"]
    for fused_loss, fit_loss in zip(fused_recurrent, fit_recurrent, strict=True):
        assert fused_loss == pytest.approx(fit_loss, rel=1e-5)
    assert fused_recurrent[0] != fused_recurrent[1]
    assert out["refused"].startswith("the fused engine trains lanes with different dropout rates only within (0, 1)")
    assert "embedding_dropout.rate is [0.5, 0.0] across the lanes" in out["refused"]
    assert out["tensorflow_imported"] is False, "training on JAX never imports TensorFlow (seconds per process)"
    # one rate (a configuration's own repeats): no rates to record; with a validation split, both
    # evaluate it after every epoch alike
    for (fit_history, fit_val, _), (history, val, dropouts) in zip(*out["val"], strict=True):
        assert dropouts == []
        assert history["loss"] == pytest.approx(fit_history["loss"], rel=1e-5)
        assert history["val_loss"] == pytest.approx(fit_history["val_loss"], rel=1e-4)
        assert history["val_accuracy"] == pytest.approx(fit_history["val_accuracy"], abs=1e-6)
        assert val == history["val_accuracy"][-1] == pytest.approx(fit_val, abs=1e-6)


def test_a_nan_in_one_lane_fails_that_repeat_alone_with_its_epoch():
    script = """
        import dataclasses
        import numpy as np
        from seqsweep import models

        original = models.get("har", "lstm")
        calls = {"n": 0}

        def builder(units, dropout, **shape):  # the second lane's model starts with a NaN bias
            model = original.builder(units, dropout, **shape)
            if calls["n"] == 1:
                model.layers[-1].bias.assign(np.full(model.layers[-1].bias.shape, np.nan, "float32"))
            calls["n"] += 1
            return model

        models.REGISTRY["har"]["lstm"] = dataclasses.replace(original, builder=builder)
        program = engines.Program("har", "lstm", grid.Config(4, 32, 0.25, 2), (1, 2, 3), SHAPE)
        epochs = []
        results = engines.train("fused", program, har_data(), on_epoch=lambda i, e, logs: epochs.append((i, e)))
        print(json.dumps({"failures": [r.failure for r in results], "accuracies": [r.test_accuracy for r in results],
                          "epochs": epochs}))
    """
    out = in_jax(script, unoptimised=True)
    assert out["failures"][0] is None and out["failures"][2] is None
    assert "nan" in out["failures"][1] and "epoch 1" in out["failures"][1]
    assert out["accuracies"][1] is None and all(0 <= a <= 1 for a in (out["accuracies"][0], out["accuracies"][2]))
    assert sorted(out["epochs"]) == [[0, 1], [0, 2], [1, 1], [2, 1], [2, 2]], "the failed lane reports its last epoch"


def test_repeats_that_do_not_fit_in_device_memory_are_split_into_smaller_programs():
    """Told the device has room for about two lanes, the engine trains 5 repeats as 2 + 2 + 1 lanes,
    each repeat recording the lanes it was trained beside; the results are those of the same lanes
    trained on their own."""
    script = """
        from seqsweep.engines import fused

        arrays = har_data()
        program = engines.Program("har", "lstm", grid.Config(4, 64, 0.25, 1), (1, 2, 3, 4, 5), SHAPE)
        probe = {}
        real_fit = fused.lanes_that_fit

        def room_for_two(compiled, lanes, shared):  # the real estimate, with a device of ~2 lanes' size
            stats = compiled.memory_analysis()
            needed = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
            probe.setdefault("free", shared + 2.2 * (needed - shared) / lanes)
            fused.free_memory = lambda: probe["free"] / fused.MEMORY_HEADROOM
            return real_fit(compiled, lanes, shared)

        fused.lanes_that_fit = room_for_two
        split = engines.train("fused", program, arrays)
        fused.lanes_that_fit = real_fit
        fused.free_memory = lambda: 1 << 40
        alone = engines.train("fused", engines.Program("har", "lstm", program.config, (1, 2), SHAPE), arrays)
        print(json.dumps({"lanes": [r.lanes for r in split], "split": [r.test_accuracy for r in split],
                          "alone": [r.test_accuracy for r in alone]}))
    """
    out = in_jax(script, unoptimised=True)
    assert out["lanes"] == [[1, 2], [1, 2], [3, 4], [3, 4], [5]]
    assert out["split"][:2] == out["alone"]


def test_the_fused_engine_learns_what_the_fit_engine_learns():
    """Parity: 8 repeats each on learnable HAR-like data (windows of 32 steps, to keep it quick), fit
    as users run it on CPU (TensorFlow) and fused (JAX): the means are far above chance, do not differ
    significantly (Welch) and lie within one standard deviation of each other."""
    config = grid.Config(16, 16, 0.25, 6)
    seeds = tuple(range(100, 108))
    fused = in_jax(f"""
        program = engines.Program("har", "lstm", grid.{config!r}, {seeds!r}, dict(SHAPE, timesteps=32))
        arrays = har_data(256, 128, seed=3, separation=1.0, timesteps=32)
        print(json.dumps([r.test_accuracy for r in engines.train("fused", program, arrays)]))
    """)
    rng = np.random.default_rng(3)
    arrays = {}
    for split, n in (("train", 256), ("test", 128)):
        y = rng.integers(0, 6, n)
        arrays[f"X_{split}"] = (rng.normal(size=(n, 32, 9)) + y[:, None, None] * 1.0).astype("float32")
        arrays[f"y_{split}"] = y
    shape = {"timesteps": 32, "channels": 9, "n_classes": 6}
    fit = [r.test_accuracy for r in engines.train("fit", engines.Program("har", "lstm", config, seeds, shape), arrays)]
    a, b = stats.summarise(fit), stats.summarise(fused)
    assert min(a.mean, b.mean) > 0.6, f"accuracy should be far from chance (1/6): fit {a.mean}, fused {b.mean}"
    assert stats.welch_p(fit, fused) > 0.05, (fit, fused)
    assert abs(a.mean - b.mean) <= min(a.std, b.std), (a, b)


def test_auto_is_fused_on_a_gpu_and_on_a_cpu_where_measured_faster_and_falls_back_to_fit_when_forced(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(engines, "_jax_platform", lambda: "gpu")
    monkeypatch.setitem(sys.modules, "keras", None)  # as in a fresh stage process: Keras not loaded yet
    assert engines.choose("auto", model="har:convlstm").engine == "fused"
    monkeypatch.setattr(engines, "_jax_platform", lambda: "cpu")
    assert engines.choose("auto", model="har:lstm").engine == "fused"
    assert engines.choose("auto", model="imdb:lstm").engine == "fused"  # at the full data shapes, 2 workers
    assert engines.choose("auto", model="har:convlstm").engine == "fit"
    assert engines.choose("auto", model="har:cnn1d").engine == "fit"
    assert engines.choose("auto", model="har:toy").engine == "fit"  # not measured: the tutorials' way
    assert engines.choose("auto", "gpu", "har:convlstm").engine == "fused"  # a Ray cluster with GPUs
    monkeypatch.setattr(engines, "_jax_platform", lambda: None)
    choice = engines.choose("auto", model="har:lstm")
    assert choice.engine == "fit" and "JAX is not installed" in choice.reason
    monkeypatch.setattr(engines, "_jax_platform", lambda: "gpu")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    choice = engines.choose("auto", model="har:lstm")
    assert (choice.engine, choice.backend) == ("fit", "tensorflow") and "KERAS_BACKEND=tensorflow" in choice.reason
    with pytest.raises(engines.EngineUnavailable, match="KERAS_BACKEND=tensorflow"):
        engines.choose("fused")


def test_an_explicit_fused_that_cannot_run_stops_the_stage_before_any_training(tmp_path):
    from params_file import TINY_GRID, write_params
    from train_fixtures import write_prepared_har

    write_prepared_har(tmp_path)
    write_params(tmp_path, TINY_GRID | {"train.engine": "fused"})
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "seqsweep.train", "har", "lstm", "data/prepared/har", "runs/har-lstm.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: train.engine: fused cannot run here: KERAS_BACKEND=tensorflow is set and the fused engine needs jax"
    )
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_evaluate_gives_accuracy_cross_entropy_and_a_confusion_matrix_for_both_output_kinds():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]])
    accuracy, loss, confusion = engines.evaluate(probs, np.array([0, 2, 2]), 3)
    assert accuracy == pytest.approx(2 / 3)
    assert loss == pytest.approx(-np.mean(np.log([0.7, 0.1, 0.5])))
    assert confusion == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    accuracy, _, confusion = engines.evaluate(np.array([[0.9], [0.2]]), np.array([1, 1]), 2)
    assert accuracy == 0.5 and confusion == [[0, 0], [1, 1]]
    json.dumps(confusion)  # JSON-safe ints
