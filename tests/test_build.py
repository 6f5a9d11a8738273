"""`modelpack build`: weights stored uncompressed, RECORD correct, reproducible, installable."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from modelpack.building import build_project
from modelpack.scaffold import new_project
from support import Venv, uv_bin


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = new_project("model-big", tmp_path / "src")
    weights = root / "src" / "model_big" / "weights"
    (weights / "extra").mkdir()
    (weights / "extra" / "embeddings.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (weights / "zeros.bin").write_bytes(bytes(1024 * 1024))  # would compress to nothing
    # A .gitignore that hides the weights from hatchling must not drop them from the wheel.
    (root / ".gitignore").write_text("dist/\n*.bin\n")
    return root


def record_rows(zf: zipfile.ZipFile) -> list[list[str]]:
    name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
    return list(csv.reader(io.StringIO(zf.read(name).decode())))


def test_weights_are_stored_and_record_is_correct(project: Path) -> None:
    info = build_project(project).wheel
    weights = {"model_big/weights/model.pkl", "model_big/weights/zeros.bin",
               "model_big/weights/extra/embeddings.bin"}  # fmt: skip
    assert set(info.weights) == weights
    with zipfile.ZipFile(info.path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert len(names) == len(set(names)), "a member is in the wheel twice"
        for zi in zf.infolist():
            expected = zipfile.ZIP_STORED if zi.filename in weights else zipfile.ZIP_DEFLATED
            assert zi.compress_type == expected, zi.filename
        rows = record_rows(zf)
        assert {r[0] for r in rows} == set(names)
        for path, digest, size in rows:
            if path.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = zf.read(path)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={b64}" and int(size) == len(data), path
    test = subprocess.run([sys.executable, "-m", "zipfile", "-t", str(info.path)],
                          capture_output=True, text=True)  # fmt: skip
    assert test.returncode == 0, test.stderr


def test_build_is_reproducible(project: Path, tmp_path: Path) -> None:
    first = build_project(project).wheel.path.read_bytes()
    second = build_project(project).wheel.path.read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    assert [p.name for p in (project / "dist").iterdir()] == ["model_big-0.1.0-py3-none-any.whl"]


@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_assembled_wheel_installs_with_pip_and_uv(project: Path, tmp_path: Path, tool: str) -> None:
    wheel = build_project(project).wheel.path
    venv = Venv(tmp_path / "venv", tool=tool)
    if tool == "pip":
        cmd = [str(venv.python), "-m", "pip", "install", "--no-index", str(wheel)]
    else:
        cmd = [uv_bin(), "pip", "install", "--python", str(venv.python), "--no-index", str(wheel)]
    subprocess.run(cmd, check=True, capture_output=True)
    out = venv.run(
        "import model_big, importlib.resources as r\n"
        "w = r.files('model_big') / 'weights'\n"
        "print(len((w / 'extra' / 'embeddings.bin').read_bytes()), model_big.load().predict([[1, 2, 3]]))"
    )
    assert out.stdout.startswith(str(3 * 1024 * 1024))
    if tool == "pip":  # pip checks RECORD on uninstall too
        venv_check = subprocess.run(
            [str(venv.python), "-m", "pip", "check"], capture_output=True, text=True
        )
        assert venv_check.returncode == 0, venv_check.stdout
