"""``modelpack build``: a PEP 517 build of the model project, then a check of the wheel.

The wheel is built by ``python -m build`` (pypa/build, isolated by default) into a
scratch folder inside ``dist/``; only a wheel that passes :func:`inspect_wheel` is moved
into ``dist/``, so a failed build never leaves a wheel that looks publishable.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name

from modelpack.errors import BuildError
from modelpack.project import Project, load_project, weight_files
from modelpack.wheel import WheelInfo, inspect_wheel

__all__ = ["build_project"]


def _uv_available() -> bool:
    try:
        from uv import find_uv_bin

        find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv") is not None
    return True


def build_project(path: Path | str = ".", *, isolation: bool = True) -> tuple[Project, WheelInfo]:
    """Build the model project at *path* into ``dist/`` and check the wheel.

    :raises ProjectError: *path* is not a model project.
    :raises MissingWeightsError: the project has no weights.
    :raises BuildError: the build backend failed, or the wheel is not a valid model.
    """
    project = load_project(path)
    weight_files(project)  # fail before a slow build if there is nothing to ship
    project.dist_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=project.dist_dir) as scratch:
        cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", scratch]
        if not isolation:
            cmd.append("--no-isolation")
        elif _uv_available():
            cmd += ["--installer", "uv"]
        cmd.append(str(project.root))
        env = dict(os.environ)
        if isolation and _uv_available():
            from uv import find_uv_bin

            env["PATH"] = f"{Path(find_uv_bin()).parent}{os.pathsep}{env.get('PATH', '')}"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=project.root)
        wheels = sorted(Path(scratch).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BuildError(
                f"building {project.name} failed (python -m build exited {proc.returncode}); "
                f"fix the error below and build again:\n{tail}"
            )
        info = inspect_wheel(wheels[0], project.weights_subdir)
        if canonicalize_name(info.name) != project.canonical_name:
            raise BuildError(
                f"the build produced {info.filename}, not a wheel of {project.name}; "
                "check [project] name in pyproject.toml"
            )
        final = project.dist_dir / wheels[0].name
        os.replace(wheels[0], final)
    return project, dataclasses.replace(info, path=final)
