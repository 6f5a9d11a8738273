"""Find and load installed models through the ``modelpack.models`` entry-point group.

A model distribution declares, in its ``pyproject.toml``::

    [project.entry-points."modelpack.models"]
    model-foo = "model_foo:load"

:func:`list_models` reads only distribution metadata (no model is imported);
:func:`load` imports exactly the model asked for and calls its ``load()``. This module
uses nothing but the standard library and ``packaging``: consumers install models,
not modelpack's tooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from packaging.utils import canonicalize_name

from modelpack.errors import ModelNotFoundError, ModelpackError

__all__ = ["ENTRY_POINT_GROUP", "InstalledModel", "list_models", "load"]

ENTRY_POINT_GROUP = "modelpack.models"


@dataclass(frozen=True)
class InstalledModel:
    """An installed model, as its distribution metadata describes it."""

    name: str
    """The model's name (the entry point's name, normalized: ``model-foo``)."""
    distribution: str
    """The distribution that provides it, as its metadata spells it."""
    version: str
    entry_point: str
    """What ``load`` calls, ``module:function``."""
    summary: str


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _describe(ep: EntryPoint) -> InstalledModel:
    dist = ep.dist
    meta = dist.metadata if dist is not None else None
    return InstalledModel(
        name=canonicalize_name(ep.name),
        distribution=(meta["Name"] if meta is not None else "") or "",
        version=(dist.version if dist is not None else "") or "",
        entry_point=ep.value,
        summary=((meta.get_all("Summary") or [""])[0] if meta is not None else "") or "",
    )


def list_models() -> list[InstalledModel]:
    """Return the installed models, sorted by name, without importing any of them."""
    return sorted((_describe(ep) for ep in _entry_points()), key=lambda m: m.name)


def load(name: str, **kwargs: Any) -> Any:
    """Import the installed model *name* and return what its ``load(**kwargs)`` returns.

    *name* is matched after normalization, so ``model-foo``, ``model_foo`` and
    ``Model.Foo`` are the same model.

    :raises ModelNotFoundError: no installed distribution provides *name*.
    :raises ModelpackError: two installed distributions claim the same name.
    """
    wanted = canonicalize_name(name)
    matches = [ep for ep in _entry_points() if canonicalize_name(ep.name) == wanted]
    if not matches:
        installed = sorted({canonicalize_name(ep.name) for ep in _entry_points()})
        listing = ", ".join(installed) if installed else "none"
        raise ModelNotFoundError(
            f"no installed model named {name!r} (installed models: {listing}); "
            f"install it with `pip install {wanted} --index-url <registry>/simple/`"
        )
    if len(matches) > 1:
        owners = sorted({_describe(ep).distribution for ep in matches})
        raise ModelpackError(
            f"model {wanted!r} is provided by several installed distributions "
            f"({', '.join(owners)}); uninstall all but one"
        )
    loader = matches[0].load()
    return loader(**kwargs)
