"""Stages as aliases and yank, as a platform team and a consumer live them.

Promote a version to `production`, install it with pip/uv from the stage index, move the
stage, roll it back, yank a bad version; with credentials, and with two servers on one
data folder or bucket. Every test runs on both backends (conftest ``storage``). Real
registry processes, real installers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
from test_registry_catalog import model_wheel, upload

from support import Registry, Storage, Venv

API = "/api/v1/models"


@pytest.fixture
def registry(storage: Storage) -> Iterator[Registry]:
    """A registry on each backend (conftest ``storage``: a folder, a bucket)."""
    with Registry(storage) as reg:
        yield reg


def promote(reg: Registry, name: str, stage: str, version: str, **kw: object) -> requests.Response:
    url = f"{reg.url}{API}/{name}/stages/{stage}"
    return requests.put(url, json={"version": version}, timeout=10, **kw)  # type: ignore[arg-type]


def yank(reg: Registry, name: str, version: str, reason: object, **kw: object) -> requests.Response:
    url = f"{reg.url}{API}/{name}/versions/{version}/yank"
    return requests.put(url, json={"reason": reason}, timeout=10, **kw)  # type: ignore[arg-type]


def installed_version(venv: Venv) -> str:
    return venv.run("import model_foo; print(model_foo.VERSION)").stdout.strip()


def publish_two(reg: Registry, tmp_path: Path) -> None:
    for version in ("1.0", "2.0"):
        upload(reg, model_wheel(tmp_path / "dist", "model-foo", version))


def test_promote_install_move_and_roll_back(registry: Registry, tmp_path: Path) -> None:
    publish_two(registry, tmp_path)
    stage_index = f"{registry.url}/stages/production/simple/"
    assert requests.get(f"{stage_index}model-foo/").status_code == 404

    first = promote(registry, "Model_Foo", "production", "1.0")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["stage"] == "production" and body["version"] == "1.0"
    assert body["previous"] is None and body["by"] is None and body["at"].endswith("Z")

    files = requests.get(f"{stage_index}model-foo/", params={"format": "json"})
    assert [f["filename"] for f in files.json()["files"]] == ["model_foo-1.0-py3-none-any.whl"]
    root = requests.get(stage_index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert root.json()["projects"] == [{"name": "model-foo"}]
    venv = Venv(tmp_path / "uv-env", tool="uv")
    venv.install("model-foo", index_url=stage_index)
    assert installed_version(venv) == "1.0"

    moved = promote(registry, "model-foo", "production", "2.0").json()
    assert moved["previous"] == "1.0" and moved["version"] == "2.0"
    venv.install("--reinstall", "model-foo", index_url=stage_index)
    assert installed_version(venv) == "2.0"

    back = promote(registry, "model-foo", "production", "1.0").json()
    assert back["previous"] == "2.0"
    pip_env = Venv(tmp_path / "pip-env", tool="pip")
    pip_env.install("model-foo", index_url=stage_index)  # pip follows ../../../../packages/
    assert installed_version(pip_env) == "1.0"

    doc = requests.get(f"{registry.url}{API}/model-foo").json()
    assert doc["stages"]["production"]["version"] == "1.0"
    assert doc["stages"]["production"]["promoted_by"] is None
    assert [(h["from"], h["to"]) for h in doc["history"]] == [
        (None, "1.0"), ("1.0", "2.0"), ("2.0", "1.0")
    ]  # fmt: skip
    listed = requests.get(f"{registry.url}{API}").json()["models"]
    assert listed[0]["stages"] == {"production": "1.0"}
    page = requests.get(f"{registry.url}/models/model-foo/").text
    assert f"pip install model-foo --index-url {stage_index}" in page

    missing = promote(registry, "model-foo", "production", "9.9")
    assert missing.status_code == 404
    assert "9.9" in missing.json()["error"] and "1.0, 2.0" in missing.json()["error"]
    assert promote(registry, "model-nope", "production", "1.0").status_code == 404
    bad = promote(registry, "model-foo", "Prod!", "1.0")
    assert bad.status_code == 400 and "stage name" in bad.json()["error"]
    no_body = requests.put(f"{registry.url}{API}/model-foo/stages/staging", data=b"nope")
    assert no_body.status_code == 400 and "JSON" in no_body.json()["error"]

    removed = requests.delete(f"{registry.url}{API}/model-foo/stages/production")
    assert removed.status_code == 200 and removed.json()["previous"] == "1.0"
    assert removed.json()["version"] is None
    time.sleep(0.3)
    assert requests.get(f"{stage_index}model-foo/").status_code == 404
    history = requests.get(f"{registry.url}{API}/model-foo").json()["history"]
    assert history[-1]["to"] is None and len(history) == 4
    assert requests.delete(f"{registry.url}{API}/model-foo/stages/production").status_code == 404


def test_yank_hides_a_version_from_unpinned_installs(registry: Registry, tmp_path: Path) -> None:
    publish_two(registry, tmp_path)
    reason = "weights trained on the wrong split"
    assert yank(registry, "model-foo", "2.0", "").status_code == 400
    assert yank(registry, "model-foo", "2.0", "x" * 501).status_code == 400
    done = yank(registry, "model-foo", "2.0", reason)
    assert done.status_code == 200
    assert done.json() == {"name": "model-foo", "version": "2.0", "yanked": True, "reason": reason}
    stored = json.loads(
        registry.storage.read_text("state/yanked/model_foo-2.0-py3-none-any.whl.json")
    )
    assert stored["reason"] == reason and stored["by"] is None and stored["at"]

    venv = Venv(tmp_path / "uv-env", tool="uv")
    venv.install("model-foo", index_url=registry.index_url)
    assert installed_version(venv) == "1.0"
    pip_env = Venv(tmp_path / "pip-env", tool="pip")
    pinned = pip_env.install("model-foo==2.0", index_url=registry.index_url)
    assert installed_version(pip_env) == "2.0"
    assert "yanked" in pinned.stderr and reason in pinned.stderr

    doc = requests.get(f"{registry.url}{API}/model-foo").json()
    assert doc["latest"] == "1.0"
    assert doc["versions"][1]["yanked"] is True and doc["versions"][1]["yanked_reason"] == reason
    page = requests.get(f"{registry.url}/models/model-foo/").text
    assert f"yanked: {reason}" in page
    refused = promote(registry, "model-foo", "production", "2.0")
    assert refused.status_code == 409 and "yanked" in refused.json()["error"]

    undone = requests.delete(f"{registry.url}{API}/model-foo/versions/2.0/yank")
    assert undone.status_code == 200 and undone.json()["yanked"] is False
    time.sleep(0.3)
    assert "data-yanked" not in requests.get(f"{registry.index_url}model-foo/").text
    assert requests.get(f"{registry.url}{API}").json()["models"][0]["version"] == "2.0"
    assert promote(registry, "model-foo", "production", "2.0").status_code == 200


def test_writes_need_credentials_and_record_the_user(storage: Storage, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    with Registry(storage, args=["--htpasswd", str(htpasswd)]) as reg:
        upload(reg, model_wheel(tmp_path / "dist", "model-foo", "1.0"), auth=("alice", "s3cret"))
        anonymous = promote(reg, "model-foo", "production", "1.0")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="modelpack"'
        assert "credentials" in anonymous.json()["error"]
        wrong = promote(reg, "model-foo", "production", "1.0", auth=("alice", "nope"))
        assert wrong.status_code == 403 and "error" in wrong.json()
        assert yank(reg, "model-foo", "1.0", "bad").status_code == 401
        ok = promote(reg, "model-foo", "production", "1.0", auth=("alice", "s3cret"))
        assert ok.status_code == 200 and ok.json()["by"] == "alice"
        doc = requests.get(f"{reg.url}{API}/model-foo").json()  # reads stay open
        assert doc["stages"]["production"]["promoted_by"] == "alice"
        assert doc["history"][0]["by"] == "alice"
        assert yank(reg, "model-foo", "1.0", "bad", auth=("alice", "s3cret")).status_code == 200
        stored = json.loads(
            reg.storage.read_text("state/yanked/model_foo-1.0-py3-none-any.whl.json")
        )
        assert stored["by"] == "alice"


def test_two_servers_on_one_store_share_stages_and_lose_nothing(
    storage: Storage, tmp_path: Path
) -> None:
    data = storage
    with Registry(data) as one, Registry(data) as two:
        publish_two(one, tmp_path)
        assert promote(two, "model-foo", "production", "1.0").status_code == 200
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            doc = requests.get(f"{one.url}{API}/model-foo").json()
            if doc["stages"].get("production", {}).get("version") == "1.0":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("a promote through one server was not visible within 1 s")
        errors: list[str] = []

        def hammer(reg: Registry, stage: str) -> None:
            for i in range(10):
                r = promote(reg, "model-foo", stage, "1.0" if i % 2 else "2.0")
                if r.status_code != 200:
                    errors.append(r.text)

        threads = [
            threading.Thread(target=hammer, args=(reg, stage))
            for reg in (one, two)
            for stage in ("staging", "canary")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        time.sleep(0.3)
        history = requests.get(f"{one.url}{API}/model-foo").json()["history"]
        assert len(history) == 1 + 40
        assert sum(h["stage"] == "staging" for h in history) == 20

    verify = data.cli("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "orphan" not in verify.stdout + verify.stderr
    reindex = data.cli("reindex")
    assert reindex.returncode == 0, reindex.stderr
    assert data.exists("state/stages/model-foo.json")
