"""The pipeline's own transformer, and how the pipeline is saved and loaded.

The model is a scikit-learn ``Pipeline``: :class:`ClipToTrainingRange` (defined here, in
the package, so that it ships in the wheel with the weights), ``StandardScaler`` and
``Ridge``. A class defined in a training script or a notebook would not be importable
where the model is installed; keep every custom step in this package.

Weights, in ``weights/``:

- ``model.skops`` (the default): written by ``skops.io``, which stores the objects'
  state, not pickle code, and on loading rebuilds only the types it is told to trust:
  scikit-learn's and numpy's, and :data:`TRUSTED`, the classes of this package.
- ``model.joblib`` (``python train.py --format joblib``): a joblib pickle. Loading a
  pickle runs code; ``modelpack check`` scans it before you publish, but only install
  such models from a registry you trust.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import skops.io
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

FORMATS = {"skops": "model.skops", "joblib": "model.joblib"}


class ClipToTrainingRange(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Clip each feature to the [low, high] quantiles seen in ``fit``.

    Values far outside the training data are held at its edges, so that a linear model
    does not extrapolate wildly on an outlier.
    """

    def __init__(self, low: float = 0.01, high: float = 0.99) -> None:
        self.low = low
        self.high = high

    def fit(self, X: Any, y: Any = None) -> ClipToTrainingRange:
        X = self._rows(X, fitted=False)
        self.lower_ = np.quantile(X, self.low, axis=0)
        self.upper_ = np.quantile(X, self.high, axis=0)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> Any:
        return np.clip(self._rows(X, fitted=True), self.lower_, self.upper_)

    def _rows(self, X: Any, fitted: bool) -> Any:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"expected a list of rows (2 dimensions), got {X.ndim}")
        if fitted and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"a row has {X.shape[1]} features; this model expects {self.n_features_in_}"
            )
        if not np.isfinite(X).all():
            raise ValueError("the input contains a value that is not a finite number")
        return X


Model = Pipeline
"""What `load()` returns."""

TRUSTED = [f"{__name__}.{ClipToTrainingRange.__qualname__}"]
"""The types skops may rebuild beyond its defaults (scikit-learn, numpy): ours."""


def save_weights(model: Pipeline, folder: Path, fmt: str = "skops") -> Path:
    """Write *model* to ``folder`` in *fmt* (``skops`` or ``joblib``), remove the
    other format's file, and return the file written."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FORMATS[fmt]
    tmp = target.with_suffix(".tmp")
    if fmt == "skops":
        tmp.write_bytes(skops.io.dumps(model))
    else:
        joblib.dump(model, tmp)
    tmp.replace(target)
    for other in FORMATS.values():
        if other != target.name:
            (folder / other).unlink(missing_ok=True)
    return target


def load_weights(folder: Traversable) -> Pipeline:
    """Read the pipeline that :func:`save_weights` wrote into *folder*.

    :raises FileNotFoundError: *folder* holds neither format.
    """
    skops_file = folder.joinpath(FORMATS["skops"])
    if skops_file.is_file():
        model = skops.io.loads(skops_file.read_bytes(), trusted=TRUSTED)
    else:
        data = folder.joinpath(FORMATS["joblib"]).read_bytes()
        model = joblib.load(io.BytesIO(data))  # a pickle: our own, scanned by modelpack check
    if not isinstance(model, Pipeline):
        raise TypeError(f"the weights hold a {type(model).__name__}, expected a Pipeline")
    return model
