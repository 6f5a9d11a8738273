"""`modelpack publish --verify`: the wheel is installed, loaded and asked to predict in a
clean environment BEFORE anything is uploaded; a failure publishes nothing and says
whether the model or the environment is at fault.

Real parts only: a registry process, a stock pypiserver standing in for the user's
configured public index, real twine, real pip and uv in throwaway environments. The
"user" of each test has pip and uv configured for that index alone (no machine config).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests
from registry_support import PASSWORDS, make_wheel, twine_upload

from support import Registry, free_port, modelpack, ok


def user_env(index: str | None, **extra: str) -> dict[str, str]:
    """A user whose pip and uv resolve through *index* only (the machine config unseen)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELPACK_", "PIP_", "UV_", "TWINE_"))}  # fmt: skip
    env["PIP_CONFIG_FILE"] = os.devnull
    env["UV_NO_CONFIG"] = "1"
    if index:
        env["PIP_INDEX_URL"] = env["UV_DEFAULT_INDEX"] = index
    env.update(extra)
    return env


def template(tmp_path: Path, name: str, dependencies: str = "[]") -> Path:
    ok(modelpack("new", name, "-o", tmp_path, "--no-input"))
    project = tmp_path / name
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("dependencies = []", f"dependencies = {dependencies}"))  # fmt: skip
    return project


def nothing_published(registry: Registry, name: str) -> None:
    assert list((registry.data / "packages").glob("*.whl")) == []
    assert requests.get(f"{registry.url}/simple/{name}/", timeout=5).status_code == 404


@pytest.mark.slow
def test_a_healthy_template_model_is_verified_then_published(
    tmp_path: Path, registry: Registry, plain_index: str
) -> None:
    project = template(tmp_path, "model-ver")
    ok(modelpack("build", project))
    result = modelpack("publish", project, "--registry", registry.url, "--verify",
                       env=user_env(plain_index + "/simple/"))  # fmt: skip
    out = ok(result)
    before = "verified model-ver 0.1.0 before the upload in a clean environment"
    assert before + ": load() -> model_ver.model.LinearModel, predict -> [" in out
    assert "verified model-ver 0.1.0 as served in a clean environment" in out
    assert "published model-ver 0.1.0" in out
    # the check ran before the upload: stderr says so, in that order
    assert result.stderr.index("before the upload") < result.stderr.index("as the registry serves")
    assert (registry.data / "packages" / "model_ver-0.1.0-py3-none-any.whl").is_file()


@pytest.mark.slow
def test_a_model_whose_predict_raises_publishes_nothing_and_blames_the_model(
    tmp_path: Path, registry: Registry
) -> None:
    project = template(tmp_path, "model-brk")
    model = project / "src" / "model_brk" / "model.py"
    model.write_text(model.read_text().replace(
        "        out = []\n", "        raise RuntimeError('feature store unavailable')\n"))  # fmt: skip
    ok(modelpack("build", project))
    result = modelpack("publish", project, "--registry", registry.url, "--verify",
                       env=user_env(None))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nothing was published" in result.stderr
    assert "predict(input_example) fails; the model is at fault" in result.stderr
    assert "RuntimeError: feature store unavailable" in result.stderr
    # one error line, then the model's own traceback tail (indented), then the fix
    error = [line for line in result.stderr.splitlines() if line.startswith("modelpack publish:")]
    assert len(error) == 1 and error[0].startswith(
        "modelpack publish: error: nothing was published"
    )
    assert "build and publish again" in result.stderr.splitlines()[-1]
    nothing_published(registry, "model-brk")


@pytest.mark.slow
def test_a_model_whose_load_fails_publishes_nothing(tmp_path: Path, registry: Registry) -> None:
    project = template(tmp_path, "model-lod")
    init = project / "src" / "model_lod" / "__init__.py"
    # load() reads a file that only exists on the author's machine
    init.write_text(init.read_text() + "\n\ndef load():\n    return open('/nonexistent/w.bin')\n")
    ok(modelpack("build", project))
    result = modelpack("publish", project, "--registry", registry.url, "--verify",
                       env=user_env(None))  # fmt: skip
    assert result.returncode == 1
    assert "load() fails; the model is at fault" in result.stderr
    assert "FileNotFoundError" in result.stderr
    nothing_published(registry, "model-lod")


@pytest.mark.slow
def test_an_unresolvable_dependency_publishes_nothing_and_blames_the_environment(
    tmp_path: Path, registry: Registry, plain_index: str
) -> None:
    project = template(tmp_path, "model-dep", '["nosuch-dependency>=1,<2"]')
    ok(modelpack("build", project))
    result = modelpack("publish", project, "--registry", registry.url, "--verify",
                       env=user_env(plain_index + "/simple/"))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr
    assert "nothing was published: model-dep 0.1.0 does not install" in err
    assert "its dependency nosuch-dependency" in err
    assert "the environment is at fault, not the model" in err
    assert "has no upstream index" in err and "--upstream URL" in err
    nothing_published(registry, "model-dep")


@pytest.mark.slow
def test_an_unreachable_configured_index_blames_the_environment(
    tmp_path: Path, registry: Registry
) -> None:
    project = template(tmp_path, "model-off", '["somepublic>=1"]')
    ok(modelpack("build", project))
    dead = f"http://127.0.0.1:{free_port()}/simple/"
    result = modelpack("publish", project, "--registry", registry.url, "--verify",
                       env=user_env(dead, PIP_RETRIES="0"))  # fmt: skip
    assert result.returncode == 1
    assert "the environment is at fault, not the model" in result.stderr
    nothing_published(registry, "model-off")


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["uv", "pip"])
def test_public_dependencies_from_the_configured_index_private_ones_from_the_registry(
    tmp_path: Path, registry: Registry, plain_index: str, tool: str
) -> None:
    """Without an upstream: the public dependency comes from the user's index, the private
    one (published before) from the registry, and the model itself imports both."""
    make_wheel(tmp_path / "plain-pkgs-src", "pubdep", "1.4")
    public_dir = tmp_path / "pkgs"  # the plain_index fixture serves tmp_path/pkgs
    shutil.copy(tmp_path / "plain-pkgs-src" / "pubdep-1.4-py3-none-any.whl", public_dir)
    private = make_wheel(tmp_path / "private", "private-helper", "2.0")
    assert twine_upload(registry.url, private).returncode == 0

    project = template(tmp_path, "model-mix", '["pubdep>=1,<2", "private-helper>=2,<3"]')
    init = project / "src" / "model_mix" / "__init__.py"
    # load() needs both (imported by name: they are not installed where the model is built)
    anchor = "    return load_weights(files("
    assert anchor in init.read_text()
    init.write_text(init.read_text().replace(anchor, '    import importlib\n'
        '    assert importlib.import_module("pubdep").VERSION == "1.4"\n'
        '    assert importlib.import_module("private_helper").VERSION == "2.0"\n' + anchor))  # fmt: skip
    ok(modelpack("build", project))
    env = user_env(plain_index + "/simple/")
    env["MODELPACK_VERIFY_TOOL"] = tool
    out = ok(modelpack("publish", project, "--registry", registry.url, "--verify", env=env))
    assert "verified model-mix 0.1.0 before the upload" in out
    assert "verified model-mix 0.1.0 as served" in out


@pytest.mark.slow
def test_verify_against_a_registry_with_protected_reads(tmp_path: Path, htpasswd: Path) -> None:
    """The registry's credentials reach pip/uv through a private netrc: never printed,
    never on a command line; the private dependency needs them too."""
    env = user_env(None, MODELPACK_USERNAME="alice", MODELPACK_PASSWORD=PASSWORDS["alice"])
    project = template(tmp_path, "model-sec", '["private-helper>=2"]')
    ok(modelpack("build", project))
    private = make_wheel(tmp_path / "private", "private-helper", "2.0")
    args = ["--htpasswd", str(htpasswd), "--protect-reads"]
    with Registry(tmp_path / "data", args=args) as reg:
        assert twine_upload(reg.url, private, user="alice", password=PASSWORDS["alice"]).returncode == 0  # fmt: skip
        result = modelpack("publish", project, "--registry", reg.url, "--verify", env=env)
    out = ok(result)
    assert "verified model-sec 0.1.0 before the upload" in out
    assert "verified model-sec 0.1.0 as served" in out
    assert PASSWORDS["alice"] not in out + result.stderr


def test_verify_reads_the_registrys_upstream_from_health(registry: Registry) -> None:
    """No upstream on this registry: `/health` says null or nothing, and the clean
    environment is told to use the user's configured index plus the registry."""
    from modelpack.index import IndexClient
    from modelpack.verify import resolution_for

    health = requests.get(f"{registry.url}/health", timeout=5).json()
    assert health.get("upstream") is None
    assert IndexClient(registry.url).upstream() is None
    resolution = resolution_for(registry.url, None)
    assert not resolution.upstream
    assert resolution.registry_index == registry.index_url
