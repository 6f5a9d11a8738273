"""Train the model and write src/{{ cookiecutter.package_name }}/weights/model.pkl.

The starter trains ordinary least squares on a small, deterministic synthetic data set
(y = 0.5 + 1.0*x0 - 2.0*x1 + 0.25*x2 plus a little noise), in pure Python. Replace
the data and the fitting with yours; keep writing a pickle of an object whose class
lives in the package (see model.py). Run it with `python train.py`, then
`modelpack build`.
"""

from __future__ import annotations

import json
import pickle
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

from {{ cookiecutter.package_name }}.model import LinearModel  # noqa: E402

WEIGHTS = HERE / "src" / "{{ cookiecutter.package_name }}" / "weights" / "model.pkl"
# Read by `modelpack check/build` into the wheel's manifest (the model card's numbers).
METRICS = HERE / "metrics.json"
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


def main() -> int:
    xs, ys = make_data()
    model = fit(xs, ys)
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = WEIGHTS.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(model, protocol=4))
    tmp.replace(WEIGHTS)
    train_rmse = rmse(model, xs, ys)
    held_out = make_data(n=100, seed=1)
    card = {
        "metrics": {
            "rmse": {"value": round(train_rmse, 6), "better": "lower"},
            "rmse_held_out": {"value": round(rmse(model, *held_out), 6), "better": "lower"},
        },
        "dataset": {"name": "synthetic-linear", "version": "seed-0-n200"},
    }
    METRICS.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"trained {model!r}; training RMSE {train_rmse:.4f}")
    print(f"wrote {WEIGHTS.relative_to(HERE)} ({WEIGHTS.stat().st_size} bytes) and {METRICS.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
