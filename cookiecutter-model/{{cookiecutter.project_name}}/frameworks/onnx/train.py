"""Train a classifier, export it to ONNX; write src/{{ cookiecutter.package_name }}/weights/model.onnx and metrics.json.

The data set is scikit-learn's bundled iris data (150 flowers, 4 measurements, 3
species), so training needs no download. A scikit-learn ``LogisticRegression`` is
trained, converted to ONNX with skl2onnx, checked with ``onnx.checker``, and scored on a
held-out quarter of the data by ONNX Runtime: the metrics are those of the file that
ships. scikit-learn, skl2onnx and onnx are needed to train, not to load the model.

From PyTorch or TensorFlow, replace ``export()`` with ``torch.onnx.export(...)`` or
``tf2onnx.convert.from_keras(...)`` (see modelpack's docs, "Package a PyTorch or
TensorFlow model through ONNX").

It also writes ``metrics.json`` (the metrics modelpack puts on the model card) and
``tests/predictions.json`` (the predictions on ``input_example`` that the tests, and
any installed copy of the model, must reproduce).
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import sklearn
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from {{ cookiecutter.package_name }}.model import OnnxClassifier, save_weights  # noqa: E402

WEIGHTS = HERE / "src" / "{{ cookiecutter.package_name }}" / "weights"


def input_example() -> list[list[float]]:
    """The rows of ``[tool.modelpack] input_example`` in pyproject.toml."""
    with open(HERE / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["modelpack"]["input_example"]


def write_records(metrics: dict[str, tuple[float, str]], dataset: dict[str, str],
                  rows: list[list[float]], predictions: list[int],
                  probabilities: list[list[float]] | None = None) -> None:
    """metrics.json (name -> value and whether higher or lower is better) for the model
    card, and tests/predictions.json for the tests."""
    doc = {"metrics": {k: {"value": v, "better": b} for k, (v, b) in metrics.items()},
           "dataset": dataset}
    (HERE / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    record: dict[str, object] = {"rows": rows, "predictions": predictions}
    if probabilities is not None:
        record["probabilities"] = probabilities
    (HERE / "tests" / "predictions.json").write_text(json.dumps(record, indent=2) + "\n")


def export(clf: LogisticRegression, sample: np.ndarray) -> bytes:
    """The ONNX graph of *clf*: float32 rows in; labels and probabilities out."""
    graph = to_onnx(clf, sample.astype(np.float32), options={"zipmap": False})
    onnx.checker.check_model(graph)
    return graph.SerializeToString()


def main() -> int:
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    clf = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    model = OnnxClassifier(export(clf, X_train[:1]))
    metrics = {
        "accuracy": (float(accuracy_score(y_test, model.predict(X_test))), "higher"),
        "log_loss": (float(log_loss(y_test, model.predict_proba(X_test))), "lower"),
    }
    path = save_weights(model.model, WEIGHTS)
    rows = input_example()
    write_records(metrics, {"name": "sklearn.datasets.load_iris",
                            "version": f"scikit-learn {sklearn.__version__}"},
                  rows, model.predict(rows), model.predict_proba(rows))
    print("held-out " + ", ".join(f"{k} {v:.4f}" for k, (v, _) in metrics.items()))
    print(f"wrote {path.relative_to(HERE)} ({path.stat().st_size} bytes) and metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
