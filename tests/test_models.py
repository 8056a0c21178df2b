"""Specifications of the architecture builders: the registry holds the study's architectures, each layer list is the
reference study's, `units` and `dropout` set what they claim, every model trains, and the code is
backend neutral (it trains under JAX with TensorFlow made unimportable)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from params_file import DEFAULTS as DEFAULT_PARAMS

from seqsweep import models
from seqsweep.errors import ParamsError
from seqsweep.models import build, har, imdb

SRC = Path(__file__).resolve().parents[1] / "src" / "seqsweep"

STUDY = {
    "har": ["lstm", "cnn_lstm", "convlstm", "cnn1d", "stacked_lstm"],
    "imdb": ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm"],
}
ALL = [(ds, arch) for ds, archs in STUDY.items() for arch in archs]
IDS = [f"{ds}-{arch}" for ds, arch in ALL]

# Tiny inputs: HAR keeps its real window shape; IMDB uses a short review and a small vocabulary.
TINY_SHAPE = {"har": {}, "imdb": {"num_words": 50, "maxlen": 40}}


def tiny_data(dataset: str, n: int = 32):
    rng = np.random.default_rng(0)
    if dataset == "har":
        return rng.normal(size=(n, 128, 9)).astype("float32"), rng.integers(0, 6, n)
    return rng.integers(0, 50, size=(n, 40)).astype("int32"), rng.integers(0, 2, n)


def flat_layers(model):
    """The model's layers with TimeDistributed wrappers replaced by the layer they wrap."""
    return [layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer for layer in model.layers]


def layer_kinds(model) -> list[str]:
    return [
        f"TimeDistributed({layer.layer.__class__.__name__})"
        if isinstance(layer, keras.layers.TimeDistributed)
        else layer.__class__.__name__
        for layer in model.layers
    ]


# The study's figures, layer by layer (the Input is not a layer of the model).
FIGURES = {
    ("har", "lstm"): ["LSTM", "Dropout", "Dense", "Dense"],
    ("har", "cnn_lstm"): [
        "Reshape",
        "TimeDistributed(Conv1D)",
        "TimeDistributed(Conv1D)",
        "TimeDistributed(Dropout)",
        "TimeDistributed(MaxPooling1D)",
        "TimeDistributed(Flatten)",
        "LSTM",
        "Dropout",
        "Dense",
        "Dense",
    ],
    ("har", "convlstm"): ["Reshape", "ConvLSTM2D", "Dropout", "Flatten", "Dense", "Dense"],
    ("har", "cnn1d"): ["Conv1D", "Conv1D", "Dropout", "MaxPooling1D", "Flatten", "Dense", "Dense"],
    ("har", "stacked_lstm"): ["LSTM", "Dropout", "LSTM", "Dropout", "Dense"],
    ("imdb", "lstm"): ["Embedding", "LSTM", "Dense"],
    ("imdb", "lstm_dropout"): ["Embedding", "Dropout", "LSTM", "Dropout", "Dense"],
    ("imdb", "lstm_recurrent_dropout"): ["Embedding", "LSTM", "Dense"],
    ("imdb", "cnn_lstm"): ["Embedding", "Conv1D", "MaxPooling1D", "LSTM", "Dense"],
}

# Which layer attribute `units` sets, as a function of units: {layer name: (attribute, width)}.
WIDTHS = {
    ("har", "lstm"): lambda u: {"lstm": ("units", u)},
    ("har", "cnn_lstm"): lambda u: {"lstm": ("units", u), "conv1": ("filters", 64), "conv2": ("filters", 64)},
    ("har", "convlstm"): lambda u: {"convlstm": ("filters", u)},
    ("har", "cnn1d"): lambda u: {"conv1": ("filters", u), "conv2": ("filters", u)},
    ("har", "stacked_lstm"): lambda u: {"lstm1": ("units", u), "lstm2": ("units", max(1, u // 2))},
    ("imdb", "lstm"): lambda u: {"lstm": ("units", u)},
    ("imdb", "lstm_dropout"): lambda u: {"lstm": ("units", u)},
    ("imdb", "lstm_recurrent_dropout"): lambda u: {"lstm": ("units", u)},
    ("imdb", "cnn_lstm"): lambda u: {"lstm": ("units", u), "conv": ("filters", 32)},
}

# How many Dropout layers each architecture has (all at the `dropout` rate).
N_DROPOUTS = {
    ("har", "lstm"): 1,
    ("har", "cnn_lstm"): 2,
    ("har", "convlstm"): 1,
    ("har", "cnn1d"): 1,
    ("har", "stacked_lstm"): 2,
    ("imdb", "lstm"): 0,
    ("imdb", "lstm_dropout"): 2,
    ("imdb", "lstm_recurrent_dropout"): 0,
    ("imdb", "cnn_lstm"): 0,
}


def test_each_registry_holds_the_studys_architectures_in_order_and_params_trains_them_all():
    for ds, archs in STUDY.items():
        assert list(models.registry(ds)) == archs
        assert DEFAULT_PARAMS["archs"][ds] == archs


def test_epochs_are_the_reference_studys():
    epochs = {ds: {name: a.epochs for name, a in models.registry(ds).items()} for ds in STUDY}
    assert epochs["har"] == {"lstm": 15, "cnn_lstm": 25, "convlstm": 25, "cnn1d": 15, "stacked_lstm": 15}
    assert epochs["imdb"] == {"lstm": 3, "lstm_dropout": 3, "lstm_recurrent_dropout": 3, "cnn_lstm": 3}


@pytest.mark.parametrize("units", [1, 3])
@pytest.mark.parametrize("dataset,arch", ALL, ids=IDS)
def test_builder_returns_an_uncompiled_model_from_input_to_one_probability_per_class(dataset, arch, units):
    model = models.get(dataset, arch).builder(units, 0.25)
    assert not model.compiled
    if dataset == "har":
        assert model.input_shape == (None, 128, 9)
        assert model.output_shape == (None, 6)
        assert model.layers[-1].activation is keras.activations.softmax
    else:
        assert model.input_shape == (None, 500)
        assert model.inputs[0].dtype == "int32"
        assert model.output_shape == (None, 1)
        assert model.layers[-1].activation is keras.activations.sigmoid
        embedding = model.get_layer("embedding")
        assert (embedding.input_dim, embedding.output_dim) == (5000, 32)


@pytest.mark.parametrize("dataset,arch", ALL, ids=IDS)
def test_layers_follow_the_reference_figure(dataset, arch):
    model = models.get(dataset, arch).builder(3, 0.25)
    assert layer_kinds(model) == FIGURES[dataset, arch]
    dense_100 = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense) and layer.units == 100]
    assert all(layer.activation is keras.activations.relu for layer in dense_100)


@pytest.mark.parametrize("units", [1, 3, 8])
@pytest.mark.parametrize("dataset,arch", ALL, ids=IDS)
def test_units_sets_the_width_of_the_sequence_layer(dataset, arch, units):
    model = models.get(dataset, arch).builder(units, 0.25)
    for name, (attribute, width) in WIDTHS[dataset, arch](units).items():
        layer = model.get_layer(name)
        layer = layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer
        assert getattr(layer, attribute) == width, f"{name}.{attribute}"


@pytest.mark.parametrize("rate", [0.25, 0.4])
@pytest.mark.parametrize("dataset,arch", ALL, ids=IDS)
def test_dropout_sets_the_rate_of_every_dropout_the_architecture_has(dataset, arch, rate):
    model = models.get(dataset, arch).builder(3, rate)
    dropouts = [layer for layer in flat_layers(model) if isinstance(layer, keras.layers.Dropout)]
    assert len(dropouts) == N_DROPOUTS[dataset, arch]
    assert [layer.rate for layer in dropouts] == [rate] * len(dropouts)
    in_lstm = rate if arch == "lstm_recurrent_dropout" else 0.0
    for lstm in (layer for layer in flat_layers(model) if isinstance(layer, keras.layers.LSTM)):
        assert (lstm.dropout, lstm.recurrent_dropout) == (in_lstm, in_lstm)


def test_shape_keywords_set_the_input_vocabulary_and_classes():
    model = har.stacked_lstm(4, 0.5, timesteps=64, channels=3, n_classes=4)
    assert (model.input_shape, model.output_shape) == ((None, 64, 3), (None, 4))
    model = imdb.cnn_lstm(4, 0.5, num_words=50, maxlen=40)
    assert model.input_shape == (None, 40)
    assert model.get_layer("embedding").input_dim == 50


@pytest.mark.parametrize("arch,sub_sequences", [("cnn_lstm", (None, 4, 16, 9)), ("convlstm", (None, 4, 1, 16, 9))])
def test_har_sub_sequence_archs_cut_any_window_divisible_by_4_and_reject_others(arch, sub_sequences):
    model = models.get("har", arch).builder(3, 0.25, timesteps=64)
    assert tuple(model.get_layer("sub_sequences").output.shape) == sub_sequences
    assert model.output_shape == (None, 6)
    with pytest.raises(ValueError, match=r"multiple of 4.*timesteps=130"):
        models.get("har", arch).builder(3, 0.25, timesteps=130)


def test_convlstm_sees_4_sub_sequences_of_one_row_of_32_steps():
    model = har.convlstm(3, 0.25)
    assert tuple(model.get_layer("sub_sequences").output.shape) == (None, 4, 1, 32, 9)
    assert model.get_layer("convlstm").kernel_size == (1, 3)


@pytest.mark.parametrize(
    "dataset,loss",
    [("har", "sparse_categorical_crossentropy"), ("imdb", "binary_crossentropy")],
)
def test_build_compiles_with_adam_the_studys_loss_and_accuracy(dataset, loss):
    model = build(dataset, STUDY[dataset][0], 3, 0.25, **TINY_SHAPE[dataset])
    config = model.get_compile_config()
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert (config["loss"], config["metrics"]) == (loss, ["accuracy"])


def test_build_names_an_unknown_architecture_and_the_known_ones():
    with pytest.raises(ParamsError, match=r"'gru'.*cnn1d"):
        build("har", "gru", 3, 0.25)


def test_builders_leave_seeding_to_the_trainer():
    def weights():
        return np.concatenate([w.ravel() for w in har.lstm(3, 0.25).get_weights()])

    keras.utils.set_random_seed(7)
    first, second = weights(), weights()
    keras.utils.set_random_seed(7)
    again = weights()
    assert not np.array_equal(first, second)  # a builder that reseeded would repeat its weights
    assert np.array_equal(first, again)


@pytest.mark.slow
@pytest.mark.parametrize("dataset,arch", ALL, ids=IDS)
def test_each_architecture_trains_one_epoch_to_a_finite_loss(dataset, arch):
    x, y = tiny_data(dataset)
    model = build(dataset, arch, 3, 0.25, **TINY_SHAPE[dataset])
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0).history
    assert math.isfinite(history["loss"][0])
    assert 0.0 <= history["accuracy"][0] <= 1.0


# Run in a fresh interpreter: the backend is fixed at `import keras`. TensorFlow is made
# unimportable, as on a host that has JAX only.
JAX_SCRIPT = """
import json, sys
sys.modules["tensorflow"] = None
try:
    import jax  # noqa: F401
except ImportError as exc:
    print(f"jax unavailable: {exc}")
    sys.exit(3)
import numpy as np
import keras
from seqsweep.models import build
assert keras.backend.backend() == "jax", keras.backend.backend()
rng = np.random.default_rng(0)
data = {
    "har": (rng.normal(size=(16, 128, 9)).astype("float32"), rng.integers(0, 6, 16), {}),
    "imdb": (rng.integers(0, 50, (16, 40)).astype("int32"), rng.integers(0, 2, 16),
             {"num_words": 50, "maxlen": 40}),
}
losses = {}
for ds, archs in {"har": ["lstm", "cnn_lstm", "convlstm", "cnn1d", "stacked_lstm"],
                  "imdb": ["lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm"]}.items():
    x, y, shape = data[ds]
    for arch in archs:
        model = build(ds, arch, 3, 0.25, **shape)
        losses[f"{ds}/{arch}"] = model.fit(x, y, epochs=1, batch_size=16, verbose=0).history["loss"][0]
print("LOSSES " + json.dumps(losses))
"""


@pytest.mark.slow
def test_every_architecture_trains_under_jax_with_tensorflow_unimportable():
    # XLA's CPU backend without optimisations: a third of the compile time, and speed is not the point here
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(layer for layer in proc.stdout.splitlines() if layer.startswith("LOSSES "))
    losses = json.loads(line.removeprefix("LOSSES "))
    assert sorted(losses) == sorted(f"{ds}/{arch}" for ds, arch in ALL)
    assert all(math.isfinite(v) for v in losses.values()), losses


TF_IMPORT = re.compile(r"^\s*(import\s+tensorflow|from\s+tensorflow)\b", re.MULTILINE)


def test_no_module_imports_tensorflow():
    assert TF_IMPORT.search("x = 1\n    from tensorflow import keras\n")  # the pattern bites
    offenders = [str(path.relative_to(SRC)) for path in sorted(SRC.rglob("*.py")) if TF_IMPORT.search(path.read_text())]
    assert offenders == []


def test_importing_the_registry_does_not_import_keras():
    code = "import sys, seqsweep.models; print('keras' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
