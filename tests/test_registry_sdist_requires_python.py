"""An sdist's Requires-Python reaches the index, so installers skip it instead of building it.

The reproduction of issue 13: an sdist-only project whose PKG-INFO says
``Requires-Python: >=3.99`` made pip and uv on this Python download it and try to
build it. With ``data-requires-python`` (HTML) and ``requires-python`` (PEP 691 JSON)
they report that no version fits and build nothing.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests
from registry_support import post_upload, twine_upload

from support import Registry, Venv, confined_env, uv_bin

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
NEVER = ">=3.99"  # no Python running these tests satisfies it
# If an installer ever runs this, the test sees the marker.
SETUP_PY = "import pathlib\npathlib.Path({marker!r}).write_text('built')\nraise SystemExit(1)\n"


def make_sdist(folder: Path, name: str, version: str, requires_python: str | None,
               marker: Path) -> Path:  # fmt: skip
    """A ``.tar.gz`` sdist whose PKG-INFO has ``requires_python``; building it is noticed."""
    stem = f"{name.replace('-', '_')}-{version}"
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if requires_python:
        pkg_info += f"Requires-Python: {requires_python}\n"
    members = {
        f"{stem}/PKG-INFO": pkg_info.encode(),
        f"{stem}/setup.py": SETUP_PY.format(marker=str(marker)).encode(),
        # an egg-info copy saying otherwise must not be the one read
        f"{stem}/{stem}.egg-info/PKG-INFO": pkg_info.replace(NEVER, ">=3").encode(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def pages(reg: Registry, project: str) -> tuple[str, dict[str, object]]:
    url = f"{reg.index_url}{project}/"
    html = requests.get(url, headers={"Accept": "text/html"}, timeout=10)
    doc = requests.get(url, headers={"Accept": JSON_TYPE}, timeout=10)
    assert html.status_code == doc.status_code == 200
    return html.text, doc.json()


def requires_python_listed(reg: Registry, project: str, filename: str, value: str) -> None:
    html, doc = pages(reg, project)
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'data-requires-python="{escaped}"' in html, html
    files = {f["filename"]: f for f in doc["files"]}  # type: ignore[attr-defined]
    assert files[filename]["requires-python"] == value, files


@pytest.mark.slow
def test_pip_and_uv_skip_an_sdist_this_python_cannot_use(tmp_path: Path) -> None:
    marker = tmp_path / "built"
    sdist = make_sdist(tmp_path / "dist", "ipt-rp", "2.0.0", NEVER, marker)
    with Registry(tmp_path / "data") as reg:
        # a bare upload, without twine's requires_python field: PKG-INFO alone says it
        answer = post_upload(reg.url, sdist.name, sdist.read_bytes())
        assert answer.status_code == 200, answer.text
        requires_python_listed(reg, "ipt-rp", sdist.name, NEVER)

        pip = Venv(tmp_path / "pip-venv", tool="pip")
        result = subprocess.run(
            [str(pip.python), "-m", "pip", "install", "--no-cache-dir", "--index-url",
             reg.index_url, "ipt-rp"],
            capture_output=True, text=True, env=confined_env(),
        )  # fmt: skip
        out = result.stdout + result.stderr
        assert result.returncode != 0, out
        assert f"Requires-Python {NEVER}" in out, out  # "Ignored the following versions"
        assert "No matching distribution found for ipt-rp" in out, out
        assert "build dependencies" not in out and "setup.py" not in out, out

        uv = Venv(tmp_path / "uv-venv", tool="uv")
        result = subprocess.run(
            [uv_bin(), "pip", "install", "--python", str(uv.python), "--no-cache",
             "--index-url", reg.index_url, "ipt-rp"],
            capture_output=True, text=True, env=confined_env(),
        )  # fmt: skip
        out = result.stdout + result.stderr
        assert result.returncode != 0, out
        assert f"Python{NEVER}" in out.replace(" ", ""), out
        assert "build" not in out.lower(), out
    assert not marker.exists(), "an installer ran the sdist's setup.py"
    assert sys.version_info < (3, 99)


def test_twine_form_field_stands_in_and_reindex_derives_it(tmp_path: Path) -> None:
    marker = tmp_path / "built"
    from_pkg_info = make_sdist(tmp_path / "dist", "model-rp", "1.0", "<3.5,>=2.7", marker)
    silent = make_sdist(tmp_path / "dist", "model-rp", "2.0", None, marker)
    data = tmp_path / "data"
    with Registry(data) as reg:
        assert twine_upload(reg.url, from_pkg_info).returncode == 0
        fields = {"name": "model-rp", "version": "2.0", "requires_python": ">=3.98"}
        answer = post_upload(reg.url, silent.name, silent.read_bytes(), fields)
        assert answer.status_code == 200, answer.text
        requires_python_listed(reg, "model-rp", from_pkg_info.name, "<3.5,>=2.7")
        requires_python_listed(reg, "model-rp", silent.name, ">=3.98")
        model = requests.get(f"{reg.url}/api/v1/models/model-rp", timeout=10).json()
        assert [v["requires_python"] for v in model["versions"]] == ["<3.5,>=2.7", ">=3.98"]
    # reindex rebuilds the records: from PKG-INFO, and the form's value where it had none
    for record in (data / "meta").glob("*.tar.gz.json"):
        text = record.read_text()
        record.write_text(
            text.replace('"requires_python": "<3.5,>=2.7"', '"requires_python": null')
        )
    cli = [sys.executable, "-m", "modelpack_registry", "reindex", "--data", str(data)]
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    with Registry(data) as reg:
        requires_python_listed(reg, "model-rp", from_pkg_info.name, "<3.5,>=2.7")
        requires_python_listed(reg, "model-rp", silent.name, ">=3.98")
