"""Where ``modelpack serve`` and ``predict`` run a model: this environment, or a cached one.

``NAME``, ``NAME==VERSION`` or ``NAME@STAGE`` (the stage resolved through the registry's
API). A model installed in the running environment (at that version, if one is given)
is used from there. Otherwise it is installed from the registry into a virtual
environment kept in ``$MODELPACK_CACHE_DIR/serve/<name>-<version>-py<X.Y>/`` (made
with uv where available, else pip, the way ``publish --verify`` makes its clean
environments, :mod:`modelpack.cleanenv`), with gunicorn and ``packaging``; this
modelpack's own package is linked in with a ``.pth`` file, so the server that runs
there is the same code. The next ``serve`` of that version reuses it (a ``ready``
marker is written last; a half-made environment is made again). A file lock keeps two
commands from making the same environment at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from modelpack.errors import ModelNotFoundError, ModelpackError, UsageError

__all__ = ["Target", "parse_target", "prepare"]

_GUNICORN = "gunicorn>=22,<28"  # as the registry's: gthread workers, graceful SIGTERM


@dataclass(frozen=True)
class Target:
    name: str
    version: str | None = None
    stage: str | None = None


def parse_target(spec: str) -> Target:
    """``model-foo``, ``model-foo==1.2.0`` or ``model-foo@production``.

    :raises UsageError: none of those.
    """
    name, sep, version = spec.partition("==")
    stage = None
    if not sep:
        name, _, stage_text = spec.partition("@")
        stage = stage_text.strip() or None
        if "@" in spec and stage is None:
            raise UsageError(f"expected NAME@STAGE (like model-foo@production), got {spec!r}")
    if not name.strip() or (sep and not version.strip()):
        raise UsageError(f"expected NAME, NAME==VERSION or NAME@STAGE, got {spec!r}")
    return Target(canonicalize_name(name.strip()), version.strip() or None, stage)


def _resolve_version(target: Target, registry: str | None) -> str:
    from modelpack.registry import show

    model = show(target.name, registry)
    if target.stage:
        staged = (model.get("stages") or {}).get(target.stage)
        if staged is None:
            have = ", ".join(sorted(model.get("stages") or {})) or "none"
            raise ModelNotFoundError(
                f"{target.name} has no stage {target.stage!r} (its stages: {have}); "
                f"set one with `modelpack promote {target.name}==VERSION --stage {target.stage}`"
            )
        return str(staged["version"] if isinstance(staged, dict) else staged)
    if not model.get("latest"):
        raise ModelNotFoundError(f"{target.name} has no version that is not yanked")
    return str(model["latest"])


def installed_version(name: str) -> str | None:
    from modelpack.serving.server import installed

    found = installed(name)
    return found[0].version if found else None


def env_dir(name: str, version: str) -> Path:
    from modelpack.digests import cache_dir

    return cache_dir() / "serve" / f"{name}-{version}-py{sys.version_info[0]}.{sys.version_info[1]}"


def prepare(
    target: Target, registry: str | None, progress: Callable[[str], None] = lambda _: None
) -> tuple[str, str, bool]:
    """(python, version, reused): the interpreter to run the model with, the version it
    has, and whether a cached environment was reused (False also for this environment).

    :raises ModelNotFoundError: the registry has no such model, version or stage.
    :raises EnvironmentFaultError: the environment cannot be made.
    """
    here = installed_version(target.name)
    if here is not None and target.stage is None and target.version in (None, here):
        progress(f"{target.name} {here} is installed in this environment; serving it from here")
        return sys.executable, here, False
    version = target.version or _resolve_version(target, registry)
    if here == version:
        progress(f"{target.name} {version} is installed in this environment; serving it from here")
        return sys.executable, version, False
    root = env_dir(target.name, version)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reused = (root / "ready").is_file() and (root / "venv" / "bin" / "python").exists()
        if not reused:
            _make(root, target.name, version, registry, progress)
        else:
            progress(f"reusing the environment of {target.name} {version} in {root}")
        _link_modelpack(root)
    return str(root / "venv" / "bin" / "python"), version, reused


def _make(
    root: Path, name: str, version: str, registry: str | None, progress: Callable[[str], None]
) -> None:
    from modelpack.cleanenv import CleanEnv
    from modelpack.config import resolve_credentials, resolve_registry
    from modelpack.errors import EnvironmentFaultError
    from modelpack.verify import resolution_for

    url = resolve_registry(registry)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = CleanEnv(root, resolution_for(url, resolve_credentials(url)))
    progress(f"installing {name}=={version} into {root} with {env.tool}")
    failure = env.create() or env.install(f"{name}=={version}")
    if failure is None:
        failure = env.install(_GUNICORN) or env.install("packaging>=23")
    if failure is not None:
        shutil.rmtree(root, ignore_errors=True)  # with the netrc holding any credentials
        raise EnvironmentFaultError(
            f"could not install {name}=={version} from {url} ({failure.step} failed):\n{failure.output}"
        )
    (root / "netrc").unlink(missing_ok=True)  # the registry's credentials: needed no longer
    progress(f"installed in {sum(env.timings.values()):.1f} s")
    (root / "ready").write_text(f"{name}=={version}\n")


def _link_modelpack(root: Path) -> None:
    """Make this modelpack importable in the environment: a copy of the package (fresh
    each time, it is small) and a ``.pth`` file that puts it on ``sys.path``."""
    source = Path(__file__).resolve().parent.parent
    lib = root / "modelpack-lib"
    shutil.copytree(source, lib / "modelpack", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "_template"))  # fmt: skip
    purelib = sysconfig.get_path(
        "purelib", vars={"base": str(root / "venv"), "platbase": str(root / "venv")}
    )
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "_modelpack_serve.pth").write_text(f"{lib}\n")


def run_in(python: str, module: str, args: list[str]) -> None:
    """Replace this process with *python* ``-m`` *module* (signals then reach it directly)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    try:
        os.execve(python, [python, "-m", module, *args], env)  # noqa: S606 - no shell
    except OSError as exc:
        raise ModelpackError(f"could not start {python}: {exc}") from exc
