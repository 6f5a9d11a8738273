"""The classifier around an XGBoost booster, and how its weights are saved and loaded.

The weights are ``weights/model.ubj``: XGBoost's own UBJSON model format (the binary
form of its JSON format), written by ``Booster.save_raw("ubj")``. It is not a pickle:
loading it runs no code, and XGBoost promises that later releases read models saved
by earlier ones. (A pickle of an XGBoost model is only promised to load in the very
release that wrote it.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import xgboost

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

WEIGHTS_FILE = "model.ubj"


class BoostedClassifier:
    """A binary classifier: ``predict`` gives labels (0 or 1), ``predict_proba`` the
    probability of class 1."""

    def __init__(self, booster: xgboost.Booster, threshold: float = 0.5) -> None:
        self.booster = booster
        self.threshold = threshold

    @property
    def n_features(self) -> int:
        return int(self.booster.num_features())

    def predict_proba(self, rows: Sequence[Sequence[Any]]) -> list[float]:
        """The probability of class 1 for each row.

        :raises ValueError: a row has the wrong number of features, or a value is not
            a finite number.
        """
        X = np.asarray(rows, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            width = X.shape[-1] if X.ndim else 0
            raise ValueError(f"a row has {width} features; this model expects {self.n_features}")
        if not np.isfinite(X).all():
            raise ValueError("the input contains a value that is not a finite number")
        return [float(p) for p in self.booster.inplace_predict(X)]

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[int]:
        """One label per row: 1 when its probability is at least ``threshold``."""
        return [int(p >= self.threshold) for p in self.predict_proba(rows)]


Model = BoostedClassifier
"""What `load()` returns."""


def save_weights(model: BoostedClassifier, folder: Path) -> Path:
    """Write *model*'s booster to ``folder/model.ubj`` (atomically); return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / WEIGHTS_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(bytes(model.booster.save_raw("ubj")))
    tmp.replace(target)
    return target


def load_weights(folder: Traversable) -> BoostedClassifier:
    """Read the model that :func:`save_weights` wrote into *folder*."""
    booster = xgboost.Booster()
    booster.load_model(bytearray(folder.joinpath(WEIGHTS_FILE).read_bytes()))
    return BoostedClassifier(booster)
