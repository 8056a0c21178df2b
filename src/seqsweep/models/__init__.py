"""The architecture registry: every builder in `models/<dataset>.py` marked `@architecture(epochs=N)`
exists; `archs.<dataset>` in params.yaml says which of them the study trains (and dvc.yaml makes one
training stage per name listed there).

Adding an architecture: write its builder in models/har.py or models/imdb.py under
`@architecture(epochs=...)`, then name it in `archs.<dataset>` of params.yaml. Nothing else lists it.

The dataset modules import Keras, so they are imported only when a builder is needed (`registry`),
never by stages that only validate params."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from seqsweep.errors import ParamsError
from seqsweep.paths import DATASETS

# Keras imports scikit-learn (for its scikit-learn wrappers) and matplotlib.pyplot (for its plotting
# helpers) whenever they are installed, and MLflow installs both: about 1.8 s of Keras's 5 s import on
# this project's 2-core machines, paid by every stage, pool worker, Ray task and calibration process.
# seqsweep uses neither feature, so the processes it trains in import Keras with those two hidden
# (`import_keras`); afterwards they import normally, and only Keras's wrappers and plotting helpers
# stay unavailable in that process (as engines.set_seed does with TensorFlow on JAX).
KERAS_OPTIONAL = ("sklearn", "matplotlib")


@contextlib.contextmanager
def modules_hidden(*names: str):
    """Within, `import <name>` fails at once for each of `names` not imported yet (None in sys.modules:
    Python's import protocol), as for a package that is not installed; afterwards it imports again."""
    hidden = [name for name in names if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def import_keras():
    """`import keras` for a process that trains: the first time, with KERAS_OPTIONAL hidden (above)."""
    if "keras" not in sys.modules:
        with modules_hidden(*KERAS_OPTIONAL):
            import keras  # noqa: F401
    return sys.modules["keras"]


@dataclass(frozen=True)
class Architecture:
    """A builder `(units, dropout, **shape) -> uncompiled keras.Model` and the reference study's epochs."""

    name: str
    builder: Callable
    epochs: int


REGISTRY: dict[str, dict[str, Architecture]] = {}


def architecture(*, epochs: int):
    """Register the decorated builder under its function name, in the registry of its module's dataset."""

    def register(builder: Callable) -> Callable:
        dataset = builder.__module__.rsplit(".", 1)[-1]
        REGISTRY.setdefault(dataset, {})[builder.__name__] = Architecture(builder.__name__, builder, epochs)
        return builder

    return register


def dataset_module(dataset: str):
    """`seqsweep.models.<dataset>`: its builders and its COMPILE settings (importing it imports Keras)."""
    if dataset not in DATASETS:
        raise ParamsError(f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}")
    import_keras()
    return importlib.import_module(f"seqsweep.models.{dataset}")


def registry(dataset: str) -> dict[str, Architecture]:
    """Every architecture of `dataset`, in the order its module defines them."""
    dataset_module(dataset)
    return dict(REGISTRY.get(dataset, {}))


def get(dataset: str, arch: str) -> Architecture:
    """The architecture `arch` of `dataset`; an unknown name is an error naming params key archs.<dataset>."""
    known = registry(dataset)
    if arch not in known:
        raise ParamsError(
            f"archs.{dataset}: unknown architecture {arch!r}; expected one of {list(known)} "
            f"(a builder marked @architecture in src/seqsweep/models/{dataset}.py)"
        )
    return known[arch]


def build(dataset: str, arch: str, units: int, dropout: float, **shape):
    """A compiled keras.Model: `arch` of `dataset` with this width and dropout rate; `shape` holds the
    dataset's shape keywords (HAR: timesteps, channels, n_classes; IMDB: num_words, maxlen)."""
    compile_settings = dataset_module(dataset).COMPILE
    model = get(dataset, arch).builder(units, dropout, **shape)
    model.compile(**{**compile_settings, "metrics": list(compile_settings["metrics"])})
    return model
