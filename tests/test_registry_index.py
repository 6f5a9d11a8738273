"""The registry as its users meet it: twine uploads, pip/uv installs, the index pages.

Every test talks over HTTP to a real `modelpack-registry serve` process, on both
backends (conftest ``storage``/``module_storage``: a data folder, a bucket).
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pypi_simple import ACCEPT_JSON_ONLY, PyPISimple
from registry_support import make_wheel, post_upload, twine_upload

from support import Registry, Storage, Venv

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@pytest.fixture(scope="module")
def shared(module_storage: Storage) -> Iterator[Registry]:
    """One registry on each backend for the read-only and rejection tests of this module."""
    with Registry(module_storage) as reg:
        yield reg


@pytest.fixture
def registry(storage: Storage) -> Iterator[Registry]:
    """A registry on each backend (conftest ``storage``: a folder, a bucket)."""
    with Registry(storage) as reg:
        yield reg


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_twine_upload_then_pip_and_uv_install(registry: Registry, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "model-foo", "1.0", requires_python=">=3.8")
    result = twine_upload(registry.url, wheel)
    assert result.returncode == 0, result.stdout + result.stderr

    pip_env = Venv(tmp_path / "pip-venv", tool="pip")
    out = pip_env.install("model-foo==1.0", index_url=registry.index_url, extra=["-v"])
    # pip fetched the PEP 658 metadata file instead of the wheel to resolve.
    assert "model_foo-1.0-py3-none-any.whl.metadata" in out.stdout + out.stderr
    assert pip_env.run("import model_foo; print(model_foo.VERSION)").stdout.strip() == "1.0"

    uv_env = Venv(tmp_path / "uv-venv", tool="uv")
    uv_env.install("model-foo", index_url=registry.index_url)
    assert uv_env.run("import model_foo; print(model_foo.VERSION)").stdout.strip() == "1.0"


def test_index_pages_parsed_by_pypi_simple(registry: Registry, tmp_path: Path) -> None:
    old = make_wheel(tmp_path, "Model.Bar", "1.0", requires_python=">=3.8,<4")
    new = make_wheel(tmp_path, "model-bar", "2.0")
    assert twine_upload(registry.url, old, new).returncode == 0
    marker = json.dumps({"reason": "wrong <weights>"})
    registry.storage.write_text(f"state/yanked/{old.name}.json", marker)
    registry.storage.write_text("generation", "1000\n")  # what the yank command will do

    for accept in (ACCEPT_JSON_ONLY, "text/html"):
        with PyPISimple(registry.index_url, accept=accept) as client:
            assert list(client.get_index_page().projects) == ["model-bar"]
            page = client.get_project_page("model-bar")
        files = {p.filename: p for p in page.packages}
        assert set(files) == {old.name, new.name}
        first = files[old.name]
        assert first.digests["sha256"] == sha256(old)
        assert first.requires_python == ">=3.8,<4"
        assert first.is_yanked and first.yanked_reason == "wrong <weights>"
        assert first.has_metadata
        metadata_url = first.url.split("#")[0] + ".metadata"
        metadata = requests.get(metadata_url, timeout=10)
        assert metadata.status_code == 200
        assert first.metadata_digests == {"sha256": hashlib.sha256(metadata.content).hexdigest()}
        assert b"Name: Model.Bar" in metadata.content
        assert not files[new.name].is_yanked
        if accept == ACCEPT_JSON_ONLY:
            assert first.upload_time is not None and first.size == old.stat().st_size
            assert page.versions == ["1.0", "2.0"]
            assert page.tracks == [] and page.repository_version in ("1.1", "1.2", "1.3")


def test_content_negotiation_redirects_and_unknown_names(shared: Registry, tmp_path: Path) -> None:
    assert twine_upload(shared.url, make_wheel(tmp_path, "neg-model", "0.1")).returncode == 0
    url = shared.index_url + "neg-model/"
    weighted = f"text/html;q=0.2, {JSON_TYPE};q=0.9"
    assert requests.get(url, headers={"Accept": weighted}).headers["Content-Type"] == JSON_TYPE
    html = requests.get(url, headers={"Accept": "text/html"})
    assert html.headers["Content-Type"].startswith("text/html")
    assert requests.get(url + "?format=" + JSON_TYPE).headers["Content-Type"] == JSON_TYPE
    # What a cache needs: every answer chosen by Accept says so, the 406 too.
    for accept in (JSON_TYPE, "text/html", "image/png"):
        for page in (url, shared.index_url):
            answer = requests.get(page, headers={"Accept": accept})
            assert answer.status_code == (406 if accept == "image/png" else 200)
            assert answer.headers["Vary"] == "Accept", (page, accept, answer.headers)
    for spelling in ("Neg_Model/", "neg.model", "neg-model"):
        moved = requests.get(shared.index_url + spelling, allow_redirects=False)
        assert moved.status_code == 301
        assert moved.headers["Location"].endswith("/simple/neg-model/")
    # Unknown names are not redirected to the public index (dependency confusion).
    unknown = requests.get(shared.index_url + "requests/", allow_redirects=False)
    assert unknown.status_code == 404


def test_reupload_is_refused_and_stored_bytes_unchanged(registry: Registry, tmp_path: Path) -> None:
    first = make_wheel(tmp_path / "a", "model-foo", "1.0", payload=b"first")
    assert twine_upload(registry.url, first).returncode == 0
    stored = f"packages/{first.name}"
    before = registry.storage.store.read_bytes(stored)
    second = make_wheel(tmp_path / "b", "model-foo", "1.0", payload=b"second, different")
    result = twine_upload(registry.url, second)
    assert result.returncode != 0
    assert "published versions are immutable" in " ".join((result.stdout + result.stderr).split())
    response = post_upload(registry.url, second.name, second.read_bytes())
    assert response.status_code == 409
    assert "bump the version" in response.text
    assert registry.storage.store.read_bytes(stored) == before
    assert registry.storage.pending() == []


def _zip_with_evil_member(tmp_path: Path) -> bytes:
    wheel = make_wheel(tmp_path / "evil", "evil-model", "1.0", extra_members={"../x.py": b"1"})
    return wheel.read_bytes()


BAD_UPLOADS = {
    "random bytes": ("bad_model-1.0-py3-none-any.whl", lambda t: b"\x00not a zip" * 50, {}),
    "other project": (
        "model_foo-1.0-py3-none-any.whl",
        lambda t: make_wheel(t / "o", "model-foo", "1.0", meta_name="other-model").read_bytes(),
        {},
    ),
    "version mismatch": (
        "model_foo-1.0-py3-none-any.whl",
        lambda t: make_wheel(t / "v", "model-foo", "1.0", meta_version="2.0").read_bytes(),
        {},
    ),
    "form version": (
        "model_foo-1.0-py3-none-any.whl",
        lambda t: make_wheel(t / "f", "model-foo", "1.0").read_bytes(),
        {"version": "1.1"},
    ),
    "dot file": (".model_foo-1.0-py3-none-any.whl", lambda t: b"x", {}),
    "path separator": ("sub/model_foo-1.0-py3-none-any.whl", lambda t: b"x", {}),
    "backslash": ("..\\model_foo-1.0-py3-none-any.whl", lambda t: b"x", {}),
    "empty file": ("model_foo-1.0-py3-none-any.whl", lambda t: b"", {}),
    "unknown type": ("model_foo-1.0.exe", lambda t: b"MZ", {}),
    "sha256 mismatch": (
        "model_foo-1.0-py3-none-any.whl",
        lambda t: make_wheel(t / "s", "model-foo", "1.0").read_bytes(),
        {"sha256_digest": "0" * 64},
    ),
    "oversize field": (
        "model_foo-1.0-py3-none-any.whl",
        lambda t: make_wheel(t / "d", "model-foo", "1.0").read_bytes(),
        {"comment": "x" * (65 * 1024)},  # the description may be 1 MiB (limits.py)
    ),
    "member escapes": ("evil_model-1.0-py3-none-any.whl", _zip_with_evil_member, {}),
    "bad sdist": ("model-foo-1.0.tar.gz", lambda t: b"not gzip at all", {}),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_rejected_and_nothing_written(
    shared: Registry, tmp_path: Path, case: str
) -> None:
    filename, make, fields = BAD_UPLOADS[case]
    before = {sub: shared.storage.listing(sub) for sub in ("packages", "meta")}
    response = post_upload(shared.url, filename, make(tmp_path), fields)
    assert response.status_code == 400, response.text
    assert len(response.text.strip().splitlines()) == 1 and len(response.text) > 10
    assert {sub: shared.storage.listing(sub) for sub in ("packages", "meta")} == before
    assert shared.storage.pending() == []


def test_other_actions_are_refused(shared: Registry) -> None:
    response = requests.post(shared.url + "/", data={":action": "remove_pkg", "name": "x"})
    assert response.status_code in (400, 405)
    assert requests.delete(shared.url + "/packages/x.whl").status_code == 405


def test_packages_range_etag_and_304(storage: Storage, tmp_path: Path) -> None:
    """The registry serving a file itself: from a folder, or proxied from a bucket (by
    default a bucket's files are a redirect to the bucket, which answers these itself)."""
    proxied = [] if storage.kind == "folder" else ["--no-s3-redirect"]
    with Registry(storage, args=proxied) as reg:
        range_etag_and_304(reg, tmp_path)


def range_etag_and_304(shared: Registry, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "range-model", "1.0", payload=bytes(range(256)) * 100)
    assert twine_upload(shared.url, wheel).returncode == 0
    url = f"{shared.url}/packages/{wheel.name}"
    content = wheel.read_bytes()
    full = requests.get(url)
    assert full.content == content
    assert full.headers["ETag"] == f'"{sha256(wheel)}"' and "Last-Modified" in full.headers
    part = requests.get(url, headers={"Range": "bytes=10-109"})
    assert part.status_code == 206 and part.content == content[10:110]
    assert part.headers["Content-Range"] == f"bytes 10-109/{len(content)}"
    tail = requests.get(url, headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == content[-7:]
    assert requests.get(url, headers={"Range": f"bytes={len(content)}-"}).status_code == 416
    cached = requests.get(url, headers={"If-None-Match": full.headers["ETag"]})
    assert cached.status_code == 304 and cached.content == b""
    head = requests.head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(content)


@pytest.mark.parametrize(
    "path",
    [
        "/packages/..%2f..%2fgeneration",
        "/packages/%2e%2e/generation",
        "/packages/../meta/x.json",
        "/packages/..%2fmeta",
        "/packages/%2Fetc%2Fpasswd",
        "/packages/..%5c..%5cgeneration",
        "/packages/.lock",
        "/packages/",
        "/packages/nothere-1.0-py3-none-any.whl.metadata",
    ],
)
def test_path_traversal_never_escapes_packages(shared: Registry, path: str) -> None:
    conn = http.client.HTTPConnection(shared.host, shared.port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status in (400, 404), (path, response.status)
    assert b"root:" not in body and b"sha256" not in body


def test_catalog_and_health(shared: Registry, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "catalog-model", "3.0", summary="<b>not bold</b>")
    assert twine_upload(shared.url, wheel).returncode == 0
    page = requests.get(shared.url + "/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'href="/simple/catalog-model/"' in page.text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page.text and "<b>not bold" not in page.text
    health = requests.get(shared.url + "/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "upstream": None}
