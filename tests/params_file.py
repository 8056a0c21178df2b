"""The one way tests set parameters: the project's params.yaml with some dotted keys changed, as
`dvc exp run -S key=value` would change them."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())

# A grid of one tiny configuration, two repeats of one epoch, one architecture per dataset.
TINY_GRID = {
    "model.units": [3],
    "model.dropout": [0.25],
    "train.batch_size": [16],
    "train.repeats": 2,
    "train.epochs": 1,
    "train.workers": 1,  # in the stage's own process; tests of parallel workers ask for them
    "archs.har": ["lstm"],
    "archs.imdb": ["lstm"],
}


def edited(changes: dict, base: dict | None = None) -> dict:
    """A copy of `base` (default: the project's params.yaml) with each dotted key of `changes` set."""
    params = copy.deepcopy(DEFAULTS if base is None else base)
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return params


def write_params(folder: Path, changes: dict | None = None, *, base: dict | None = None) -> dict:
    """Write folder/params.yaml: `base` (default: the project's, or the folder's own if it has one) with
    `changes` applied; returns what was written."""
    path = Path(folder) / "params.yaml"
    if base is None and path.exists():
        base = yaml.safe_load(path.read_text())
    params = edited(changes or {}, base)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params
