"""modelpack: ML models shipped as Python wheels through a private index.

Consumers only need :func:`load` and :func:`list_models`, which use nothing but the
standard library and ``packaging``; the tooling (build, publish, scaffold) is imported
by the commands that use it.
"""

from __future__ import annotations

from modelpack.errors import ModelNotFoundError, ModelpackError
from modelpack.models import InstalledModel, list_models, load

__version__ = "0.1.0"

__all__ = [
    "InstalledModel",
    "ModelNotFoundError",
    "ModelpackError",
    "__version__",
    "list_models",
    "load",
]
