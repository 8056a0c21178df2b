"""Load params.yaml and validate every key before any stage does work.

The schema below is the public contract that `dvc exp run -S key=value` edits. Each leaf names
what it accepts; an unknown key, a wrong type or an out-of-range value raises ParamsError naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from seqsweep.errors import ParamsError

PARAMS_FILE = Path("params.yaml")

HAR_URL = "https://archive.ics.uci.edu/static/public/240/human+activity+recognition+using+smartphones.zip"
HAR_SHA256 = "c00b803081a5c797cd5e4b83700a9810b38d53d9d84e01917e090e1fdbc81031"
IMDB_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
IMDB_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"


@dataclass(frozen=True)
class Leaf:
    """One parameter: a check returning the normalised value (or raising ValueError) and its description."""

    check: Callable[[Any], Any]
    allowed: str


def _int(lo: int | None = None, hi: int | None = None) -> Leaf:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError
        return v

    bounds = f" >= {lo}" if hi is None else f" in [{lo}, {hi}]"
    return Leaf(check, f"an integer{bounds if lo is not None else ''}")


def _number(lo: float, hi: float, *, hi_open: bool) -> Leaf:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError
        if not (lo <= v and (v < hi if hi_open else v <= hi)):
            raise ValueError
        return float(v)

    return Leaf(check, f"a number in [{lo}, {hi}{')' if hi_open else ']'}")


def _list_of(leaf: Leaf) -> Leaf:
    """A single value or a non-empty list of values (a grid axis); normalised to a list without duplicates."""

    def check(v):
        values = v if isinstance(v, list) else [v]
        if not values:
            raise ValueError
        out = []
        for item in values:
            item = leaf.check(item)
            if item not in out:
                out.append(item)
        return out

    return Leaf(check, f"{leaf.allowed}, or a non-empty list of them")


def _optional(leaf: Leaf) -> Leaf:
    return Leaf(lambda v: None if v is None else leaf.check(v), f"null or {leaf.allowed}")


def _bool() -> Leaf:
    def check(v):
        if not isinstance(v, bool):
            raise ValueError
        return v

    return Leaf(check, "true or false")


def _url() -> Leaf:
    def check(v):
        if not isinstance(v, str) or not re.match(r"^(https?|file)://\S+$", v):
            raise ValueError
        return v

    return Leaf(check, "an http://, https:// or file:// URL")


def _sha256() -> Leaf:
    def check(v):
        if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError
        return v.lower()

    return Leaf(check, "a SHA-256 hex digest (64 hex characters)")


def _choice(*options: str) -> Leaf:
    def check(v):
        if v not in options:
            raise ValueError
        return v

    return Leaf(check, f"one of {list(options)}")


def _auto_or(leaf: Leaf) -> Leaf:
    return Leaf(lambda v: v if v == "auto" else leaf.check(v), f"auto or {leaf.allowed}")


def _string() -> Leaf:
    def check(v):
        if not isinstance(v, str) or not v.strip():
            raise ValueError
        return v

    return Leaf(check, "a non-empty string")


def _archs() -> Leaf:
    """A list of architecture names ([]: that dataset is not studied); whether each exists is checked by
    the training stage, which imports the builders (seqsweep.models.get), so stages that only validate
    never import Keras."""

    def check(v):
        values = v if isinstance(v, list) else [v]
        if any(not isinstance(a, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a) for a in values):
            raise ValueError
        return list(dict.fromkeys(values))

    return Leaf(
        check, "a list of architecture names (builders in src/seqsweep/models/<dataset>.py; [] to leave it out)"
    )


SCHEMA: dict[str, Any] = {
    "data": {
        "har": {"url": _url(), "sha256": _sha256()},
        "imdb": {
            "url": _url(),
            "sha256": _sha256(),
            "num_words": _int(4, 1_000_000),
            "maxlen": _int(1, 100_000),
        },
    },
    "archs": {"har": _archs(), "imdb": _archs()},
    "model": {"units": _list_of(_int(1)), "dropout": _list_of(_number(0.0, 1.0, hi_open=True))},
    "train": {
        "batch_size": _list_of(_int(1)),
        "repeats": _int(1),
        "seed": _int(0, 2**31 - 1),
        "epochs": _optional(_int(1)),
        "engine": _choice("auto", "fit", "fused"),
        "workers": _auto_or(_int(1)),
        "validation": _number(0.0, 0.5, hi_open=False),
        "deterministic": _bool(),
        "save_model": _bool(),
        "verbose": _int(0, 2),
    },
    "mlflow": {"tracking_uri": _string()},
    "report": {"alpha": _number(0.0, 0.5, hi_open=False)},
}


def _validate(node: Any, schema: Any, where: str, source: Path) -> Any:
    if isinstance(schema, Leaf):
        try:
            return schema.check(node)
        except (ValueError, TypeError):
            raise ParamsError(
                f"{source}: {where} = {node!r} ({type(node).__name__}) is not allowed; expected {schema.allowed}"
            ) from None
    if not isinstance(node, dict):
        raise ParamsError(
            f"{source}: {where or 'top level'} must be a mapping with keys {sorted(schema)}, got {node!r}"
        )
    unknown = sorted(set(node) - set(schema))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ParamsError(f"{source}: unknown key {key!r}; allowed keys here: {sorted(schema)}")
    missing = sorted(set(schema) - set(node))
    if missing:
        key = f"{where}.{missing[0]}" if where else missing[0]
        raise ParamsError(f"{source}: missing key {key!r}")
    return {k: _validate(node[k], schema[k], f"{where}.{k}" if where else k, source) for k in schema}


def validate(raw: Any, source: Path = PARAMS_FILE) -> dict:
    """Return the normalised params (grid axes as lists) or raise ParamsError naming the culprit."""
    params = _validate(raw, SCHEMA, "", source)
    if not any(params["archs"].values()):
        raise ParamsError(f"{source}: archs lists no architecture for any dataset; nothing would be trained")
    return params


def load_params(path: str | Path = PARAMS_FILE, overrides: list[str] = ()) -> dict:
    """Read and validate params.yaml (in the DVC workspace, i.e. the current directory), with
    `key=value` overrides applied first (the value read as YAML, as `dvc exp run -S` does)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    for item in overrides:
        _override(raw, item, path)
    return validate(raw, Path(f"{path}{' with -S ' + ' '.join(overrides) if overrides else ''}"))


def _override(raw: dict, item: str, path: Path) -> None:
    """Set `key.path=value` in the raw params, naming the override when it cannot be applied."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ParamsError(f"-S {item!r}: expected key=value, e.g. -S model.units=[10,100]")
    *parents, leaf = key.split(".")
    node = raw
    for i, name in enumerate(parents):
        if not isinstance(node, dict) or not isinstance(node.get(name), dict):
            raise ParamsError(f"-S {item!r}: {'.'.join(parents[: i + 1])} is not a section of {path}")
        node = node[name]
    try:
        node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ParamsError(f"-S {item!r}: the value is not valid YAML: {exc}") from None
