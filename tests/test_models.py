"""modelpack.load / list_models against real installed distributions."""

from __future__ import annotations

import subprocess
import sys

import pytest

import modelpack
from modelpack.errors import ModelNotFoundError


def test_unknown_model_lists_what_is_installed() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        modelpack.load("no-such-model")
    msg = str(info.value)
    assert "no installed model named 'no-such-model'" in msg
    assert "installed models:" in msg
    assert "pip install no-such-model --index-url" in msg


def test_loading_light_imports_nothing_heavy() -> None:
    code = (
        "import sys, modelpack; modelpack.list_models()\n"
        "heavy = [m for m in ('requests', 'twine', 'build', 'cookiecutter') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
