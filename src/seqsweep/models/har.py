"""UCI HAR classifiers: the reference study's five architectures over (128, 9) inertial windows.

Every builder is registered by `@architecture(epochs=N)`, N being the reference study's epochs
(batch 64 in the tutorials), and returns an uncompiled `keras.Sequential` whose layer list reads like the tutorial's
figure; `seqsweep.models.build()` compiles one with COMPILE. Only the backend-neutral `keras` API
is used, so the same code trains under TensorFlow or JAX (KERAS_BACKEND=jax).

Optimizer: Adam for every architecture, as in the tutorials. One stacked-LSTM notebook used RMSprop
for 30 epochs; that is a single variant, and we keep Adam (and 15 epochs, like the one-layer LSTM)
so that the architectures differ only in their layers and remain comparable.
"""

from __future__ import annotations

import keras
from keras import layers

from seqsweep.models import architecture

TIMESTEPS = 128  # 2.56 s at 50 Hz
CHANNELS = 9  # total_acc, body_acc, body_gyro; x, y, z each
N_CLASSES = 6
N_STEPS = 4  # sub-sequences per window for cnn_lstm and convlstm (4 x 32 steps)


# Labels are integers 0..5, so the loss is sparse categorical cross-entropy: mathematically the
# tutorials' categorical cross-entropy on one-hot labels, without materialising the one-hot matrix.
COMPILE = {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}


def _sub_sequence_length(timesteps: int, arch: str) -> int:
    """The length of each of the N_STEPS sub-sequences a window is cut into."""
    if timesteps <= 0 or timesteps % N_STEPS:
        raise ValueError(
            f"har {arch}: timesteps must be a positive multiple of {N_STEPS} to cut each window "
            f"into {N_STEPS} sub-sequences, got timesteps={timesteps}"
        )
    return timesteps // N_STEPS


@architecture(epochs=15)
def lstm(
    units: int,
    dropout: float,
    *,
    timesteps: int = TIMESTEPS,
    channels: int = CHANNELS,
    n_classes: int = N_CLASSES,
) -> keras.Model:
    """LSTM(units) -> Dropout -> Dense(100, relu) -> Dense(softmax). `units`: the LSTM's width."""
    return keras.Sequential(
        [
            keras.Input(shape=(timesteps, channels), name="window"),
            layers.LSTM(units, name="lstm"),
            layers.Dropout(dropout, name="dropout"),
            layers.Dense(100, activation="relu", name="dense"),
            layers.Dense(n_classes, activation="softmax", name="activity"),
        ],
        name="har_lstm",
    )


@architecture(epochs=25)
def cnn_lstm(
    units: int,
    dropout: float,
    *,
    timesteps: int = TIMESTEPS,
    channels: int = CHANNELS,
    n_classes: int = N_CLASSES,
) -> keras.Model:
    """A CNN reads each of 4 sub-sequences of the window; an LSTM reads the 4 feature vectors.

    `units`: the LSTM's width (the convolutions keep the tutorial's 64 filters).
    `dropout`: the rate of both Dropouts (per sub-sequence after the CNN, and after the LSTM)."""
    length = _sub_sequence_length(timesteps, "cnn_lstm")
    return keras.Sequential(
        [
            keras.Input(shape=(timesteps, channels), name="window"),
            layers.Reshape((N_STEPS, length, channels), name="sub_sequences"),
            layers.TimeDistributed(layers.Conv1D(64, 3, activation="relu"), name="conv1"),
            layers.TimeDistributed(layers.Conv1D(64, 3, activation="relu"), name="conv2"),
            layers.TimeDistributed(layers.Dropout(dropout), name="conv_dropout"),
            layers.TimeDistributed(layers.MaxPooling1D(2), name="pool"),
            layers.TimeDistributed(layers.Flatten(), name="flatten"),
            layers.LSTM(units, name="lstm"),
            layers.Dropout(dropout, name="dropout"),
            layers.Dense(100, activation="relu", name="dense"),
            layers.Dense(n_classes, activation="softmax", name="activity"),
        ],
        name="har_cnn_lstm",
    )


@architecture(epochs=25)
def convlstm(
    units: int,
    dropout: float,
    *,
    timesteps: int = TIMESTEPS,
    channels: int = CHANNELS,
    n_classes: int = N_CLASSES,
) -> keras.Model:
    """ConvLSTM2D over 4 sub-sequences, each a 1 x 32 "image" with 9 channels -> Dense(softmax).

    `units`: the number of ConvLSTM2D FILTERS (the tutorial's 64), kernel (1, 3)."""
    length = _sub_sequence_length(timesteps, "convlstm")
    return keras.Sequential(
        [
            keras.Input(shape=(timesteps, channels), name="window"),
            layers.Reshape((N_STEPS, 1, length, channels), name="sub_sequences"),
            layers.ConvLSTM2D(units, (1, 3), activation="relu", name="convlstm"),
            layers.Dropout(dropout, name="dropout"),
            layers.Flatten(name="flatten"),
            layers.Dense(100, activation="relu", name="dense"),
            layers.Dense(n_classes, activation="softmax", name="activity"),
        ],
        name="har_convlstm",
    )


@architecture(epochs=15)
def cnn1d(
    units: int,
    dropout: float,
    *,
    timesteps: int = TIMESTEPS,
    channels: int = CHANNELS,
    n_classes: int = N_CLASSES,
) -> keras.Model:
    """Conv1D x2 -> Dropout -> MaxPooling1D -> Dense(100, relu) -> Dense(softmax).

    `units`: the number of FILTERS of both Conv1D layers (the tutorial's 64), kernel 3."""
    return keras.Sequential(
        [
            keras.Input(shape=(timesteps, channels), name="window"),
            layers.Conv1D(units, 3, activation="relu", name="conv1"),
            layers.Conv1D(units, 3, activation="relu", name="conv2"),
            layers.Dropout(dropout, name="dropout"),
            layers.MaxPooling1D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(100, activation="relu", name="dense"),
            layers.Dense(n_classes, activation="softmax", name="activity"),
        ],
        name="har_cnn1d",
    )


@architecture(epochs=15)
def stacked_lstm(
    units: int,
    dropout: float,
    *,
    timesteps: int = TIMESTEPS,
    channels: int = CHANNELS,
    n_classes: int = N_CLASSES,
) -> keras.Model:
    """LSTM(units, sequences) -> Dropout -> LSTM(units // 2) -> Dropout -> Dense(softmax).

    `units`: the first LSTM's width; the second has half as many (at least 1), like the
    notebook's LSTM(128) -> LSTM(64). `dropout`: the rate of both Dropouts."""
    return keras.Sequential(
        [
            keras.Input(shape=(timesteps, channels), name="window"),
            layers.LSTM(units, return_sequences=True, name="lstm1"),
            layers.Dropout(dropout, name="dropout1"),
            layers.LSTM(max(1, units // 2), name="lstm2"),
            layers.Dropout(dropout, name="dropout2"),
            layers.Dense(n_classes, activation="softmax", name="activity"),
        ],
        name="har_stacked_lstm",
    )
