"""Browsing the registry: the catalog, the model pages and the read side of the JSON API.

Real registry processes and real wheels shaped like `modelpack build` output (METADATA with
Keywords and a README, `.dist-info/modelpack.json`), next to plain wheels without a manifest.
The tests of what the registry reads back from its state run on both backends (conftest
``storage``: a data folder, a bucket).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from registry_support import make_wheel, post_upload

from support import Registry, Storage

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src * data:"
EVIL_README = """# Fraud detector

Scores transactions. <script>alert('xss')</script>

<img src=x onerror="alert(1)">

[click me](javascript:alert(1)) and [docs](https://example.org/docs)

| metric | value |
| --- | --- |
| auc | 0.91 |
"""


def model_wheel(
    folder: Path,
    name: str = "model-foo",
    version: str = "1.0",
    *,
    task: str = "regression",
    framework: str = "python",
    tags: tuple[str, ...] = ("tabular",),
    readme: str = "# Model\n\nA model card.\n",
    requires: tuple[str, ...] = ("numpy>=1.24",),
    summary: str = "A tiny test model",
    manifest: bool = True,
    card: dict[str, Any] | None = None,
) -> Path:
    """A wheel shaped like `modelpack build` output (installable, with no real deps);
    *card* (metrics, dataset, lineage) replaces keys of its manifest."""
    dist = name.replace("-", "_")
    distinfo = f"{dist}-{version}.dist-info"
    keywords = ",".join(["modelpack-model", f"task:{task}", f"framework:{framework}", *tags])
    metadata = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
        f"Keywords: {keywords}\nLicense-Expression: MIT\nRequires-Python: >=3.8\n"
        + "".join(f"Requires-Dist: {r}; extra == 'never'\n" for r in requires)
        + "Description-Content-Type: text/markdown\n\n"
        + readme
    ).encode()
    weights = b"\x00" * 64
    files = {
        f"{dist}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist}/weights/model.bin": weights,
        f"{distinfo}/METADATA": metadata,
        f"{distinfo}/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    if manifest:
        files[f"{distinfo}/modelpack.json"] = json.dumps(
            {
                "name": name,
                "version": version,
                "package": dist,
                "entry_point": f"{dist}:load",
                "weights_dir": "weights",
                "task": task,
                "framework": framework,
                "tags": list(tags),
                "metrics": {"rmse": 0.5},
                "license": "MIT",
                "input_example": [[1.0, 2.0]],
                "weights": [
                    {
                        "path": "weights/model.bin",
                        "size": len(weights),
                        "sha256": hashlib.sha256(weights).hexdigest(),
                    }
                ],
                **(card or {}),
            }
        ).encode()
    lines = []
    for member, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{member},sha256={digest},{len(data)}")
    lines.append(f"{distinfo}/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{distinfo}/RECORD", "\n".join(lines) + "\n")
    return path


@pytest.fixture
def registry(storage: Storage) -> Iterator[Registry]:
    """A registry on each backend (conftest ``storage``: a folder, a bucket)."""
    with Registry(storage) as reg:
        yield reg


def upload(reg: Registry, wheel: Path, **kw: object) -> None:
    response = post_upload(reg.url, wheel.name, wheel.read_bytes(), **kw)
    assert response.status_code == 200, response.text


def test_catalog_lists_models_and_filters_without_javascript(
    registry: Registry, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    upload(registry, model_wheel(dist, "model-foo", "1.0", tags=("tabular", "house-prices")))
    upload(registry, model_wheel(dist, "model-foo", "1.1", tags=("tabular", "house-prices")))
    upload(registry, model_wheel(dist, "fraud-net", "0.3", task="classification", tags=("nlp",)))
    plain = make_wheel(dist, "plain-lib", "2.0", summary="Not built by modelpack")
    upload(registry, plain)

    page = requests.get(f"{registry.url}/")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == CSP
    html = page.text
    for text in ("model-foo", "1.1", "fraud-net", "classification", "house-prices", "plain-lib"):
        assert text in html
    assert 'href="models/model-foo/"' in html
    assert "<script" not in html

    narrowed = requests.get(f"{registry.url}/", params={"q": "classification"}).text
    assert "fraud-net" in narrowed and "model-foo" not in narrowed
    assert "1 of 3 models" in narrowed
    assert "model-foo" in requests.get(f"{registry.url}/", params={"q": "HOUSE tabular"}).text
    none = requests.get(f"{registry.url}/", params={"q": '"><script>x'}).text
    assert "<script>" not in none and "No model matches" in none

    listed = requests.get(f"{registry.url}/api/v1/models").json()["models"]
    assert [m["name"] for m in listed] == ["fraud-net", "model-foo", "plain-lib"]
    foo = listed[1]
    assert foo == {
        "name": "model-foo",
        "version": "1.1",
        "summary": "A tiny test model",
        "task": "regression",
        "framework": "python",
        "tags": ["tabular", "house-prices"],
        "license": "MIT",
        "size": (dist / "model_foo-1.1-py3-none-any.whl").stat().st_size,
        "upload_time": foo["upload_time"],
        "versions": ["1.0", "1.1"],
        "stages": {},
        # a metric written as a plain number (older manifests) counts as higher-is-better
        "metrics": {"rmse": {"value": 0.5, "better": "higher"}},
        "dataset": None,
        "lineage": None,
    }
    assert foo["upload_time"].endswith("Z")
    assert listed[2]["task"] is None and listed[2]["summary"] == "Not built by modelpack"
    only = requests.get(f"{registry.url}/api/v1/models", params={"q": "nlp"}).json()
    assert [m["name"] for m in only["models"]] == ["fraud-net"]


def test_model_page_renders_the_card_inert_and_everything_escaped(
    registry: Registry, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    upload(registry, model_wheel(dist, "fraud-net", "1.0", readme=EVIL_README))
    upload(registry, model_wheel(dist, "fraud-net", "2.0", readme=EVIL_README, tags=("<b>x",)))

    redirect = requests.get(f"{registry.url}/models/Fraud_Net", allow_redirects=False)
    assert redirect.status_code == 301
    assert redirect.headers["Location"] == "/models/fraud-net/"
    page = requests.get(f"{registry.url}/models/Fraud_Net")
    assert page.status_code == 200 and page.url.endswith("/models/fraud-net/")
    assert page.headers["Content-Security-Policy"] == CSP
    html = page.text
    assert "<script" not in html.lower()
    assert 'href="javascript:' not in html  # the link is dropped, its text shown
    assert "<img src=x" not in html and "onerror=&quot;" in html  # only as escaped text
    assert "&lt;script&gt;" in html  # shown as text, not run
    assert '<a href="https://example.org/docs">docs</a>' in html
    assert "<h1>Fraud detector</h1>" in html and "<td>0.91</td>" in html
    assert "&lt;b&gt;x" in html and "<b>x" not in html
    index = f"{registry.url}/simple/"
    assert f"pip install fraud-net==2.0 --index-url {index}" in html
    assert f"uv pip install fraud-net==2.0 --index-url {index}" in html
    assert "numpy&gt;=1.24" in html  # Requires-Dist
    assert "weights/model.bin" in html and "rmse" in html  # manifest
    assert ">1.0<" in html and ">2.0<" in html
    assert requests.get(f"{registry.url}/models/nope/").status_code == 404


def test_model_json_api_shape(registry: Registry, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    upload(registry, model_wheel(dist, "model-foo", "1.0"))
    upload(registry, model_wheel(dist, "model-foo", "1.10"))
    upload(registry, model_wheel(dist, "model-foo", "1.9"))
    doc = requests.get(f"{registry.url}/api/v1/models/Model_Foo").json()
    assert set(doc) == {
        "name", "summary", "latest", "manifest", "requires_dist", "stages", "history", "versions",
        "task", "framework", "tags", "metrics", "dataset", "lineage",
    }  # fmt: skip
    assert doc["name"] == "model-foo" and doc["latest"] == "1.10"
    assert doc["manifest"]["version"] == "1.10" and doc["manifest"]["task"] == "regression"
    assert doc["requires_dist"] == ["numpy>=1.24; extra == 'never'"]
    assert doc["stages"] == {} and doc["history"] == []
    assert [v["version"] for v in doc["versions"]] == ["1.0", "1.9", "1.10"]
    first = doc["versions"][0]
    assert set(first) == {
        "version", "upload_time", "uploaded_by", "yanked", "yanked_reason", "summary",
        "requires_python", "requires_dist", "manifest", "files", "metrics", "dataset", "lineage",
    }  # fmt: skip
    assert first["uploaded_by"] is None  # an anonymous (loopback) registry
    assert first["yanked"] is False and first["yanked_reason"] is None
    assert first["requires_python"] == ">=3.8"
    wheel = dist / "model_foo-1.0-py3-none-any.whl"
    assert first["files"] == [
        {
            "filename": wheel.name,
            "url": f"/packages/{wheel.name}",
            "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "size": wheel.stat().st_size,
            "upload_time": first["upload_time"],
            "uploaded_by": None,
            "upload_token": None,
        }
    ]
    assert requests.get(f"{registry.url}{first['files'][0]['url']}").content == wheel.read_bytes()
    missing = requests.get(f"{registry.url}/api/v1/models/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert requests.get(f"{registry.url}/api/v1/nothing").status_code == 404
    assert requests.post(f"{registry.url}/api/v1/models").status_code == 405


def test_openapi_document_validates(registry: Registry) -> None:
    from openapi_spec_validator import validate

    response = requests.get(f"{registry.url}/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert "/api/v1/models/{name}/stages/{stage}" in doc["paths"]


def test_manifest_survives_reindex_and_old_records_are_filled(
    storage: Storage, tmp_path: Path
) -> None:
    data = storage
    dist = tmp_path / "dist"
    wheel = model_wheel(dist, "model-foo", "1.0")
    with Registry(data) as reg:
        upload(reg, wheel)
    record = f"meta/{wheel.name}.json"
    stored = json.loads(data.read_text(record))
    assert stored["manifest"]["weights"][0]["path"] == "weights/model.bin"
    assert stored["keywords"][0] == "modelpack-model"
    for key in ("manifest", "keywords", "requires_dist", "classifiers", "license"):
        del stored[key]  # a record written before these fields existed
    data.write_text(record, json.dumps(stored))
    result = data.cli("reindex")
    assert result.returncode == 0, result.stderr
    assert json.loads(data.read_text(record))["manifest"]["task"] == "regression"
    with Registry(data) as reg:
        listed = requests.get(f"{reg.url}/api/v1/models").json()["models"]
        assert listed[0]["task"] == "regression"


def test_catalog_of_a_thousand_models(tmp_path: Path) -> None:
    """Records placed by hand (as a restore would) and listed from the in-memory index.

    Its speed is measured in benchmarks/, never asserted here."""
    # folder only: 2000 objects placed by hand are ~2000 requests to moto (most of a
    # minute); a big bucket's listing is measured in benchmarks/ instead
    data = tmp_path / "data"
    dist = tmp_path / "dist"
    source = model_wheel(dist, "model-x", "1.0")
    raw = json.loads(json.dumps({"manifest": None}))
    with Registry(data) as reg:
        upload(reg, source)
        template = json.loads((data / "meta" / f"{source.name}.json").read_text())
    for i in range(1000):
        name = f"model-{i:04d}"
        filename = f"model_{i:04d}-1.0-py3-none-any.whl"
        (data / "packages" / filename).hardlink_to(data / "packages" / source.name)
        record = {**template, **raw, "filename": filename, "name": name}
        record["summary"] = f"model number {i}"
        (data / "meta" / f"{filename}.json").write_text(json.dumps(record))
    with Registry(data) as reg:
        requests.get(f"{reg.url}/").raise_for_status()  # builds the per-snapshot rows
        page = requests.get(f"{reg.url}/")
        assert page.text.count('class="model"') == 1001
        found = requests.get(f"{reg.url}/", params={"q": "number 0042"})
        assert found.text.count('class="model"') == 1
        assert len(requests.get(f"{reg.url}/api/v1/models").json()["models"]) == 1001


def test_model_page_install_lines_say_when_dependencies_cannot_be_found(tmp_path: Path) -> None:
    """Without --upstream the page does not stop at a command that fails for a model with
    public dependencies: it says why and gives the --no-deps route; with one it does not."""
    wheel = make_wheel(tmp_path / "w", "model-deps", "1.0", requires=("six>=1.16",))
    plain = make_wheel(tmp_path / "w", "model-plain", "1.0")
    with Registry(tmp_path / "no-upstream") as reg:
        upstream_url = reg.index_url
        for path in (wheel, plain):
            assert post_upload(reg.url, path.name, path.read_bytes()).status_code == 200
        html = requests.get(f"{reg.url}/models/model-deps/", timeout=10).text
        assert f"pip install model-deps==1.0 --index-url {reg.index_url}" in html
        assert "no upstream index" in html and "(six)" in html
        assert f"pip install --no-deps model-deps==1.0 --index-url {reg.index_url}" in html
        assert "--extra-index-url</code>: then any index" in html
        plain_html = requests.get(f"{reg.url}/models/model-plain/", timeout=10).text
        assert "no upstream index" not in plain_html
        with Registry(tmp_path / "with-upstream", args=["--upstream", upstream_url]) as proxy:
            assert post_upload(proxy.url, wheel.name, wheel.read_bytes()).status_code == 200
            html = requests.get(f"{proxy.url}/models/model-deps/", timeout=10).text
            assert f"pip install model-deps==1.0 --index-url {proxy.index_url}" in html
            assert "no upstream index" not in html and "--no-deps" not in html
