"""The architecture registry: names per dataset, and their builders (loaded lazily so that stages
which only validate params do not pay for importing Keras)."""

from __future__ import annotations

import importlib

ARCHS: dict[str, tuple[str, ...]] = {
    "har": ("lstm", "cnn_lstm", "convlstm", "cnn1d", "stacked_lstm"),
    "imdb": ("lstm", "lstm_dropout", "lstm_recurrent_dropout", "cnn_lstm"),
}


def dataset_module(dataset: str):
    """The module `seqsweep.models.<dataset>` holding BUILDERS, EPOCHS, COMPILE and build() for that
    dataset (importing it imports Keras)."""
    return importlib.import_module(f"seqsweep.models.{dataset}")


def build(dataset: str, arch: str, units: int, dropout: float, **shape):
    """A compiled keras.Model: `arch` of `dataset` with this width and dropout rate; `shape` holds the
    dataset's shape keywords (HAR: timesteps, channels, n_classes; IMDB: num_words, maxlen)."""
    return dataset_module(dataset).build(arch, units, dropout, **shape)


def default_epochs(dataset: str, arch: str) -> int:
    """The reference study's number of epochs for `arch` of `dataset`."""
    return dataset_module(dataset).EPOCHS[arch]
