"""modelpack-registry: the model registry of modelpack, a private Python package index.

Where to read on: :mod:`~modelpack_registry.storage` describes the data folder layout,
:mod:`~modelpack_registry.web.app` the HTTP endpoints
(:mod:`~modelpack_registry.web.api` the JSON API, :mod:`~modelpack_registry.web.catalog` the pages,
:mod:`~modelpack_registry.stages` stages and yank), :mod:`~modelpack_registry.web.server`
how it is served (gunicorn, with :mod:`~modelpack_registry.web.worker` as its worker),
:mod:`~modelpack_registry.errors` the exceptions.
"""

__version__ = "0.1.0"
