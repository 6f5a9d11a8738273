"""The client beside a registry with an upstream index (`serve --upstream URL`).

The upstream is a stock pypiserver on loopback (the `plain_index` fixture) holding real
wheels: `pubdep` (a public dependency) and `model-taken` (a public package whose name a
data scientist then picks for a model). A second stock index stands for whatever else the
user's machine is configured with; `publish --verify` must not see it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from registry_support import make_wheel

from support import Registry, free_port, modelpack, ok, stock_pypiserver


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELPACK_", "PIP_", "UV_", "TWINE_"))}  # fmt: skip
    env.update(extra)
    return env


@pytest.fixture
def upstream_registry(tmp_path: Path, plain_index: str) -> Iterator[Registry]:
    """A registry whose upstream is plain_index (which serves tmp_path/pkgs)."""
    make_wheel(tmp_path / "pkgs", "pubdep", "1.4")
    make_wheel(tmp_path / "pkgs", "model-taken", "3.0")
    args = ["--upstream", f"{plain_index}/simple/"]
    with Registry(tmp_path / "registry-data", args=args) as reg:
        yield reg


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[str]:
    """Another index the user's pip/uv are configured with, holding `onlyelsewhere`."""
    folder = tmp_path / "elsewhere"
    make_wheel(folder, "onlyelsewhere", "1.0")
    with stock_pypiserver(folder) as url:
        yield f"{url}/simple/"


def test_new_warns_when_the_upstream_has_the_name(
    tmp_path: Path, upstream_registry: Registry
) -> None:
    url = upstream_registry.url
    taken = modelpack("new", "model-taken", "-o", tmp_path, "--no-input", "--registry", url)
    assert ok(taken).endswith("model-taken")
    assert "warning: model-taken is also a name on the upstream index" in taken.stderr
    assert "modelpack-registry reserve model-taken" in taken.stderr

    fresh = modelpack("new", "model-fresh", "-o", tmp_path, "--no-input", "--registry", url)
    assert ok(fresh) and "warning" not in fresh.stderr

    # nothing answers: no warning, no failure
    dead = f"http://127.0.0.1:{free_port()}"
    quiet = modelpack("new", "model-quiet", "-o", tmp_path, "--no-input", "--registry", dead)
    assert ok(quiet) and quiet.stderr == ""


def test_publish_shows_the_registrys_warning_about_an_upstream_name(
    tmp_path: Path, upstream_registry: Registry
) -> None:
    ok(modelpack("new", "model-taken", "-o", tmp_path, "--no-input"))
    project = tmp_path / "model-taken"
    ok(modelpack("build", project))
    result = modelpack("publish", project, "--registry", upstream_registry.url, env=user_env())
    out = ok(result)
    assert "published model-taken 0.1.0" in out
    warned = [line for line in result.stderr.splitlines() if "modelpack publish: warning:" in line]
    assert warned and "model-taken" in warned[0], result.stderr
    # the private name shadows the upstream from now on
    page = requests.get(f"{upstream_registry.url}/simple/model-taken/", timeout=5)
    assert page.headers.get("X-Modelpack-Source") != "upstream"
    assert "model_taken-3.0" not in page.text


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["uv", "pip"])
def test_verify_resolves_through_the_registry_alone_when_it_has_an_upstream(
    tmp_path: Path, upstream_registry: Registry, elsewhere: str, tool: str
) -> None:
    """The public dependency comes through the registry's upstream; the user's own index
    configuration is shut out (a dependency only it has makes verify fail, and blame the
    environment), so what passes here installs for a consumer with the registry alone."""
    env = user_env(PIP_EXTRA_INDEX_URL=elsewhere, UV_EXTRA_INDEX_URL=elsewhere,
                   MODELPACK_VERIFY_TOOL=tool)  # fmt: skip
    for name, deps in (("model-up", '["pubdep>=1,<2"]'), ("model-else", '["onlyelsewhere>=1"]')):
        ok(modelpack("new", name, "-o", tmp_path, "--no-input"))
        pyproject = tmp_path / name / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace("dependencies = []", f"dependencies = {deps}"))  # fmt: skip
        ok(modelpack("build", tmp_path / name))

    url = upstream_registry.url
    good = modelpack("publish", tmp_path / "model-up", "--registry", url, "--verify", env=env)
    out = ok(good)
    assert "verified model-up 0.1.0 before the upload" in out
    assert "verified model-up 0.1.0 as served" in out
    assert "the registry alone" in good.stderr

    bad = modelpack("publish", tmp_path / "model-else", "--registry", url, "--verify", env=env)
    assert bad.returncode == 1
    assert "its dependency onlyelsewhere" in bad.stderr
    assert "the environment is at fault, not the model" in bad.stderr
    assert not list((upstream_registry.data / "packages").glob("model_else*"))


def test_show_prints_the_single_index_command_when_the_registry_has_an_upstream(
    tmp_path: Path, upstream_registry: Registry
) -> None:
    from registry_support import twine_upload

    wheel = make_wheel(tmp_path / "w", "model-dep", "1.0", requires=("pubdep>=1,<2",))
    assert twine_upload(upstream_registry.url, wheel).returncode == 0
    out = ok(modelpack("show", "model-dep", "--registry", upstream_registry.url))
    index = upstream_registry.index_url
    assert out.splitlines()[-1] == f"install: pip install model-dep==1.0 --index-url {index}"
    assert "no upstream" not in out
