"""The model class, and how its weights are saved and loaded (a pickle of it).

It is pure Python on purpose: the default model needs no dependency, so a consumer's
environment needs nothing but this wheel. Replace it with your own model (a
scikit-learn pipeline, a torch module...) and declare what it imports in
``pyproject.toml`` ``dependencies``. Keep every class that the pickle refers to inside
this package so that unpickling finds it with a plain import.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

WEIGHTS_FILE = "model.pkl"


class LinearModel:
    """y = intercept + sum(coef[i] * x[i])."""

    def __init__(self, coefficients: Sequence[float], intercept: float = 0.0) -> None:
        self.coefficients = [float(c) for c in coefficients]
        self.intercept = float(intercept)

    @property
    def n_features(self) -> int:
        return len(self.coefficients)

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[float]:
        """Predict one float per row; each row holds `n_features` numbers.

        :raises ValueError: a row has the wrong number of features, or a value is not
            a finite number.
        """
        out = []
        for i, row in enumerate(rows):
            if len(row) != self.n_features:
                raise ValueError(
                    f"row {i} has {len(row)} features; this model expects {self.n_features}"
                )
            values = [float(v) for v in row]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"row {i} contains a value that is not a finite number")
            out.append(self.intercept + sum(c * v for c, v in zip(self.coefficients, values)))
        return out

    def __repr__(self) -> str:
        return f"LinearModel(coefficients={self.coefficients!r}, intercept={self.intercept!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinearModel):
            return NotImplemented
        return (self.coefficients, self.intercept) == (other.coefficients, other.intercept)

    __hash__ = None  # type: ignore[assignment]


Model = LinearModel
"""What `load()` returns."""


def save_weights(model: LinearModel, folder: Path) -> Path:
    """Write *model* to ``folder/model.pkl`` (atomically) and return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / WEIGHTS_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(model, protocol=4))
    tmp.replace(target)
    return target


def load_weights(folder: Traversable) -> LinearModel:
    """Read the model that :func:`save_weights` wrote into *folder*.

    The weights are a pickle: only load models from a registry you trust.
    """
    data = folder.joinpath(WEIGHTS_FILE).read_bytes()
    model = pickle.loads(data)  # noqa: S301 - our own weights, shipped in this wheel
    if not isinstance(model, LinearModel):
        raise TypeError(f"{WEIGHTS_FILE} holds a {type(model).__name__}, expected LinearModel")
    return model
