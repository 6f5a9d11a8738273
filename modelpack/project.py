"""Read a model project: its ``pyproject.toml``, its package and its weights.

A model project is any Python project (hatchling, setuptools, ...) that declares an
entry point in the ``modelpack.models`` group and ships weights inside its import
package, by default in ``<package>/weights/`` (``[tool.modelpack] weights`` changes
the folder, relative to the package).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from modelpack.errors import MissingWeightsError, ProjectError
from modelpack.models import ENTRY_POINT_GROUP

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Project", "load_project", "weight_files"]

IGNORED_WEIGHT_NAMES = {"__init__.py", "README.md", "README", ".gitkeep"}


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    """``[project] name`` as written."""
    version: str | None
    """``[project] version``, or ``None`` when the backend computes it (dynamic)."""
    package: str
    """The import package the entry point names (``model_foo``)."""
    package_dir: Path | None
    """Where that package's source lives, when it can be found."""
    entry_point: str
    config: dict[str, Any] = field(default_factory=dict)
    dependencies: tuple[str, ...] = ()
    """``[project] dependencies`` as written."""
    """The ``[tool.modelpack]`` table."""

    @property
    def canonical_name(self) -> str:
        return canonicalize_name(self.name)

    @property
    def weights_subdir(self) -> str:
        return str(self.config.get("weights", "weights")).strip("/")

    @property
    def weights_dir(self) -> Path | None:
        return self.package_dir / self.weights_subdir if self.package_dir else None

    @property
    def dist_dir(self) -> Path:
        return self.root / "dist"


def load_project(path: Path | str = ".") -> Project:
    """Read the model project at *path*.

    :raises ProjectError: *path* is not a model project, or a key it needs is missing
        or malformed (the message names the key).
    """
    root = Path(path).resolve()
    pyproject = root / "pyproject.toml"
    if not root.is_dir():
        raise ProjectError(f"{path} is not a directory; pass the model project's directory")
    if not pyproject.is_file():
        raise ProjectError(
            f"{root} is not a model project: it has no pyproject.toml; "
            "create one with `modelpack new NAME` or pass the project's directory"
        )
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{pyproject} is not valid TOML: {exc}; fix the file") from exc

    proj = data.get("project")
    if not isinstance(proj, dict) or not isinstance(proj.get("name"), str):
        raise ProjectError(f'{pyproject}: [project] name is missing; add name = "model-foo"')
    name: str = proj["name"]
    version = proj.get("version")
    if version is not None and not isinstance(version, str):
        raise ProjectError(f'{pyproject}: [project] version must be a string like "1.2.0"')

    eps = proj.get("entry-points", {}).get(ENTRY_POINT_GROUP)
    if not isinstance(eps, dict) or not eps:
        pkg_guess = canonicalize_name(name).replace("-", "_")
        raise ProjectError(
            f"{pyproject}: no model entry point; add "
            f'[project.entry-points."{ENTRY_POINT_GROUP}"] with '
            f'{canonicalize_name(name)} = "{pkg_guess}:load"'
        )
    entry_point = str(next(iter(eps.values())))
    package = entry_point.split(":", 1)[0].strip().split(".", 1)[0]

    config = data.get("tool", {}).get("modelpack", {})
    if not isinstance(config, dict):
        raise ProjectError(f"{pyproject}: [tool.modelpack] must be a table")

    return Project(
        root=root,
        name=name,
        version=version,
        package=package,
        package_dir=_find_package_dir(root, package, data),
        entry_point=entry_point,
        config=config,
        dependencies=_dependencies(proj, pyproject),
    )


def _dependencies(proj: dict[str, Any], pyproject: Path) -> tuple[str, ...]:
    deps = proj.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ProjectError(
            f'{pyproject}: [project] dependencies must be a list of strings like ["numpy>=2,<3"]'
        )
    return tuple(deps)


def _find_package_dir(root: Path, package: str, data: dict[str, Any]) -> Path | None:
    candidates: list[Path] = []
    hatch_pkgs = (
        data.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {})
        .get("wheel", {}).get("packages", [])
    )  # fmt: skip
    for entry in hatch_pkgs if isinstance(hatch_pkgs, list) else []:
        if Path(str(entry)).name == package:
            candidates.append(root / str(entry))
    candidates += [root / "src" / package, root / package]
    for candidate in candidates:
        if (candidate / "__init__.py").is_file():
            return candidate
    return None


def weight_files(project: Project) -> list[Path]:
    """Return the project's weight files (sorted).

    :raises MissingWeightsError: the weights folder is missing or holds no file.
    """
    folder = project.weights_dir
    if folder is None:
        raise ProjectError(
            f"cannot find the package {project.package!r} of {project.name} "
            f"(looked in src/{project.package}/ and {project.package}/); "
            "the entry point must name the model's own import package"
        )
    files = (
        sorted(
            p for p in folder.rglob("*")
            if p.is_file() and p.name not in IGNORED_WEIGHT_NAMES
            and not any(part.startswith(".") or part == "__pycache__"
                        for part in p.relative_to(folder).parts)
        )
        if folder.is_dir() else []
    )  # fmt: skip
    if not files:
        rel = folder.relative_to(project.root) if folder.is_relative_to(project.root) else folder
        raise MissingWeightsError(
            f"{project.name} has no weights: {rel}/ is missing or empty; "
            "train the model and save its weights there (for a template project: "
            "`python train.py`), then build again"
        )
    return files
