"""The architecture registry: names per dataset, and their builders (loaded lazily so that stages
which only validate params do not pay for importing Keras)."""

from __future__ import annotations

import importlib

from seqsweep.errors import ParamsError

ARCHS: dict[str, tuple[str, ...]] = {
    "har": ("lstm", "cnn_lstm", "convlstm", "cnn1d", "stacked_lstm"),
    "imdb": ("lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm"),
}


def dataset_module(dataset: str):
    """The module `seqsweep.models.<dataset>` holding BUILDERS, EPOCHS and COMPILE for that dataset
    (importing it imports Keras)."""
    return importlib.import_module(f"seqsweep.models.{dataset}")


def build(dataset: str, arch: str, units: int, dropout: float, **shape):
    """A compiled keras.Model: `arch` of `dataset` with this width and dropout rate; `shape` holds the
    dataset's shape keywords (HAR: timesteps, channels, n_classes; IMDB: num_words, maxlen)."""
    module = dataset_module(dataset)
    if arch not in module.BUILDERS:
        raise ParamsError(f"archs.{dataset}: unknown architecture {arch!r}; expected one of {sorted(module.BUILDERS)}")
    model = module.BUILDERS[arch](units, dropout, **shape)
    model.compile(**{**module.COMPILE, "metrics": list(module.COMPILE["metrics"])})
    return model


def default_epochs(dataset: str, arch: str) -> int:
    """The reference study's number of epochs for `arch` of `dataset`."""
    return dataset_module(dataset).EPOCHS[arch]
