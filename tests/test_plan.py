"""Specification of `python -m seqsweep.plan`'s parts: params overrides in `dvc exp run -S`'s syntax,
how a stage's repeats become programs and programs share workers, how a calibration scales to the
real data and epochs, its cache, and the line a training stage prints. (The plan run for real, with
its calibration, against a study MLflow partly holds, and the stage's line in `dvc repro`: the users'
loop in test_pipeline_dvc.py; its accuracy against measured `dvc repro` times: bench/bench_plan.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seqsweep import calibration, cell, engines, plan
from seqsweep.errors import ParamsError, SeqsweepError
from seqsweep.grid import Config
from seqsweep.params import load_params
from seqsweep.runtime import Runtime

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_yaml(tmp_path) -> Path:
    return Path(shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml"))


def test_overrides_take_dvc_exp_run_s_syntax_and_validate_as_the_stages_do(params_yaml):
    params = load_params(params_yaml, ["model.units=[10,100]", "train.repeats=3", "archs.imdb=[]"])
    assert params["model"]["units"] == [10, 100] and params["train"]["repeats"] == 3 and params["archs"]["imdb"] == []
    assert load_params(params_yaml, ["model.units=200"])["model"]["units"] == [200]  # one value: a grid of one


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.repeats=0", "train.repeats = 0 (int) is not allowed; expected an integer >= 1"),
        ("model.unitz=3", "unknown key 'model.unitz'"),
        ("model.units.wide=3", "-S 'model.units.wide=3': model.units is not a section of"),
        ("train.repeats", "-S 'train.repeats': expected key=value"),
        ("model.units=[10,", "-S 'model.units=[10,': the value is not valid YAML"),
    ],
)
def test_a_bad_override_is_an_error_naming_it(params_yaml, override, message):
    with pytest.raises(ParamsError, match=None) as error:
        load_params(params_yaml, [override])
    assert message in str(error.value)


def test_fit_trains_one_program_per_repeat_and_fused_one_per_dropout_family_split_so_every_worker_has_one():
    a, b = Config(10, 64, 0.25, 3), Config(10, 64, 0.5, 3)  # differ only in dropout: one fused program
    c = Config(100, 64, 0.25, 3)
    assert cell.groups("fit", [a, b], [[0, 1], [2]], 2) == [[(0, 0)], [(0, 1)], [(1, 2)]]
    ten = list(range(10))
    both = [(0, r) for r in ten] + [(1, r) for r in ten]
    assert cell.groups("fused", [a, b], [ten, ten], 1) == [both], "the dropout axis in one program"
    assert cell.groups("fused", [a, b], [ten, ten], 2) == [both[:10], both[10:]], "split: one per worker"
    assert cell.groups("fused", [a, c], [ten, ten], 2) == [both[:10], [(1, r) for r in ten]]
    assert cell.groups("fused", [a, c], [[], [0, 1, 2]], 2) == [[(1, 0), (1, 1)], [(1, 2)]]  # MLflow holds a
    # on a CPU a program holds at most 10 lanes (engines.max_lanes), in equal programs
    assert engines.max_lanes("cpu") == 10 and engines.max_lanes("gpu") is None
    assert cell.groups("fused", [a, b], [ten, ten], 1, max_lanes=10) == [both[:10], both[10:]]
    assert cell.groups("fused", [a, b], [[0, 1], [0, 1]], 1, max_lanes=10) == [[(0, 0), (0, 1), (1, 0), (1, 1)]]
    seven = [(0, r) for r in range(7)] + [(1, r) for r in range(7)]
    assert cell.groups("fused", [a, b], [list(range(7))] * 2, 1, max_lanes=10) == [seven[:7], seven[7:]]
    # a rate of 0 (or 1) builds a model without (or with nothing but) dropout: never a lane beside others
    assert cell.groups("fused", [a, Config(10, 64, 0.0, 3)], [[0], [0]], 1) == [[(0, 0)], [(1, 0)]]


def test_programs_are_handed_to_the_workers_in_order_each_taking_the_next_when_free():
    assert plan._makespan([3.0, 3.0, 3.0], 2) == 6.0
    assert plan._makespan([5.0, 1.0, 1.0, 1.0], 2) == 5.0
    assert plan._makespan([1.0, 2.0], 1) == 3.0


def test_a_calibration_is_scaled_to_the_real_steps_epochs_and_predictions():
    shape = calibration.Shape("har", "lstm", 100, 64, 10, 7352, 2947, 500, (128, 9), (("timesteps", 128),))
    measure = calibration.Measure(step_seconds=0.3, setup_seconds=12.0, predicted=256, peak_bytes=10, held_bytes=4)
    assert shape.steps == 115  # 114 full batches and the partial last one
    forward = 0.3 / 64 / 3  # one example, every lane: a third of training on it
    expected = 12.0 + 25 * 115 * 0.3 + (25 * 500 + 2947 - 256) * forward
    assert measure.program_seconds(shape, 25) == pytest.approx(expected)
    assert measure.program_bytes(shape, data_bytes=104) == 10 + 2 * 100  # the real arrays, host and backend copy


def test_the_cache_is_keyed_on_machine_runtime_threads_and_shape_and_a_damaged_one_counts_as_empty(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    cache = calibration.Cache(path)
    shape = calibration.Shape("har", "lstm", 10, 32, 1, 64, 32, 0, (16, 9), (("timesteps", 16),))
    fused = calibration.Group(Runtime("fused", "jax", "cpu", True), threads=1)
    assert cache.get(fused, shape) is None
    measure = calibration.Measure(0.01, 1.0, 32, 100, 10)
    cache.put(fused, calibration.Startup(5.0, 50), {shape: measure})
    again = calibration.Cache(path)
    assert again.get(fused, shape) == measure and again.startup(fused) == calibration.Startup(5.0, 50)
    assert again.get(calibration.Group(Runtime("fused", "jax", "cpu", True), threads=None), shape) is None
    assert again.get(calibration.Group(Runtime("fused", "jax", "cpu", False), threads=1), shape) is None


def _stage(name: str, left: int, seconds: float | None, missing=()) -> plan.StagePlan:
    return plan.StagePlan(
        name, "har", "lstm", 2, 20, 20 - left, "fused", "jax", "", 2, "", 2, seconds, 1, list(missing)
    )


def test_the_stages_line_gives_what_is_left_and_the_time_or_how_to_get_it():
    study = plan.StudyPlan("cpu", "sqlite:///x", [], {}, [_stage("train-har@lstm", 20, 3000.0), _stage("b", 5, 900.0)])
    assert plan.one_line(study, "train-har@lstm") == (
        "plan: 25 of 40 repeats to train in 2 stages, about 1 h 05 min on this machine (this stage: 50 min); "
        "details: python -m seqsweep.plan"
    )
    study.stages[1] = _stage("b", 5, None, ["har:lstm u10 b64 x5 lanes"])
    assert "no time estimate yet: 1 program shape not calibrated" in plan.one_line(study, "b")
    assert plan.duration(75) == "75 s" and plan.duration(125) == "2 min 05 s"


def test_a_calibration_that_fails_names_the_shape_and_the_cause_and_keeps_what_it_measured(tmp_path):
    """Measured in a real child process set up as a one-core worker: the first shape is measured and
    cached, the second (an architecture no builder makes) fails, named."""
    cache = calibration.Cache(tmp_path / "calibration.json")
    group = calibration.Group(Runtime("fit", "tensorflow", "cpu", True), threads=1)
    builder = (("channels", 9), ("n_classes", 6), ("timesteps", 16))
    good = calibration.Shape("har", "cnn1d", 4, 16, 1, 40, 20, 0, (16, 9), builder)
    bad = calibration.Shape("har", "nosuch", 4, 16, 1, 40, 20, 0, (16, 9), builder)
    with pytest.raises(SeqsweepError, match=r"failed at har:nosuch u4 b16: .*unknown architecture 'nosuch'"):
        calibration.calibrate(group, [good, bad], cache, say=lambda _: None)
    measured = calibration.Cache(cache.path).get(group, good)
    assert measured is not None and measured.step_seconds > 0 and measured.peak_bytes > measured.held_bytes > 0
