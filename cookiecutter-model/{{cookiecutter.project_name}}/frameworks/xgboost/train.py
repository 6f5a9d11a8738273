"""Train the classifier; write src/{{ cookiecutter.package_name }}/weights/model.ubj and metrics.json.

The data set is scikit-learn's bundled breast cancer Wisconsin data (569 tumours, 30
measurements, malignant or benign), so training needs no download; scikit-learn is
needed to train (data, split, metrics), not to load the model. The model is an
``xgboost.XGBClassifier`` scored on a held-out quarter of the data, saved in XGBoost's
UBJSON format (see model.py).

It also writes ``metrics.json`` (the metrics modelpack puts on the model card) and
``tests/predictions.json`` (the predictions on ``input_example`` that the tests, and
any installed copy of the model, must reproduce). Replace the data and the model with
yours.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import sklearn
import xgboost
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from {{ cookiecutter.package_name }}.model import BoostedClassifier, save_weights  # noqa: E402

WEIGHTS = HERE / "src" / "{{ cookiecutter.package_name }}" / "weights"


def input_example() -> list[list[float]]:
    """The rows of ``[tool.modelpack] input_example`` in pyproject.toml."""
    with open(HERE / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["modelpack"]["input_example"]


def write_records(metrics: dict[str, tuple[float, str]], dataset: dict[str, str],
                  rows: list[list[float]], predictions: list[float],
                  probabilities: list[float] | None = None) -> None:
    """metrics.json (name -> value and whether higher or lower is better) for the model
    card, and tests/predictions.json for the tests."""
    doc = {"metrics": {k: {"value": v, "better": b} for k, (v, b) in metrics.items()},
           "dataset": dataset}
    (HERE / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    record: dict[str, object] = {"rows": rows, "predictions": predictions}
    if probabilities is not None:
        record["probabilities"] = probabilities
    (HERE / "tests" / "predictions.json").write_text(json.dumps(record, indent=2) + "\n")


def main() -> int:
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    clf = xgboost.XGBClassifier(
        n_estimators=60, max_depth=3, learning_rate=0.2, random_state=0, n_jobs=1
    )
    clf.fit(X_train, y_train)
    model = BoostedClassifier(clf.get_booster())
    proba = model.predict_proba(X_test)
    metrics = {
        "accuracy": (float(accuracy_score(y_test, model.predict(X_test))), "higher"),
        "roc_auc": (float(roc_auc_score(y_test, proba)), "higher"),
        "log_loss": (float(log_loss(y_test, proba)), "lower"),
    }
    path = save_weights(model, WEIGHTS)
    rows = input_example()
    write_records(metrics, {"name": "sklearn.datasets.load_breast_cancer",
                            "version": f"scikit-learn {sklearn.__version__}"},
                  rows, model.predict(rows), model.predict_proba(rows))
    print("held-out " + ", ".join(f"{k} {v:.4f}" for k, (v, _) in metrics.items()))
    print(f"wrote {path.relative_to(HERE)} ({path.stat().st_size} bytes) and metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
