"""`serve --upstream`: one index for consumers, private names never answered from outside.

The upstream is a second index server on loopback: another `modelpack-registry serve`
(PEP 691 JSON, PEP 658 metadata) or stock pypiserver (PEP 503 HTML only), holding real
wheels. pip and uv are confined to the one index they are given (PIP_CONFIG_FILE=/dev/null,
no find-links, uv --no-config), so the machine's own extra index cannot help them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from registry_support import make_wheel, post_upload, twine_upload

from support import BIN, Registry, Venv, confined_env, uv_bin

JSON = "application/vnd.pypi.simple.v1+json"


def install(venv: Venv, *reqs: str, index_url: str, check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """pip or uv, confined to ``index_url`` alone."""
    if venv.tool == "pip":
        cmd = [str(venv.python), "-m", "pip", "install", "--no-cache-dir", "--index-url", index_url, *reqs]  # fmt: skip
    else:
        cmd = [uv_bin(), "pip", "install", "--no-config", "--no-cache", "--python", str(venv.python),
               "--index-url", index_url, *reqs]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=confined_env(), timeout=300)
    if check:
        assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result


def upload(reg: Registry, path: Path) -> None:
    result = twine_upload(reg.url, path)
    assert result.returncode == 0, result.stdout + result.stderr


def version_in(venv: Venv, module: str) -> str:
    return venv.run(f"import {module}; print({module}.VERSION)").stdout.strip()


def requested(log: Path, start: int = 0) -> str:
    """The upstream's access log from byte ``start``: every path it was asked for."""
    return log.read_bytes()[start:].decode(errors="replace")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Registry]:
    """A second registry holding the public package `tinydep` (1.0 and 2.0)."""
    reg = Registry(tmp_path / "up-data", args=["--access-log"], log=tmp_path / "upstream.log")
    with reg:
        for version in ("1.0", "2.0"):
            upload(reg, make_wheel(tmp_path / "public", "tinydep", version,
                                   requires_python=">=3.8"))  # fmt: skip
        yield reg


def proxy(tmp_path: Path, upstream_url: str, *args: str) -> Registry:
    return Registry(tmp_path / "data", args=["--upstream", upstream_url, *args],
                    log=tmp_path / "proxy.log")  # fmt: skip


def test_a_model_with_a_public_dependency_installs_from_one_index(
    tmp_path: Path, upstream: Registry
) -> None:
    yanked = requests.put(f"{upstream.url}/api/v1/models/tinydep/versions/2.0/yank",
                          json={"reason": "broken build"}, timeout=10)  # fmt: skip
    assert yanked.status_code == 200, yanked.text
    with proxy(tmp_path, upstream.index_url) as reg:
        model = make_wheel(tmp_path / "dist", "model-foo", "1.0", requires=("tinydep>=1,<2",))
        upload(reg, model)
        promoted = requests.put(f"{reg.url}/api/v1/models/model-foo/stages/production",
                                json={"version": "1.0"}, timeout=10)  # fmt: skip
        assert promoted.status_code == 200, promoted.text

        private = requests.get(f"{reg.index_url}model-foo/", headers={"Accept": JSON})
        public = requests.get(f"{reg.index_url}tinydep/", headers={"Accept": JSON})
        assert private.headers["X-Modelpack-Source"] == "private"
        assert public.headers["X-Modelpack-Source"] == "upstream"
        html = requests.get(f"{reg.index_url}tinydep/")
        assert html.headers["X-Modelpack-Source"] == "upstream"
        assert 'data-requires-python="&gt;=3.8"' in html.text
        assert 'data-yanked="broken build">tinydep-2.0-py3-none-any.whl<' in html.text
        assert public.json()["files"][1]["yanked"] == "broken build"
        assert public.json()["files"][0]["yanked"] is False
        files = public.json()["files"]
        assert [f["filename"] for f in files] == [
            "tinydep-1.0-py3-none-any.whl", "tinydep-2.0-py3-none-any.whl"]  # fmt: skip
        upstream_files = requests.get(upstream.index_url + "tinydep/", headers={"Accept": JSON})
        for ours, theirs in zip(files, upstream_files.json()["files"]):
            assert (
                ours["hashes"] == theirs["hashes"]
                and ours["core-metadata"] == theirs["core-metadata"]
            )
            assert ours["requires-python"] == ">=3.8"
            assert ours["url"].startswith("../../upstream/files/tinydep/")
        # PEP 658: the metadata file comes through the registry too, and matches its hash.
        meta = requests.get(f"{reg.index_url}tinydep/{files[0]['url']}.metadata")
        assert meta.status_code == 200
        assert hashlib.sha256(meta.content).hexdigest() == files[0]["core-metadata"]["sha256"]

        for tool in ("pip", "uv"):
            for index in (reg.index_url, f"{reg.url}/stages/production/simple/"):
                venv = Venv(tmp_path / f"{tool}-{len(index)}", tool=tool)
                install(venv, "model-foo", index_url=index)
                assert version_in(venv, "model_foo") == "1.0"
                assert version_in(venv, "tinydep") == "1.0"
        # The cache holds the checked file, under its sha256; nothing went into packages/.
        sha = files[0]["hashes"]["sha256"]
        cached = reg.data / "mirror" / "files" / sha[:2] / sha / "tinydep-1.0-py3-none-any.whl"
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha
        part = requests.get(
            f"{reg.index_url}tinydep/{files[0]['url']}", headers={"Range": "bytes=0-9"}
        )
        assert part.status_code == 206 and part.content == cached.read_bytes()[:10]
        assert part.headers["ETag"] == f'"{sha}"'
        assert sorted(os.listdir(reg.data / "packages")) == ["model_foo-1.0-py3-none-any.whl"]
        assert requests.get(f"{reg.url}/api/v1/models").json()  # only private models listed
        names = [m["name"] for m in requests.get(f"{reg.url}/api/v1/models").json()["models"]]
        assert names == ["model-foo"]
        # A name that is not a valid project name is never sent upstream.
        odd = requests.get(f"{reg.index_url}-/")
        assert odd.status_code == 404 and odd.headers["X-Modelpack-Source"] == "upstream"
        assert "GET /simple/-/" not in upstream.log.read_text()
        health = requests.get(f"{reg.url}/health").json()
        assert health["upstream"]["url"] == upstream.index_url and health["upstream"]["ok"] is True


def test_an_html_only_upstream_works_too(tmp_path: Path, plain_index: str) -> None:
    make_wheel(tmp_path / "pkgs", "tinydep", "1.5")
    with proxy(tmp_path, f"{plain_index}/simple/") as reg:
        upload(reg, make_wheel(tmp_path / "dist", "model-foo", "1.0", requires=("tinydep",)))
        page = requests.get(f"{reg.index_url}tinydep/", headers={"Accept": JSON})
        assert page.status_code == 200 and page.headers["X-Modelpack-Source"] == "upstream"
        assert page.json()["files"][0]["url"].startswith("../../upstream/files/tinydep/")
        for tool in ("pip", "uv"):
            venv = Venv(tmp_path / tool, tool=tool)
            install(venv, "model-foo", index_url=reg.index_url)
            assert version_in(venv, "tinydep") == "1.5"


def test_private_names_are_never_answered_or_asked_upstream(
    tmp_path: Path, upstream: Registry
) -> None:
    # Impostors on the upstream: a higher version, and the same version with other bytes.
    for version, marker in (("99.0", b"impostor"), ("1.0", b"impostor")):
        upload(upstream, make_wheel(tmp_path / "evil", "model-foo", version, payload=marker))
    upload(upstream, make_wheel(tmp_path / "evil", "model-bar", "5.0", payload=b"impostor"))
    page = requests.get(upstream.index_url + "model-foo/", headers={"Accept": JSON}).json()
    evil = page["files"][-1]
    looked_up = upstream.log.stat().st_size  # the test's own look-ups end here
    with proxy(tmp_path, upstream.index_url) as reg:
        reserved = subprocess.run(
            [str(BIN / "modelpack-registry"), "reserve", "model-bar", "--data", str(reg.data)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert reserved.returncode == 0 and "reserved model-bar" in reserved.stdout
        # The first upload of a name the upstream has is allowed, with a warning.
        model = make_wheel(tmp_path / "dist", "model-foo", "1.0", payload=b"private")
        answer = post_upload(reg.url, model.name, model.read_bytes())
        assert answer.status_code == 200, answer.text
        warning = answer.headers["X-Modelpack-Warning"]
        assert "model-foo also exists on the upstream" in warning
        assert "modelpack-registry reserve model-foo" in warning
        assert "model-foo also exists on the upstream" in (tmp_path / "proxy.log").read_text()
        asked_before = upstream.log.stat().st_size
        # A second version is not a first upload: no warning, and nothing asked upstream.
        second = make_wheel(tmp_path / "dist", "model-foo", "1.1", payload=b"private")
        later = post_upload(reg.url, second.name, second.read_bytes())
        assert later.status_code == 200 and "X-Modelpack-Warning" not in later.headers

        for tool in ("pip", "uv"):
            for req in ("model-foo", "model-foo==1.0"):
                venv = Venv(tmp_path / f"{tool}-{req}", tool=tool)
                install(venv, req, index_url=reg.index_url)
                weights = "import importlib.resources as r; print(r.files('model_foo').joinpath('weights.bin').read_text())"  # fmt: skip
                assert venv.run(weights).stdout.strip() == "private"
            venv = Venv(tmp_path / f"{tool}-bar", tool=tool)
            refused = install(venv, "model-bar", index_url=reg.index_url, check=False)
            assert refused.returncode != 0
        page = requests.get(f"{reg.index_url}model-bar/")
        assert page.status_code == 404 and page.headers["X-Modelpack-Source"] == "private"
        staged = requests.get(f"{reg.url}/stages/production/simple/model-foo/")
        assert staged.status_code == 404 and staged.headers["X-Modelpack-Source"] == "private"
        # Not even an impostor's file URL, made up by hand, reaches the upstream.
        path = f"/upstream/files/model-foo/{evil['hashes']['sha256']}/{evil['filename']}"
        assert requests.get(reg.url + path).status_code == 404
    after = requested(upstream.log, asked_before)
    assert "model-foo" not in after and "model_foo" not in after
    log = requested(upstream.log, looked_up)
    assert "model-bar" not in log and "model_bar" not in log


def test_publish_checks_only_private_files(tmp_path: Path, upstream: Registry) -> None:
    """`modelpack publish` asks "is this version taken?": the upstream's files never count."""
    from registry_support import make_big_wheel

    from support import modelpack, ok

    public = make_big_wheel(tmp_path / "public", "model-baz", "1.0", 1024)
    assert post_upload(upstream.url, public.name, public.read_bytes()).status_code == 200
    with proxy(tmp_path, upstream.index_url) as reg:
        assert (
            requests.get(f"{reg.index_url}model-baz/").headers["X-Modelpack-Source"] == "upstream"
        )
        ok(modelpack("publish", make_big_wheel(tmp_path / "dist", "model-baz", "1.0", 2048), "--registry", reg.url))  # fmt: skip
        page = requests.get(f"{reg.index_url}model-baz/", headers={"Accept": JSON})
        assert page.headers["X-Modelpack-Source"] == "private"
        assert [f["url"] for f in page.json()["files"]] == ["../../packages/model_baz-1.0-py3-none-any.whl"]  # fmt: skip


def test_offline_installs_come_from_the_cache_and_bad_bytes_are_refused(
    tmp_path: Path, upstream: Registry
) -> None:
    # --upstream-ttl 0: every page request asks the upstream, so its failure is exercised.
    with proxy(tmp_path, upstream.index_url, "--upstream-ttl", "0") as reg:
        upload(reg, make_wheel(tmp_path / "dist", "model-foo", "1.0", requires=("tinydep",)))
        first = Venv(tmp_path / "first", tool="pip")
        install(first, "model-foo", "tinydep==2.0", index_url=reg.index_url)

        # bytes that do not match the upstream's own hash: 502, and nothing kept
        bad = make_wheel(tmp_path / "public", "tinydep", "3.0")
        upload(upstream, bad)
        listed = requests.get(f"{reg.index_url}tinydep/", headers={"Accept": JSON}).json()
        entry = next(f for f in listed["files"] if f["filename"] == bad.name)
        (upstream.data / "packages" / bad.name).write_bytes(b"not the listed wheel")
        refused = requests.get(f"{reg.index_url}tinydep/{entry['url']}")
        assert refused.status_code == 502 and "but its index lists" in refused.text
        assert "refused, not cached" in (tmp_path / "proxy.log").read_text()
        sha = entry["hashes"]["sha256"]
        assert not (reg.data / "mirror" / "files" / sha[:2] / sha).exists()
        assert os.listdir(reg.data / "mirror" / "tmp") == []
        assert install(Venv(tmp_path / "bad", tool="pip"), "tinydep==3.0",
                       index_url=reg.index_url, check=False).returncode != 0  # fmt: skip

        upstream.stop()
        for tool in ("pip", "uv"):
            venv = Venv(tmp_path / f"offline-{tool}", tool=tool)
            install(venv, "model-foo", "tinydep==2.0", index_url=reg.index_url)
            assert version_in(venv, "tinydep") == "2.0"
        health = requests.get(f"{reg.url}/health")
        assert health.status_code == 200
        status = health.json()["upstream"]
        assert status["ok"] is False and "cannot be reached" in status["last_error"]
        assert status["last_success"].endswith("Z")
        metrics = requests.get(f"{reg.url}/metrics").text
        assert "modelpack_registry_upstream_up 0" in metrics
        kept = [p for p in (reg.data / "mirror" / "files").rglob("*") if p.is_file()]
        assert len(kept) >= 2 and f"modelpack_registry_mirror_files {len(kept)}\n" in metrics
        log = (tmp_path / "proxy.log").read_text()
        assert log.count("(serving cached pages and files") == 1  # logged once, not per request
        never = requests.get(f"{reg.index_url}never-fetched/")
        assert never.status_code == 502 and "no copy is cached" in never.text
        assert never.headers["X-Modelpack-Source"] == "upstream"

    # verify re-hashes the cache; a corrupt file is reported, deleting it is the fix.
    registry_cli = str(BIN / "modelpack-registry")
    cached = next((reg.data / "mirror" / "files").glob("*/*/tinydep-2.0-py3-none-any.whl"))
    clean = subprocess.run([registry_cli, "verify", "--data", str(reg.data)], capture_output=True, text=True)  # fmt: skip
    assert clean.returncode == 0, clean.stdout + clean.stderr
    cached.write_bytes(b"rotten")
    rotten = subprocess.run([registry_cli, "verify", "--data", str(reg.data)], capture_output=True, text=True)  # fmt: skip
    assert rotten.returncode == 1 and "corrupt: mirror/files/" in rotten.stdout


def test_bad_upstream_options_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    registry_cli = str(BIN / "modelpack-registry")
    for args, expected in (
        (["--upstream", "ftp://mirror.example/simple/"], "is not an http(s) URL of a simple index"),
        (["--upstream", "http://127.0.0.1:1/simple/", "--upstream-ttl", "soon"], "is not a number of seconds"),
    ):  # fmt: skip
        result = subprocess.run([registry_cli, "serve", "--data", str(tmp_path / "d"), *args],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode != 0 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_one_fetch_per_page_and_file_however_many_clients_ask(
    tmp_path: Path, upstream: Registry
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Two worker processes: the lock and the cached page are shared through DATA/mirror.
    with proxy(tmp_path, upstream.index_url, "--workers", "2") as reg:
        asked = upstream.log.stat().st_size
        with ThreadPoolExecutor(12) as pool:
            pages = list(pool.map(lambda _: requests.get(f"{reg.index_url}tinydep/", headers={"Accept": JSON}), range(12)))  # fmt: skip
        assert {p.status_code for p in pages} == {200}
        url = urljoin(f"{reg.index_url}tinydep/", pages[0].json()["files"][1]["url"])
        with ThreadPoolExecutor(12) as pool:
            bodies = list(pool.map(lambda _: requests.get(url, timeout=60), range(12)))
        assert {b.status_code for b in bodies} == {200} and len({b.content for b in bodies}) == 1
        log = requested(upstream.log, asked)
        assert log.count("GET /simple/tinydep/") == 1, log
        assert log.count("GET /packages/tinydep-2.0-py3-none-any.whl ") == 1, log


def test_a_static_index_is_asked_with_a_conditional_get(tmp_path: Path) -> None:
    """A plain web server holding a PEP 503 tree (python -m http.server): Last-Modified."""
    import signal
    import time

    from support import free_port

    wheel = make_wheel(tmp_path / "static" / "files", "tinydep", "1.7")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    page = tmp_path / "static" / "simple" / "tinydep" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(f'<a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a>\n')
    port = free_port()
    log = tmp_path / "static.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(tmp_path / "static")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        for _ in range(200):
            with contextlib.suppress(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            time.sleep(0.05)
        with proxy(tmp_path, f"http://127.0.0.1:{port}/simple/", "--upstream-ttl", "0") as reg:
            for _ in range(2):
                answer = requests.get(f"{reg.index_url}tinydep/", headers={"Accept": JSON})
                assert (
                    answer.status_code == 200
                    and answer.json()["files"][0]["filename"] == wheel.name
                )
            venv = Venv(tmp_path / "venv", tool="uv")
            install(venv, "tinydep", index_url=reg.index_url)
            assert version_in(venv, "tinydep") == "1.7"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    asked = log.read_text()
    assert '"GET /simple/tinydep/ HTTP/1.1" 200' in asked
    assert '"GET /simple/tinydep/ HTTP/1.1" 304' in asked  # unchanged: not sent again


def test_proxied_files_resolve_under_a_path_prefix(tmp_path: Path, upstream: Registry) -> None:
    reg = Registry(tmp_path / "data", args=["--upstream", upstream.index_url],
                   env={"SCRIPT_NAME": "/models-registry"})  # fmt: skip
    with reg:
        assert reg.index_url.endswith("/models-registry/simple/")
        venv = Venv(tmp_path / "venv", tool="pip")
        install(venv, "tinydep==2.0", index_url=reg.index_url)
        assert version_in(venv, "tinydep") == "2.0"
