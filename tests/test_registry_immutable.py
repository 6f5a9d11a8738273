"""A published version cannot change: build tags, spellings, equal versions, races, re-runs.

Issue 13 §3 and §4: once a version has a file, a file pip could take instead of it is
refused with 409, decided under the publish lock; the same bytes again answer 200 so
that every client's re-run succeeds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from registry_support import make_sdist, make_wheel, post_upload, twine_upload

from support import Registry, Storage, Venv, clean_env, uv_bin

API = "/api/v1/models"


@pytest.fixture
def registry(storage: Storage) -> Iterator[Registry]:
    """A registry on each backend (conftest ``storage``: a folder, a bucket)."""
    with Registry(storage) as reg:
        yield reg


def respell(wheel: Path, filename: str) -> Path:
    """The same wheel under another file name (a build tag, a platform, a spelling)."""
    target = wheel.parent / "respelled" / filename
    target.parent.mkdir(exist_ok=True)
    os.link(wheel, target)
    return target


def upload(reg: Registry, path: Path) -> requests.Response:
    return post_upload(reg.url, path.name, path.read_bytes())


def test_a_promoted_version_gains_no_file_pip_could_prefer(
    registry: Registry, tmp_path: Path
) -> None:
    first = make_wheel(tmp_path / "a", "model-ver", "1.0", payload=b"the reviewed weights")
    assert twine_upload(registry.url, first).returncode == 0
    promoted = requests.put(f"{registry.url}{API}/model-ver/stages/production",
                            json={"version": "1.0"}, timeout=10)  # fmt: skip
    assert promoted.status_code == 200, promoted.text

    other = make_wheel(tmp_path / "b", "model-ver", "1.0", payload=b"other weights")
    build_tag = upload(registry, respell(other, "model_ver-1.0-1-py3-none-any.whl"))
    assert build_tag.status_code == 409, build_tag.text
    assert f"already exists as {first.name}" in build_tag.text
    for equal in ("1.0.0", "1.0.0.0"):
        answer = upload(registry, make_wheel(tmp_path / equal, "model-ver", equal))
        assert answer.status_code == 409, answer.text
        assert f"is the published version 1.0 ({first.name}) spelled another way" in answer.text
    platform = respell(other, "model_ver-1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
    answer = upload(registry, platform)
    assert answer.status_code == 409 and "was promoted to production" in answer.text
    sdist = upload(registry, make_sdist(tmp_path / "s", "model_ver-1.0.tar.gz"))
    assert sdist.status_code == 409 and "was promoted to production" in sdist.text

    assert registry.storage.listing("packages") == [first.name]
    for index in (registry.index_url, f"{registry.url}/stages/production/simple/"):
        page = requests.get(f"{index}model-ver/", timeout=10).text
        assert page.count("<a ") == 1 and first.name in page
    venv = Venv(tmp_path / "venv", tool="uv")
    venv.install("model-ver==1.0", index_url=f"{registry.url}/stages/production/simple/")
    weights = venv.run(
        "import importlib.resources as r; print(r.read_text('model_ver', 'weights.bin'))"
    )
    assert weights.stdout.strip() == "the reviewed weights"


def test_new_files_for_an_unpromoted_version(registry: Registry, tmp_path: Path) -> None:
    """An sdist and a platform wheel beside a pure wheel are new; a second sdist is not."""
    wheel = make_wheel(tmp_path / "a", "model-ver", "2.0")
    assert upload(registry, wheel).status_code == 200
    sdist = make_sdist(tmp_path / "s", "model_ver-2.0.tar.gz")
    assert upload(registry, sdist).status_code == 200
    platform = respell(make_wheel(tmp_path / "p", "model-ver", "2.0", payload=b"x86"),
                       "model_ver-2.0-cp312-cp312-manylinux_2_17_x86_64.whl")  # fmt: skip
    assert upload(registry, platform).status_code == 200

    zipped = tmp_path / "model_ver-2.0.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr(
            "model_ver-2.0/PKG-INFO", "Metadata-Version: 2.1\nName: model-ver\nVersion: 2.0\n"
        )
    answer = upload(registry, zipped)
    assert answer.status_code == 409 and f"already has an sdist ({sdist.name})" in answer.text
    for filename in ("Model_Ver-2.0-py3-none-any.whl", "model_ver-2.0-7-py2.py3-none-any.whl"):
        answer = upload(
            registry, respell(make_wheel(tmp_path / filename, "model-ver", "2.0"), filename)
        )
        assert answer.status_code == 409 and f"already exists as {wheel.name}" in answer.text
    assert registry.storage.listing("packages") == sorted([wheel.name, sdist.name, platform.name])


def test_four_spellings_of_one_version_at_once_exactly_one_wins(
    storage: Storage, tmp_path: Path
) -> None:
    spellings = ("model_one", "Model_One", "MODEL_ONE", "model_One")
    with Registry(storage, args=["--workers", "2"]) as reg:
        for version in ("1.0", "1.1", "1.2"):  # the race, run three times
            bodies = []
            for s in spellings:
                wheel = make_wheel(tmp_path / version / s, "model-one", version,
                                   payload=s.encode() * 1_000_000)  # fmt: skip
                bodies.append((f"{s}-{version}-py3-none-any.whl", wheel.read_bytes()))
            barrier = threading.Barrier(len(bodies))
            statuses: list[int] = []

            def send(filename: str, content: bytes) -> None:
                barrier.wait()
                statuses.append(post_upload(reg.url, filename, content).status_code)

            threads = [threading.Thread(target=send, args=body) for body in bodies]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(statuses) == [200, 409, 409, 409], (version, statuses)
        assert len(reg.storage.listing("packages")) == 3 and reg.storage.pending() == []


def uv_publish(url: str, *files: Path) -> subprocess.CompletedProcess[str]:
    cmd = [uv_bin(), "publish", "--publish-url", f"{url}/", "--username", "anonymous",
           "--password", "none", "--trusted-publishing", "never", *map(str, files)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=120)


def test_reruns_of_twine_and_uv_publish_succeed(registry: Registry, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "t", "model-rerun", "1.0")
    sdist = make_sdist(tmp_path / "t", "model_rerun-1.0.tar.gz")
    for run in range(2):
        result = twine_upload(registry.url, wheel, sdist)
        assert result.returncode == 0, (run, result.stdout + result.stderr)
    generation = registry.storage.read_text("generation")
    assert twine_upload(registry.url, wheel).returncode == 0
    assert registry.storage.read_text("generation") == generation  # nothing changed

    uv_wheel = make_wheel(tmp_path / "u", "model-rerun", "1.1")
    for run in range(2):
        result = uv_publish(registry.url, uv_wheel)
        assert result.returncode == 0, (run, result.stdout + result.stderr)
    again = post_upload(registry.url, wheel.name, wheel.read_bytes())
    assert again.status_code == 200 and "already published with these exact bytes" in again.text

    read = registry.storage.store.read_bytes
    stored = {f: hashlib.sha256(read(f"packages/{f}")).hexdigest()
              for f in registry.storage.listing("packages")}  # fmt: skip
    assert sorted(stored) == sorted([wheel.name, sdist.name, uv_wheel.name])
    different = make_wheel(tmp_path / "d", "model-rerun", "1.0", payload=b"different")
    refused = twine_upload(registry.url, different)
    assert refused.returncode != 0 and "409" in refused.stdout + refused.stderr
    different_uv = make_wheel(tmp_path / "e", "model-rerun", "1.1", payload=b"different")
    assert uv_publish(registry.url, different_uv).returncode != 0
    assert stored[wheel.name] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert registry.storage.pending() == []
