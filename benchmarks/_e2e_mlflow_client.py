"""MLflow's side of the end-to-end benchmark, run with the MLflow venv's Python.

``log WEIGHTS NAME``: np.load the weights, then log a pyfunc ``PythonModel`` holding the
array with ``registered_model_name`` (a run, a logged model and version 1 of NAME). Prints
one JSON line with the seconds spent in np.load, so that the benchmark can leave them
out: a data scientist has the array in memory already.

``load NAME``: ``mlflow.pyfunc.load_model("models:/NAME/1")`` and one prediction, in a
fresh process, as a consumer would.

The class lives in ``__main__``, so cloudpickle stores it by value and the consumer
needs no module of ours (see ``mlflow_unpickle_failure.py`` for the case where it does).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def log(weights: str, name: str) -> None:
    import mlflow
    from mlflow.pyfunc import PythonModel

    class ArrayModel(PythonModel):  # type: ignore[misc]
        def __init__(self, w: np.ndarray) -> None:
            self.w = w

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            x = np.asarray(model_input, dtype=np.float32)
            return x @ self.w[: x.shape[1]]

    start = time.perf_counter()
    w = np.load(weights)
    np_load = time.perf_counter() - start
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=ArrayModel(w),
                                registered_model_name=name)  # fmt: skip
    print(json.dumps({"np_load_seconds": np_load}))


def load(name: str) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    print(model.predict(np.asarray([[1.0, 2.0, 3.0]], dtype=np.float32)))


if __name__ == "__main__":
    if sys.argv[1] == "log":
        log(sys.argv[2], sys.argv[3])
    else:
        load(sys.argv[2])
