"""Where a wheel came from: recorded by ``modelpack build`` in the manifest's ``lineage``.

- ``vcs``, ``commit``, ``dirty``: the git commit checked out, and whether tracked files
  under the project's folder differ from it (untracked files do not count, as for
  ``git describe --dirty``; in a monorepo, other projects' changes do not either). Absent
  when the project is not in a git work tree or git is not installed.
- ``build_time``: UTC, ISO 8601. ``$SOURCE_DATE_EPOCH`` replaces the clock, so a
  reproducible build (the same sources and that variable) gives the same wheel bytes.
- ``framework``: ``{"name", "version"}`` of the distribution behind
  ``[tool.modelpack] framework`` as installed where the build runs (where the model was
  trained); ``version`` is absent when it is not installed. ``python``: this Python.

The sha256 of every weight file is the manifest's ``weights`` list, computed while the
weights are copied into the wheel (:mod:`modelpack.assemble`), never read a second time.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["FRAMEWORK_DISTS", "build_time", "framework_version", "git_state", "lineage"]

# The name a project may give as `framework` -> the distributions that provide it, in
# the order tried (xgboost-cpu is the small CPU-only build of xgboost).
FRAMEWORK_DISTS: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",),
    "scikit-learn": ("scikit-learn",),
    "xgboost": ("xgboost", "xgboost-cpu"),
    "onnx": ("onnxruntime", "onnx"),
    "onnxruntime": ("onnxruntime",),
    "pytorch": ("torch",),
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "lightgbm": ("lightgbm",),
}


def git_state(root: Path) -> dict[str, Any]:
    """``{"vcs": "git", "commit", "dirty"}`` for a project in a git work tree, else ``{}``."""
    git = shutil.which("git")
    if git is None:
        return {}
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([git, *args], cwd=root, capture_output=True, text=True, env=env)

    head = run("rev-parse", "--verify", "-q", "HEAD")
    if head.returncode != 0 or not head.stdout.strip():
        return {}  # not a work tree, or a repository without commits
    status = run("status", "--porcelain", "--untracked-files=no", "--", ".")
    if status.returncode != 0:
        return {}
    return {"vcs": "git", "commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def build_time() -> str:
    """Now (or ``$SOURCE_DATE_EPOCH``) in UTC, ``2026-11-30T15:00:00Z``."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = (
        datetime.fromtimestamp(int(epoch), timezone.utc)
        if epoch.isdigit()
        else datetime.now(timezone.utc)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def framework_version(framework: str) -> dict[str, str]:
    """``{"name": <distribution>, "version": ...}`` as installed here; for ``python``,
    this Python; a framework not installed here gets no version."""
    key = framework.strip().lower()
    if key == "python":
        return {"name": "python", "version": platform.python_version()}
    for dist in FRAMEWORK_DISTS.get(key, (key,)):
        try:
            return {"name": dist, "version": metadata.version(dist)}
        except metadata.PackageNotFoundError:
            continue
    return {"name": FRAMEWORK_DISTS.get(key, (key,))[0]}


def lineage(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``lineage`` for the project at *root* with ``[tool.modelpack]`` *config*."""
    found: dict[str, Any] = {**git_state(root), "build_time": build_time()}
    if isinstance(config.get("framework"), str) and config["framework"].strip():
        found["framework"] = framework_version(config["framework"])
    found["python"] = platform.python_version()
    return found
