"""Serve and batch-score installed models: ``modelpack serve`` and ``modelpack predict``.

:func:`make_app` is the scoring server as a WSGI app (both the Open Inference Protocol
v2 and MLflow's ``/invocations``); :mod:`modelpack.serving.server` runs it under
gunicorn; :mod:`modelpack.serving.envs` finds or makes the environment with the model.
Only the standard library, ``packaging`` and (to serve) gunicorn: this package runs
inside the model's environment.
"""

from modelpack.serving.app import Settings, make_app

__all__ = ["Settings", "make_app"]
