"""{{ cookiecutter.project_name }}: {{ cookiecutter.description }}

Install and use::

    pip install {{ cookiecutter.project_name }}
    >>> import {{ cookiecutter.package_name }}
    >>> model = {{ cookiecutter.package_name }}.load()
    >>> model.predict([[1.0, 2.0, 3.0]])

`load()` unpickles ``weights/model.pkl``, which ships inside this package as package
data. The pickle refers to classes in ``{{ cookiecutter.package_name }}.model``, which
travel in the same wheel, so unpickling needs nothing but an ordinary import.
"""

from __future__ import annotations

import pickle
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from typing import Any, Sequence

from {{ cookiecutter.package_name }}.model import LinearModel

try:
    __version__ = version("{{ cookiecutter.project_name }}")
except PackageNotFoundError:  # running from a source checkout that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["LinearModel", "__version__", "load", "predict"]

WEIGHTS = "weights/model.pkl"


def load() -> LinearModel:
    """Return the trained model stored in this package.

    Each call reads the weights again and returns a new object. The weights are a
    pickle: only load models from a registry you trust.

    :raises FileNotFoundError: the package was built without its weights
        (run ``python train.py`` before building).
    """
    data = files(__name__).joinpath(WEIGHTS).read_bytes()
    model = pickle.loads(data)  # noqa: S301 - our own weights, shipped in this wheel
    if not isinstance(model, LinearModel):
        raise TypeError(f"{WEIGHTS} holds a {type(model).__name__}, expected LinearModel")
    return model


def predict(rows: Sequence[Sequence[Any]]) -> list[float]:
    """Shortcut for ``load().predict(rows)``."""
    return load().predict(rows)
