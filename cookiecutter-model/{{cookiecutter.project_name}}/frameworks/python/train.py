"""Train the model; write src/{{ cookiecutter.package_name }}/weights/model.pkl and metrics.json.

The starter trains ordinary least squares on a small, deterministic synthetic data set
(y = 0.5 + 1.0*x0 - 2.0*x1 + 0.25*x2 plus a little noise), in pure Python. Replace
the data and the fitting with yours; keep writing a pickle of an object whose class
lives in the package (see model.py). Run it with `python train.py`, then
`modelpack build`.

It also writes ``metrics.json`` (the metrics modelpack puts on the model card) and
``tests/predictions.json`` (the predictions on ``input_example`` that the tests, and
any installed copy of the model, must reproduce).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from {{ cookiecutter.package_name }}.model import LinearModel, save_weights  # noqa: E402

WEIGHTS = HERE / "src" / "{{ cookiecutter.package_name }}" / "weights"
INPUT_EXAMPLE = [[1.0, 2.0, 3.0]]  # as in pyproject.toml, for Python 3.10 (no tomllib)
TRUE_COEF = [1.0, -2.0, 0.25]
TRUE_INTERCEPT = 0.5


def make_data(n: int = 200, seed: int = 0) -> tuple[list[list[float]], list[float]]:
    rng = random.Random(seed)
    xs = [[rng.uniform(-5, 5) for _ in TRUE_COEF] for _ in range(n)]
    ys = [
        TRUE_INTERCEPT + sum(c * v for c, v in zip(TRUE_COEF, x)) + rng.gauss(0, 0.1)
        for x in xs
    ]
    return xs, ys


def solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Solve a x = b by Gaussian elimination with partial pivoting."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            raise ValueError("the training data are degenerate (singular normal equations)")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for k in range(col, n + 1):
                m[r][k] -= f * m[col][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][k] * x[k] for k in range(r + 1, n))) / m[r][r]
    return x


def fit(xs: list[list[float]], ys: list[float]) -> LinearModel:
    """Ordinary least squares through the normal equations (X^T X) w = X^T y."""
    design = [[1.0, *x] for x in xs]
    p = len(design[0])
    xtx = [[sum(row[i] * row[j] for row in design) for j in range(p)] for i in range(p)]
    xty = [sum(row[i] * y for row, y in zip(design, ys)) for i in range(p)]
    w = solve(xtx, xty)
    return LinearModel(coefficients=w[1:], intercept=w[0])


def rmse(model: LinearModel, xs: list[list[float]], ys: list[float]) -> float:
    pred = model.predict(xs)
    return (sum((p - y) ** 2 for p, y in zip(pred, ys)) / len(ys)) ** 0.5


def input_example() -> list[list[float]]:
    """The rows of ``[tool.modelpack] input_example`` in pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return INPUT_EXAMPLE
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
    xs, ys = make_data()
    model = fit(xs, ys)
    path = save_weights(model, WEIGHTS)
    error = rmse(model, xs, ys)
    held_out = make_data(n=100, seed=1)
    rows = input_example()
    write_records({"rmse": (round(error, 6), "lower"),
                   "rmse_held_out": (round(rmse(model, *held_out), 6), "lower")},
                  {"name": "synthetic-linear", "version": "seed-0-n200"},
                  rows, model.predict(rows))
    print(f"trained {model!r}; training RMSE {error:.4f}")
    print(f"wrote {path.relative_to(HERE)} ({path.stat().st_size} bytes) and metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
