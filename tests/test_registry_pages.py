"""The pages for people under a path prefix, with real URLs, saying who did what, and
error hints that name the ``modelpack`` command rather than raw HTTP.

The prefix is served as gunicorn serves one: ``SCRIPT_NAME=/prefix`` in the server's
environment (docs/deployment.md), every request under it, as a reverse proxy that
keeps the path forwards it.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from registry_support import PASSWORDS
from test_registry_catalog import model_wheel, upload

from support import Registry, modelpack

PREFIX = "/team/models"


def _links(page: requests.Response) -> list[str]:
    return [urljoin(page.url, html.unescape(h)) for h in re.findall(r'href="([^"]*)"', page.text)]


def test_every_link_works_under_a_path_prefix(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    with Registry(tmp_path / "data", env={"SCRIPT_NAME": PREFIX}) as reg:
        assert reg.url.endswith(PREFIX)
        upload(reg, model_wheel(dist, "model-foo", "1.0"))
        upload(reg, model_wheel(dist, "model-foo", "1.1"))
        stage = f"{reg.url}/api/v1/models/model-foo/stages/production"
        requests.put(stage, json={"version": "1.0"}).raise_for_status()

        bare = requests.get(reg.url, allow_redirects=False)  # no slash after the prefix
        assert bare.status_code == 301 and bare.headers["Location"] == f"{PREFIX}/"
        moved = requests.get(f"{reg.url}/models/Model_Foo", allow_redirects=False)
        assert moved.headers["Location"] == f"{PREFIX}/models/model-foo/"
        moved = requests.get(f"{reg.url}/simple/Model_Foo/", allow_redirects=False)
        assert moved.headers["Location"] == f"{PREFIX}/simple/model-foo/"

        # Follow every link of the catalog, the model page and the index pages it reaches.
        todo, seen = [f"{reg.url}/"], set()
        while todo:
            url = todo.pop()
            if url in seen:
                continue
            seen.add(url)
            assert urlsplit(url).path.startswith(f"{PREFIX}/"), url
            page = requests.get(url)
            assert page.status_code == 200, url
            if page.headers["Content-Type"].startswith("text/html"):
                todo += [u.split("#")[0] for u in _links(page) if u.startswith(reg.url)]
        visited = {urlsplit(u).path.removeprefix(PREFIX) for u in seen}
        assert {"/", "/models/model-foo/", "/simple/model-foo/"} <= visited
        assert "/packages/model_foo-1.0-py3-none-any.whl" in visited

        doc = requests.get(f"{reg.url}/api/v1/models/model-foo").json()
        url = doc["versions"][0]["files"][0]["url"]
        assert url.startswith(f"{PREFIX}/packages/")
        assert requests.get(f"http://{reg.host}:{reg.port}{url}").status_code == 200

        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q",
             "--dest", str(tmp_path / "got"), "--index-url",
             f"{reg.url}/stages/production/simple/", "model-foo"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert os.listdir(tmp_path / "got") == ["model_foo-1.0-py3-none-any.whl"]


def test_the_catalog_shows_real_commands_and_who_did_what(tmp_path: Path, htpasswd: Path) -> None:
    data, dist = tmp_path / "data", tmp_path / "dist"
    with Registry(data) as reg:
        empty = requests.get(f"{reg.url}/").text
        assert f"<code>modelpack publish --registry {reg.url}</code>" in empty
        upload(reg, model_wheel(dist, "model-foo", "1.0"))
        stage = f"{reg.url}/api/v1/models/model-foo/stages/production"
        requests.put(stage, json={"version": "1.0"}).raise_for_status()
        catalog = requests.get(f"{reg.url}/").text
        assert f"<code>pip install --index-url {reg.url}/simple/ NAME</code>" in catalog
        assert "this registry&gt;" not in catalog and "&lt;" not in catalog.split("<table")[0]

    auth = ("alice", PASSWORDS["alice"])
    args = ["--htpasswd", str(htpasswd), "--admin", "alice"]
    with Registry(data, args=args) as reg:
        upload(reg, model_wheel(dist, "model-foo", "1.1"), auth=auth)
        stage = f"{reg.url}/api/v1/models/model-foo/stages/production"
        requests.put(stage, json={"version": "1.1"}, auth=auth).raise_for_status()
        page = requests.get(f"{reg.url}/models/model-foo/").text
    assert "<td></td>" not in page
    versions = page.split("<h2>Versions</h2>")[1].split("</table>")[0]
    assert re.search(r">1\.1<.*?<td>alice</td>", versions)
    assert re.search(r">1\.0<.*?>anonymous</span></td>", versions)
    history = page.split("<h2>Stage history</h2>")[1]
    assert history.count(">anonymous</span>") == 1 and history.count("<td>alice</td>") == 1
    stages = page.split("<h2>Stages</h2>")[1].split("</table>")[0]
    assert "<td>alice</td>" in stages


def test_error_hints_name_the_modelpack_command(registry: Registry, tmp_path: Path) -> None:
    upload(registry, model_wheel(tmp_path, "model-foo", "1.0"))
    reg = ["--registry", registry.url]
    yanked = modelpack("yank", "model-foo==1.0", "--reason", "wrong labels", *reg)
    assert yanked.returncode == 0, yanked.stderr
    refused = modelpack("promote", "model-foo==1.0", "--stage", "production", *reg)
    assert refused.returncode == 1
    assert "un-yank it first (`modelpack yank model-foo==1.0 --undo`)" in refused.stderr
    missing = modelpack("show", "model-nope", *reg)
    assert missing.returncode == 1 and "`modelpack list` shows them" in missing.stderr
    wrong = modelpack("promote", "model-foo==9.0", "--stage", "production", *reg)
    assert wrong.returncode == 1 and "(`modelpack show model-foo`)" in wrong.stderr
    for result in (refused, missing, wrong):
        assert "/api/v1" not in result.stderr and "Traceback" not in result.stderr

    noreason = requests.put(f"{registry.url}/api/v1/models/model-foo/versions/1.0/yank", json={})
    assert "`modelpack yank NAME==VERSION --reason TEXT`" in noreason.json()["error"]
    page = requests.get(f"{registry.url}/models/model-nope/")
    assert page.status_code == 404 and "`modelpack list`" in page.text
