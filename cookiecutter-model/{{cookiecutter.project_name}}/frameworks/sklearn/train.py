"""Train the pipeline; write src/{{ cookiecutter.package_name }}/weights/ and metrics.json.

The data set is scikit-learn's bundled diabetes data (442 patients, 10 standardised
features, disease progression after one year), so training needs no download. The
pipeline is ``ClipToTrainingRange`` (this package's own transformer, see model.py),
``StandardScaler`` and ``Ridge``; it is scored on a held-out quarter of the data.

    python train.py                  # weights/model.skops (default, no pickle)
    python train.py --format joblib  # weights/model.joblib (a pickle; see model.py)

It also writes ``metrics.json`` (the metrics modelpack puts on the model card) and
``tests/predictions.json`` (the predictions on ``input_example`` that the tests, and
any installed copy of the model, must reproduce). Replace the data and the pipeline
with yours; keep every custom step in the package.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import sklearn
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from {{ cookiecutter.package_name }}.model import FORMATS, ClipToTrainingRange, save_weights  # noqa: E402

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=sorted(FORMATS), default="skops",
                        help="weights format (default: skops)")
    args = parser.parse_args()

    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    model = make_pipeline(ClipToTrainingRange(), StandardScaler(), Ridge(alpha=1.0))
    model.fit(X_train, y_train)
    pred = model.predict(X_test)
    metrics = {
        "r2": (float(r2_score(y_test, pred)), "higher"),
        "rmse": (float(root_mean_squared_error(y_test, pred)), "lower"),
        "mae": (float(mean_absolute_error(y_test, pred)), "lower"),
    }
    path = save_weights(model, WEIGHTS, args.format)
    rows = input_example()
    write_records(metrics, {"name": "sklearn.datasets.load_diabetes",
                            "version": f"scikit-learn {sklearn.__version__}"},
                  rows, [float(v) for v in model.predict(rows)])
    print("held-out " + ", ".join(f"{k} {v:.4f}" for k, (v, _) in metrics.items()))
    print(f"wrote {path.relative_to(HERE)} ({path.stat().st_size} bytes) and metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
