"""IMDB sentiment classifiers: the reference study's four LSTM variants over padded word-id sequences.

Every builder is registered by `@architecture(epochs=N)`, N being the reference study's epochs
(batch 64 in the tutorials), and returns an uncompiled `keras.Sequential` whose layer list reads like the tutorial's
figure: Embedding(num_words, 32) first, one sigmoid unit last. `seqsweep.models.build()` compiles
one with COMPILE (Adam, binary cross-entropy), as the tutorials do. Only the backend-neutral `keras`
API is used, so the same code trains under TensorFlow or JAX (KERAS_BACKEND=jax).
"""

from __future__ import annotations

import keras
from keras import layers

from seqsweep.models import architecture

NUM_WORDS = 5000  # vocabulary size (ids >= num_words were mapped to the OOV id when preparing)
MAXLEN = 500  # ids per review after padding / truncation
EMBEDDING_DIM = 32


COMPILE = {"optimizer": "adam", "loss": "binary_crossentropy", "metrics": ["accuracy"]}


def _review(maxlen: int, num_words: int) -> list:
    """The shared front: a review of `maxlen` word ids, embedded in 32 dimensions."""
    return [
        keras.Input(shape=(maxlen,), dtype="int32", name="review"),
        layers.Embedding(num_words, EMBEDDING_DIM, name="embedding"),
    ]


@architecture(epochs=3)
def lstm(units: int, dropout: float, *, num_words: int = NUM_WORDS, maxlen: int = MAXLEN) -> keras.Model:
    """Embedding -> LSTM(units) -> Dense(1, sigmoid). `units`: the LSTM's width.

    This architecture has no dropout: `dropout` has no effect (training still records it)."""
    return keras.Sequential(
        [
            *_review(maxlen, num_words),
            layers.LSTM(units, name="lstm"),
            layers.Dense(1, activation="sigmoid", name="positive"),
        ],
        name="imdb_lstm",
    )


@architecture(epochs=3)
def lstm_dropout(units: int, dropout: float, *, num_words: int = NUM_WORDS, maxlen: int = MAXLEN) -> keras.Model:
    """Embedding -> Dropout -> LSTM(units) -> Dropout -> Dense(1, sigmoid).

    `units`: the LSTM's width. `dropout`: the rate of both Dropout layers."""
    return keras.Sequential(
        [
            *_review(maxlen, num_words),
            layers.Dropout(dropout, name="embedding_dropout"),
            layers.LSTM(units, name="lstm"),
            layers.Dropout(dropout, name="dropout"),
            layers.Dense(1, activation="sigmoid", name="positive"),
        ],
        name="imdb_lstm_dropout",
    )


@architecture(epochs=3)
def lstm_recurrent_dropout(
    units: int, dropout: float, *, num_words: int = NUM_WORDS, maxlen: int = MAXLEN
) -> keras.Model:
    """Embedding -> LSTM(units, dropout=d, recurrent_dropout=d) -> Dense(1, sigmoid).

    `units`: the LSTM's width. `dropout`: the LSTM's input and recurrent dropout rates."""
    return keras.Sequential(
        [
            *_review(maxlen, num_words),
            layers.LSTM(units, dropout=dropout, recurrent_dropout=dropout, name="lstm"),
            layers.Dense(1, activation="sigmoid", name="positive"),
        ],
        name="imdb_lstm_recurrent_dropout",
    )


@architecture(epochs=3)
def cnn_lstm(units: int, dropout: float, *, num_words: int = NUM_WORDS, maxlen: int = MAXLEN) -> keras.Model:
    """Embedding -> Conv1D(32, 3, same, relu) -> MaxPooling1D(2) -> LSTM(units) -> Dense(1, sigmoid).

    `units`: the LSTM's width (the convolution keeps the tutorial's 32 filters). This architecture
    has no dropout: `dropout` has no effect (training still records it)."""
    return keras.Sequential(
        [
            *_review(maxlen, num_words),
            layers.Conv1D(32, 3, padding="same", activation="relu", name="conv"),
            layers.MaxPooling1D(2, name="pool"),
            layers.LSTM(units, name="lstm"),
            layers.Dense(1, activation="sigmoid", name="positive"),
        ],
        name="imdb_cnn_lstm",
    )
