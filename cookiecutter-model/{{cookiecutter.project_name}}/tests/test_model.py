"""Checks that run against the source tree: `pytest` inside this project."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import {{ cookiecutter.package_name }}

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "src" / "{{ cookiecutter.package_name }}" / "weights"
# What train.py predicted on input_example, right after training.
RECORDED = json.loads((ROOT / "tests" / "predictions.json").read_text())


def input_example():
    if tomllib is None:
        return RECORDED["rows"]
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["modelpack"]["input_example"]


def test_weights_are_package_data():
    assert WEIGHTS.is_dir() and any(WEIGHTS.iterdir()), "run `python train.py` to create the weights"


def test_load_reproduces_the_predictions_made_at_training_time():
    rows = input_example()
    assert rows == RECORDED["rows"], "input_example changed: run `python train.py` again"
    out = {{ cookiecutter.package_name }}.predict(rows)
    assert len(out) == len(rows)
    assert all(isinstance(y, (int, float)) and math.isfinite(y) for y in out)
    for got, want in zip(out, RECORDED["predictions"]):
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9), (got, want)
    if "probabilities" in RECORDED:  # classifiers: the scores, not only the labels
        got = flat({{ cookiecutter.package_name }}.load().predict_proba(rows))
        want = flat(RECORDED["probabilities"])
        assert len(got) == len(want)
        for p, q in zip(got, want):
            assert math.isclose(p, q, rel_tol=1e-6, abs_tol=1e-9), (p, q)


def flat(values):
    out = []
    for v in values:
        out.extend(flat(v) if isinstance(v, (list, tuple)) else [float(v)])
    return out


def test_metrics_json_is_what_modelpack_reads():
    doc = json.loads((ROOT / "metrics.json").read_text())
    assert doc["metrics"], "train.py computed no metrics"
    for name, metric in doc["metrics"].items():
        assert isinstance(metric["value"], float) and math.isfinite(metric["value"]), name
        assert metric["better"] in ("higher", "lower"), name
    assert doc["dataset"]["name"] and doc["dataset"]["version"]


def test_wrong_number_of_features_is_refused():
    model = {{ cookiecutter.package_name }}.load()
    try:
        model.predict([[1.0]])
    except ValueError as exc:
        assert "features" in str(exc) or "feature" in str(exc)
    else:
        raise AssertionError("predict accepted a row with the wrong number of features")
