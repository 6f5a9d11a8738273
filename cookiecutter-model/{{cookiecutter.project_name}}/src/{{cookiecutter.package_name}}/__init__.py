"""{{ cookiecutter.project_name }}: {{ cookiecutter.description }}

Install and use::

    pip install {{ cookiecutter.project_name }}
    >>> import {{ cookiecutter.package_name }}
    >>> model = {{ cookiecutter.package_name }}.load()
    >>> model.predict(rows)

`load()` reads the ``weights/`` folder, which ships inside this package as package data,
with :func:`{{ cookiecutter.package_name }}.model.load_weights`: ``model.py`` says how
the weights are saved and loaded ({{ cookiecutter.framework }} template).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from typing import Any, Sequence

from {{ cookiecutter.package_name }}.model import Model, load_weights

try:
    __version__ = version("{{ cookiecutter.project_name }}")
except PackageNotFoundError:  # running from a source checkout that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Model", "__version__", "load", "predict"]


def load() -> Model:
    """Return the trained model stored in this package.

    Each call reads the weights again and returns a new object.

    :raises FileNotFoundError: the package was built without its weights
        (run ``python train.py`` before building).
    """
    return load_weights(files(__name__).joinpath("weights"))


def predict(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Shortcut for ``load().predict(rows)``, as a list."""
    return [_plain(y) for y in load().predict(rows)]


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (JSON-able)."""
    return value.item() if hasattr(value, "item") else value
