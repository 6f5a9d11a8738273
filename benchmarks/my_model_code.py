"""Custom inference code in a module of its own, as a data scientist's project has it.

``mlflow_unpickle_failure.py`` logs an instance of :class:`MyModel` to MLflow, then
shows that a consumer without this module cannot load it, and that the same class
shipped inside a modelpack wheel loads with a plain ``pip install``. Inside a model
wheel MLflow is not installed, so the base class falls back to ``object``.
"""

from __future__ import annotations

from typing import Any

try:
    from mlflow.pyfunc import PythonModel as _Base
except ImportError:  # inside a modelpack wheel: MLflow is not a dependency
    _Base = object


# MLflow is not in the dev venv, so to mypy _Base is Any, and subclassing Any is [misc].
class MyModel(_Base):  # type: ignore[misc]
    """y = scale * sum(row): the inference pipeline's own logic."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def predict(self, context: Any, model_input: Any, params: Any = None) -> list[float]:
        rows = model_input.values.tolist() if hasattr(model_input, "values") else model_input
        return [self.scale * sum(float(v) for v in row) for row in rows]
