"""The hyperparameter grid: configurations as the product of the grid axes, and per-repeat seeds."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, dataclass


@dataclass(frozen=True, order=True)
class Config:
    """One point of the grid for one (dataset, architecture)."""

    units: int
    batch_size: int
    dropout: float
    epochs: int

    @property
    def key(self) -> str:
        """A name safe as a JSON key for `dvc metrics show` (no dots): e.g. `u100-b64-d0p5-e15`."""
        return f"u{self.units}-b{self.batch_size}-d{self.dropout:g}-e{self.epochs}".replace(".", "p")

    @property
    def label(self) -> str:
        """For people (run names): e.g. `u100 b64 d0.5 e15`."""
        return f"u{self.units} b{self.batch_size} d{self.dropout:g} e{self.epochs}"

    def as_params(self) -> dict:
        return asdict(self)


def expand(params: dict, default_epochs: int) -> list[Config]:
    """The product of model.units x train.batch_size x model.dropout, in the order they are listed
    (the params loader already normalised single values to one-element lists)."""
    epochs = params["train"]["epochs"] or default_epochs
    return [
        Config(units=u, batch_size=b, dropout=d, epochs=epochs)
        for u, b, d in itertools.product(
            params["model"]["units"], params["train"]["batch_size"], params["model"]["dropout"]
        )
    ]


def repeat_seed(base_seed: int, dataset: str, arch: str, config: Config, repeat: int) -> int:
    """A seed in [0, 2**31) derived from the base seed, the configuration and the repeat number.

    Hashing (rather than base + repeat) keeps repeats of different configurations independent, and
    makes each seed stable when the grid grows or is reordered."""
    text = (
        f"{base_seed}|{dataset}|{arch}|{config.units}|{config.batch_size}|{config.dropout!r}|{config.epochs}|{repeat}"
    )
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF
