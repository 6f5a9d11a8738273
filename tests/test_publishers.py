"""hatch, flit, poetry and pdm publish to the registry, and their re-runs succeed.

Issue 13 §4: the same bytes uploaded again answer success, as the public index does, so a
client's re-run is idempotent; a different file under an existing name still gets 409.
(twine and ``uv publish`` are covered in test_registry_immutable.py.)

Each test makes a small pure-Python project for one tool's own build backend, publishes
it as ``alice`` to a registry started with ``--htpasswd``, with the credentials passed
the way that tool documents for CI (environment variables), from a throwaway HOME, then:

- runs the same publish again: exit 0, the registry's log shows each file uploaded
  again (the tool did not skip it), and its files (sha256) and generation are unchanged;
- changes one byte of the source, keeps the version, rebuilds and publishes: the tool
  fails and the registry's 409 message reaches the user's terminal; nothing changed;
- pip, confined to the registry, installs the version and gets the first build.

pdm's re-run is ``pdm publish --no-build`` (the files of the first run, uploaded again):
pdm-backend writes the build time into the sdist's gzip header even with
``SOURCE_DATE_EPOCH`` set, so a plain ``pdm publish`` rebuilds a different file, which
is a 409 here as it is a 400 on the public index (see docs/registry.md).

The tools come from conftest.py's ``packaging_tools``; hatch and pdm fetch their build
backends (hatchling, pdm-backend) from the machine's package index into their isolated
build environments. The file takes 45 to 75 s on a busy 2-core machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from registry_support import PASSWORDS

from support import Registry, clean_env, make_venv

USER = "alice"
TIMEOUT = 300
REFUSED = "already exists; published versions are immutable: bump the version"
# The variables of this machine or the user that could steer a tool elsewhere.
FOREIGN_ENV = ("PIP_", "UV_", "POETRY_", "PDM_", "HATCH_", "FLIT_", "TWINE_", "XDG_")


@dataclass(frozen=True)
class Tool:
    """How one tool builds and publishes a project, and how it is given credentials."""

    backend: tuple[str, str]  # build-system requires, build-backend
    package: str  # where the package's __init__.py goes, under the project
    publish: tuple[tuple[str, ...], ...]  # the commands of a publish
    rerun: tuple[tuple[str, ...], ...]  # the commands of its re-run
    credentials: tuple[tuple[str, str], ...]  # env var -> "{url}", "{user}" or "{password}"


TOOLS = {
    "hatch": Tool(
        backend=("hatchling", "hatchling.build"),
        package="src/{module}",
        publish=(("hatch", "build"), ("hatch", "publish", "--no-prompt")),
        rerun=(("hatch", "build"), ("hatch", "publish", "--no-prompt")),
        credentials=(
            ("HATCH_INDEX_REPO", "{url}"),
            ("HATCH_INDEX_USER", "{user}"),
            ("HATCH_INDEX_AUTH", "{password}"),
        ),
    ),
    "flit": Tool(
        backend=("flit_core>=3.4,<4", "flit_core.buildapi"),
        package="{module}",
        publish=(("flit", "publish"),),
        rerun=(("flit", "publish"),),
        credentials=(
            ("FLIT_INDEX_URL", "{url}"),
            ("FLIT_USERNAME", "{user}"),
            ("FLIT_PASSWORD", "{password}"),
        ),
    ),
    "poetry": Tool(
        backend=("poetry-core>=2,<3", "poetry.core.masonry.api"),
        package="src/{module}",
        publish=(
            ("poetry", "config", "repositories.models", "{url}"),
            ("poetry", "publish", "--build", "--repository", "models", "--no-interaction"),
        ),
        rerun=(("poetry", "publish", "--build", "--repository", "models", "--no-interaction"),),
        credentials=(
            ("POETRY_HTTP_BASIC_MODELS_USERNAME", "{user}"),
            ("POETRY_HTTP_BASIC_MODELS_PASSWORD", "{password}"),
        ),
    ),
    "pdm": Tool(
        backend=("pdm-backend", "pdm.backend"),
        package="src/{module}",
        publish=(("pdm", "publish"),),
        rerun=(("pdm", "publish", "--no-build"),),
        credentials=(
            ("PDM_PUBLISH_REPO", "{url}"),
            ("PDM_PUBLISH_USERNAME", "{user}"),
            ("PDM_PUBLISH_PASSWORD", "{password}"),
        ),
    ),
}


@pytest.fixture
def registry(tmp_path: Path, htpasswd: Path) -> Iterator[Registry]:
    """A registry where only the users of the htpasswd file may upload."""
    with Registry(tmp_path / "registry-data", args=["--htpasswd", str(htpasswd)]) as reg:
        yield reg


def make_project(root: Path, tool: str) -> tuple[Path, Path]:
    """A project ``pub-<tool>`` 1.0 for the tool's backend; returns it and its module file."""
    spec = TOOLS[tool]
    module = f"pub_{tool}"
    project = root / f"pub-{tool}"
    init = project / spec.package.format(module=module) / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text('"""A tiny package published by a test."""\n\nVALUE = 1\n')
    requires, backend = spec.backend
    (project / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["{requires}"]\nbuild-backend = "{backend}"\n\n'
        f'[project]\nname = "pub-{tool}"\nversion = "1.0"\n'
        f'description = "A tiny package published by {tool}"\n'
    )
    return project, init


def tool_env(home: Path, tools: Path, spec: Tool, url: str) -> dict[str, str]:
    """A user's environment: a fresh HOME, no config or credentials of this machine."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(FOREIGN_ENV)}
    home.mkdir(parents=True)
    env.update(HOME=str(home), PATH=os.pathsep.join([str(tools), env.get("PATH", "")]),
               PDM_CHECK_UPDATE="false", PIP_DISABLE_PIP_VERSION_CHECK="1")  # fmt: skip
    values = {"url": url, "user": USER, "password": PASSWORDS[USER]}
    env.update({var: value.format(**values) for var, value in spec.credentials})
    return env


def run(commands: tuple[tuple[str, ...], ...], cwd: Path, env: dict[str, str],
        url: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the commands in turn, stopping at the first that fails; return the last run."""
    result: subprocess.CompletedProcess[str] | None = None
    for command in commands:
        result = subprocess.run([part.format(url=url) for part in command], cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
        if result.returncode != 0:
            break
    assert result is not None
    return result


def digests(folder: Path) -> dict[str, str]:
    """The files of a folder: name -> sha256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def stored(reg: Registry) -> dict[str, str]:
    """The registry's files: name -> sha256."""
    return digests(reg.data / "packages")


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_publish_rerun_and_changed_file(
    tool: str, registry: Registry, tmp_path: Path, packaging_tools: Path
) -> None:
    spec = TOOLS[tool]
    url = f"{registry.url}/"
    project, init = make_project(tmp_path, tool)
    env = tool_env(tmp_path / "home", packaging_tools, spec, url)

    first = run(spec.publish, project, env, url)
    assert first.returncode == 0, first.stdout + first.stderr
    files = stored(registry)
    module = f"pub_{tool}"
    assert sorted(files) == [f"{module}-1.0-py2.py3-none-any.whl", f"{module}-1.0.tar.gz"]
    assert digests(project / "dist") == files  # what the tool built is what the registry keeps
    generation = (registry.data / "generation").read_text()

    log_size = registry.log.stat().st_size
    again = run(spec.rerun, project, env, url)
    assert again.returncode == 0, again.stdout + again.stderr
    log = registry.log.read_text()[log_size:]
    for filename in files:  # uploaded again, not skipped by the tool
        assert f"{filename} uploaded again with the same sha256" in log, log
    assert stored(registry) == files
    assert (registry.data / "generation").read_text() == generation

    init.write_text(init.read_text().replace("VALUE = 1", "VALUE = 2"))
    changed = run(spec.publish, project, env, url)
    out = changed.stdout + changed.stderr
    assert changed.returncode != 0, out
    assert "409" in out and REFUSED in out, out
    assert stored(registry) == files
    assert (registry.data / "generation").read_text() == generation
    assert not any((registry.data / "tmp").iterdir())

    venv = make_venv(tmp_path / "venv")
    pip_env = {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"}
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir",
         "--index-url", registry.index_url, f"pub-{tool}==1.0"],
        env=pip_env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    assert f"{module}-1.0-py2.py3-none-any.whl" in install.stdout
    code = f"import {module}; print({module}.VALUE)"
    value = subprocess.run([str(venv / "bin" / "python"), "-c", code], env=pip_env,
                           capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert value.stdout.strip() == "1", value.stdout + value.stderr
