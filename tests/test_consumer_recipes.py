"""Every install recipe of docs/quickstart/consumer.md, run as written.

The recipes are read from the page itself (each fenced block after a
``<!-- recipe: NAME -->`` marker), with ``https://models.example.com`` replaced by a
real registry on loopback, so the page cannot drift from what is tested.

That registry runs with ``--upstream`` pointing at a second registry, the "public
index", which holds the real ``six`` wheel (fetched once from the machine's package
index) and an impostor ``model-foo`` (0.1.0 and 99.0.0). The real ``model-foo`` 0.1.0,
built from the template with ``dependencies = ["six>=1.16"]``, is published to the
registry and promoted to ``production``. Each recipe must install the real model (its
``predict`` works; the impostor has none) and ``six``, through the registry only: every
tool runs with a throwaway HOME, pip with ``PIP_CONFIG_FILE=/dev/null`` (the machine's
pip config adds extra indexes), a proxy on a closed port for anything but loopback, and
the registry's access log must show the requests.

Poetry, PDM and pip-tools come from the tool venv of conftest.py's ``packaging_tools``
(installed once per run with uv from the machine's package index, 1.5 s with a warm uv
cache; the whole file takes 1.5 to 2.5 minutes on a busy 2-core machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from registry_support import make_wheel, twine_upload

from support import REPO, Registry, clean_env, make_venv, modelpack, ok

DOC = REPO / "docs" / "quickstart" / "consumer.md"
DOC_REGISTRY = "https://models.example.com"
RECIPE = re.compile(r"<!-- recipe: (?P<name>[\w-]+) -->\n```\w+\n(?P<body>.*?)\n```", re.S)
PREDICT = "import model_foo, six; print(model_foo.predict([[1.0, 2.0, 3.0]]))"
# Every recipe the page has, each run by a test below.
RECIPES = {
    "pip", "pip-conf", "pip-conf-install", "uv-pip", "uv-project", "uv-project-add",
    "uv-project-sync", "poetry", "pdm", "pdm-add", "compile-uv", "compile-pip-tools",
    "require-hashes", "dockerfile", "stage",
}  # fmt: skip
TIMEOUT = 300


def recipes() -> dict[str, str]:
    """name -> body of each marked block on the page."""
    found: dict[str, str] = {}
    for m in RECIPE.finditer(DOC.read_text()):
        assert m["name"] not in found, f"two recipes named {m['name']}"
        found[m["name"]] = m["body"]
    return found


@dataclass
class World:
    """The registries, the model and the tools the recipes run against."""

    registry: Registry
    upstream: Registry
    model_sha256: str
    six_sha256: str
    tools: Path  # a folder with poetry, pdm, pip-compile and uv

    def recipe(self, name: str) -> str:
        return recipes()[name].replace(DOC_REGISTRY, self.registry.url)

    def env(self, home: Path, venv: Path | None = None) -> dict[str, str]:
        """A consumer's environment: nothing from this machine's pip/uv/tool config."""
        env = {k: v for k, v in clean_env().items()
               if not k.startswith(("PIP_", "UV_", "POETRY_", "PDM_", "XDG_"))
               and not k.lower().endswith("_proxy")}  # fmt: skip
        home.mkdir(parents=True, exist_ok=True)
        env.update(
            HOME=str(home),
            XDG_CONFIG_DIRS=str(home / "etc"),  # no system-wide uv.toml either
            PIP_CONFIG_FILE=os.devnull,
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_INPUT="1",
            PDM_CHECK_UPDATE="false",
            # Anything but loopback goes to a closed port: a tool that asked PyPI fails.
            **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"), "http://127.0.0.1:9"),
            NO_PROXY="127.0.0.1,localhost",
            PATH=os.pathsep.join(
                [*([str(venv / "bin")] if venv else []), str(self.tools), env.get("PATH", "")]
            ),
        )
        if venv:
            env["VIRTUAL_ENV"] = str(venv)
        return env

    def run(self, name: str, cwd: Path, env: dict[str, str]) -> str:
        """Run a shell recipe as written; return its output."""
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.recipe(name)],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"recipe {name} failed:\n{out}"
        return out

    def mark(self) -> tuple[int, int]:
        return self.registry.log.stat().st_size, self.upstream.log.stat().st_size

    def assert_through_registry(self, since: tuple[int, int], prefix: str = "/simple") -> None:
        """The registry was asked for the model and six; the upstream never for the model."""
        seen = read_from(self.registry.log, since[0])
        for name in ("model-foo", "six"):
            assert f'"GET {prefix}/{name}/' in seen, f"no {prefix}/{name}/ in:\n{seen}"
        upstream = read_from(self.upstream.log, since[1])
        assert "model-foo" not in upstream, upstream


def read_from(path: Path, offset: int) -> str:
    time.sleep(0.2)  # the access log line is written after the response
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_installed(python: Path | str, env: dict[str, str], cwd: Path) -> None:
    """The real model and six are importable, and the model predicts."""
    result = subprocess.run([str(python), "-c", PREDICT], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    prediction = json.loads(result.stdout)
    assert len(prediction) == 1 and isinstance(prediction[0], float)


def build_model(root: Path) -> Path:
    """The template model, depending on (and importing) the public package six."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
    ok(modelpack("new", "model-foo", "-o", root, "--no-input", env=env))
    project = root / "model-foo"
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("dependencies = []", 'dependencies = ["six>=1.16"]', 1)
    )
    init = project / "src" / "model_foo" / "__init__.py"
    anchor = "from importlib.resources import files\n"
    assert anchor in init.read_text()  # the template's load() reads its weights with it
    init.write_text(init.read_text().replace(anchor, anchor + "\nimport six\n", 1))
    return Path(ok(modelpack("build", project, env=env)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, packaging_tools: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("consumer")
    # The public package, fetched once through the machine's own pip configuration.
    wheels = root / "public"
    ok(subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary",
                       ":all:", "-d", str(wheels), "six==1.17.0"],
                      capture_output=True, text=True, timeout=TIMEOUT))  # fmt: skip
    six = next(wheels.glob("six-*.whl"))
    impostors = [make_wheel(root / "impostor", "model-foo", v) for v in ("0.1.0", "99.0.0")]
    wheel = build_model(root / "model")

    with Registry(root / "upstream-data", args=["--access-log"]) as upstream:
        ok(twine_upload(upstream.url, six, *impostors))
        with Registry(
            root / "registry-data", args=["--access-log", "--upstream", upstream.index_url]
        ) as registry:
            env = {**os.environ, "MODELPACK_REGISTRY": registry.url}
            env.pop("MODELPACK_USERNAME", None)
            ok(modelpack("publish", wheel, env=env))
            ok(modelpack("promote", "model-foo==0.1.0", "--stage", "production", env=env))
            yield World(registry, upstream, sha256(wheel), sha256(six), packaging_tools)


def test_the_page_has_exactly_the_recipes_tested_here() -> None:
    assert set(recipes()) == RECIPES


def test_health_says_whether_the_registry_has_an_upstream(world: World) -> None:
    """The page tells consumers to read /health when an install stops at a dependency."""
    assert requests.get(f"{world.registry.url}/health", timeout=10).json()["upstream"] is not None
    assert requests.get(f"{world.upstream.url}/health", timeout=10).json()["upstream"] is None


def test_pip_command_line(world: World, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv")
    since = world.mark()
    out = world.run("pip", tmp_path, world.env(tmp_path / "home", venv))
    assert f"Looking in indexes: {world.registry.index_url}\n" in out
    check_installed(venv / "bin" / "python", world.env(tmp_path / "home"), tmp_path)
    world.assert_through_registry(since)


def test_pip_conf(world: World, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv")
    conf = tmp_path / "pip.conf"
    conf.write_text(world.recipe("pip-conf") + "\n")
    env = world.env(tmp_path / "home", venv)
    env["PIP_CONFIG_FILE"] = str(conf)  # instead of /dev/null: this file and nothing else
    since = world.mark()
    out = world.run("pip-conf-install", tmp_path, env)
    assert f"Looking in indexes: {world.registry.index_url}\n" in out
    check_installed(venv / "bin" / "python", env, tmp_path)
    world.assert_through_registry(since)


def test_uv_pip(world: World, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv", "uv")
    env = world.env(tmp_path / "home", venv)
    env["UV_NO_CONFIG"] = "1"
    since = world.mark()
    world.run("uv-pip", tmp_path, env)
    check_installed(venv / "bin" / "python", env, tmp_path)
    world.assert_through_registry(since)


def test_uv_project_add_then_sync_from_the_lock(world: World, tmp_path: Path) -> None:
    project = tmp_path / "churn-service"
    project.mkdir()
    (project / "pyproject.toml").write_text(world.recipe("uv-project") + "\n")
    # No UV_NO_CONFIG here: it would make uv ignore the project's [tool.uv.index] too.
    env = world.env(tmp_path / "home")
    since = world.mark()
    world.run("uv-project-add", project, env)
    lock = (project / "uv.lock").read_text()
    sources = set(re.findall(r"^source = \{ (\w+) = \"([^\"]*)\" \}", lock, re.M))
    assert sources == {("registry", world.registry.index_url), ("virtual", ".")}, lock
    assert world.model_sha256 in lock and world.six_sha256 in lock
    check_installed(project / ".venv" / "bin" / "python", env, project)
    world.assert_through_registry(since)

    # A colleague's clone: the same files from the lock, through the registry.
    subprocess.run(["rm", "-rf", str(project / ".venv")], check=True)
    env = world.env(tmp_path / "home2")
    since = world.mark()
    world.run("uv-project-sync", project, env)
    check_installed(project / ".venv" / "bin" / "python", env, project)
    files = read_from(world.registry.log, since[0])
    assert (
        "/model_foo-0.1.0-py3-none-any.whl " in files
        and "/six-1.17.0-py2.py3-none-any.whl " in files
    )


def test_poetry_primary_source(world: World, tmp_path: Path) -> None:
    project = tmp_path / "churn-service"
    project.mkdir()
    env = world.env(tmp_path / "home")
    env["POETRY_VIRTUALENVS_IN_PROJECT"] = "true"
    since = world.mark()
    world.run("poetry", project, env)
    lock = (project / "poetry.lock").read_text()
    urls = set(re.findall(r'^url = "([^"]*)"', lock, re.M))
    assert urls == {world.registry.index_url.rstrip("/")}, lock
    check_installed(project / ".venv" / "bin" / "python", env, project)
    world.assert_through_registry(since)


def test_pdm_source_named_pypi(world: World, tmp_path: Path) -> None:
    project = tmp_path / "churn-service"
    project.mkdir()
    (project / "pyproject.toml").write_text(world.recipe("pdm") + "\n")
    env = world.env(tmp_path / "home")
    since = world.mark()
    world.run("pdm-add", project, env)
    lock = (project / "pdm.lock").read_text()
    assert world.model_sha256 in lock and world.six_sha256 in lock
    check_installed(project / ".venv" / "bin" / "python", env, project)
    world.assert_through_registry(since)


@pytest.mark.parametrize("compile_with", ["compile-uv", "compile-pip-tools"])
def test_requirements_with_hashes(world: World, tmp_path: Path, compile_with: str) -> None:
    env = world.env(tmp_path / "home")
    env["UV_NO_CONFIG"] = "1"
    since = world.mark()
    world.run(compile_with, tmp_path, env)
    world.assert_through_registry(since)
    hashes = set(
        re.findall(r"--hash=sha256:([0-9a-f]{64})", (tmp_path / "requirements.txt").read_text())
    )
    assert {world.model_sha256, world.six_sha256} <= hashes

    venv = make_venv(tmp_path / "venv")
    env = world.env(tmp_path / "home", venv)
    since = world.mark()
    world.run("require-hashes", tmp_path, env)
    check_installed(venv / "bin" / "python", env, tmp_path)
    world.assert_through_registry(since)


def test_dockerfile_arg_and_run(world: World, tmp_path: Path) -> None:
    """The Dockerfile's ARG/ENV lines become the environment of its RUN lines, as in a build."""
    venv = make_venv(tmp_path / "venv")  # stands in for the base image's Python
    env = world.env(tmp_path / "home", venv)
    runs = []
    lines = world.recipe("dockerfile").splitlines()
    assert lines[0].startswith("FROM python:")
    for line in lines[1:]:
        instruction, _, rest = line.partition(" ")
        if instruction in ("ARG", "ENV"):
            key, _, value = rest.partition("=")
            env[key] = value
        else:
            assert instruction == "RUN", line
            runs.append(rest)
    assert env["PIP_INDEX_URL"] == world.registry.index_url
    since = world.mark()
    for command in runs:
        result = subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Looking in indexes: {world.registry.index_url}\n" in result.stdout
    check_installed(venv / "bin" / "python", env, tmp_path)
    world.assert_through_registry(since)


@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_stage_index(world: World, tmp_path: Path, tool: str) -> None:
    venv = make_venv(tmp_path / "venv", tool)
    env = world.env(tmp_path / "home", venv)
    env["UV_NO_CONFIG"] = "1"
    (line,) = [ln for ln in world.recipe("stage").splitlines() if ln.split()[0] == tool]
    since = world.mark()
    result = subprocess.run(shlex.split(line), cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    check_installed(venv / "bin" / "python", env, tmp_path)
    world.assert_through_registry(since, prefix="/stages/production/simple")


@pytest.mark.parametrize(
    ("tool", "requirement", "installed"),
    [
        ("pip", "model-foo", "99.0.0 (impostor)"),  # the highest version of all indexes
        ("pip", "model-foo==0.1.0", "0.1.0 (impostor)"),  # a tie: the extra index's file
        ("uv", "model-foo==0.1.0", "0.1.0 (impostor)"),  # uv asks the extra index first
    ],
)
def test_extra_index_url_lets_an_impostor_win(
    world: World, tmp_path: Path, tool: str, requirement: str, installed: str
) -> None:
    """What the page warns about: a second index, even behind the registry, wins."""
    venv = make_venv(tmp_path / "venv", tool)
    env = world.env(tmp_path / "home", venv)
    env["UV_NO_CONFIG"] = "1"
    install = ["pip", "install"] if tool == "pip" else ["uv", "pip", "install", "--no-cache"]
    result = subprocess.run(
        [*install, "--index-url", world.registry.index_url,
         "--extra-index-url", world.upstream.index_url, requirement],
        env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert model_foo_version(venv) == installed


def model_foo_version(venv: Path) -> str:
    """The installed model-foo's version, and whether it is the impostor (no predict)."""
    code = (
        "import model_foo as m\n"
        "print(getattr(m, 'VERSION', None) or m.__version__, '' if hasattr(m, 'predict') else '(impostor)')"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
