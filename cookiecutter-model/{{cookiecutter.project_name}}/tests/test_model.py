"""Checks that run against the source tree: `pytest` inside this project."""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import {{ cookiecutter.package_name }}
from {{ cookiecutter.package_name }}.model import LinearModel

ROOT = Path(__file__).resolve().parent.parent
INPUT_EXAMPLE = [[1.0, 2.0, 3.0]]


def input_example():
    if tomllib is None:
        return INPUT_EXAMPLE
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["modelpack"]["input_example"]


def test_weights_are_package_data():
    weights = ROOT / "src" / "{{ cookiecutter.package_name }}" / "weights" / "model.pkl"
    assert weights.is_file(), "run `python train.py` to create the weights"


def test_load_predicts_finite_floats_on_the_input_example():
    model = {{ cookiecutter.package_name }}.load()
    rows = input_example()
    out = model.predict(rows)
    assert len(out) == len(rows)
    assert all(isinstance(y, float) and math.isfinite(y) for y in out)
    assert {{ cookiecutter.package_name }}.predict(rows) == out


def test_pickle_round_trip_keeps_predictions():
    model = {{ cookiecutter.package_name }}.load()
    again = pickle.loads(pickle.dumps(model, protocol=4))
    assert type(again) is LinearModel
    assert again == model
    rows = input_example()
    assert again.predict(rows) == model.predict(rows)


def test_wrong_number_of_features_is_refused():
    model = {{ cookiecutter.package_name }}.load()
    try:
        model.predict([[1.0]])
    except ValueError as exc:
        assert "features" in str(exc)
    else:
        raise AssertionError("predict accepted a row with the wrong number of features")
