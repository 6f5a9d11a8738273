"""``modelpack check``: what would break for a consumer, found before publishing.

- the manifest (``[tool.modelpack]``) is valid, key by key;
- the model has weights;
- every module the package imports (AST scan) is provided by a declared dependency;
  declared dependencies never used are reported as warnings;
- every pickle among the weights references only modules that the package or a
  declared dependency provides, and no dangerous callable (``os.system``, ``eval``...);
- (on the built wheel) the wheel installs nothing but the model's own package.

Nothing is imported or unpickled: imports are read with :mod:`ast`, pickles with
:mod:`pickletools`, and modules are mapped to distributions from installed metadata.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modelpack.errors import MissingWeightsError, ProjectError
from modelpack.pickles import PICKLE_SUFFIXES, is_dangerous, scan_pickle
from modelpack.project import Project, weight_files
from modelpack.wheel import WheelInfo

__all__ = ["MANIFEST_KEYS", "Problem", "check_project", "check_wheel", "manifest_problems"]

_STDLIB = set(sys.stdlib_module_names) | {"__builtin__", "copy_reg", "__future__"}

MANIFEST_KEYS: dict[str, str] = {
    "task": 'a string, e.g. task = "text-classification"',
    "framework": 'a string, e.g. framework = "scikit-learn"',
    "tags": 'a list of strings, e.g. tags = ["nlp", "french"]',
    "metrics": "a table of numbers, e.g. metrics = { accuracy = 0.93 }",
    "license": 'a string, e.g. license = "Apache-2.0"',
    "input_example": "any JSON value that predict() accepts, e.g. input_example = [[1.0, 2.0]]",
    "registry": 'the registry URL, e.g. registry = "http://registry.example:8080"',
    "weights": 'the weights folder relative to the package, e.g. weights = "weights"',
}


@dataclass(frozen=True)
class Problem:
    severity: str
    """``error`` or ``warning``."""
    where: str
    message: str
    """What is wrong, then how to fix it."""
    missing_dist: str | None = None
    """For a missing dependency: the distribution that ``check --fix`` would add."""

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def manifest_problems(config: dict[str, Any]) -> list[Problem]:
    """Validate ``[tool.modelpack]``; each problem names the exact key."""
    problems = []
    valid: dict[str, Callable[[Any], bool]] = {
        "task": lambda v: isinstance(v, str) and bool(v.strip()),
        "framework": lambda v: isinstance(v, str) and bool(v.strip()),
        "tags": _is_str_list,
        "metrics": lambda v: (
            isinstance(v, dict)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())
        ),
        "license": lambda v: isinstance(v, str) and bool(v.strip()),
        "input_example": lambda v: _json_ok(v),
        "registry": lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
        "weights": lambda v: (
            isinstance(v, str) and ".." not in Path(v).parts and not v.startswith("/")
        ),
    }
    for key, value in config.items():
        if key not in MANIFEST_KEYS:
            problems.append(Problem("error", f"[tool.modelpack] {key}",
                                    f"unknown key; known keys: {', '.join(MANIFEST_KEYS)}"))  # fmt: skip
        elif not valid[key](value):
            problems.append(
                Problem("error", f"[tool.modelpack] {key}", f"must be {MANIFEST_KEYS[key]}")
            )
    if "input_example" not in config:
        problems.append(Problem("warning", "[tool.modelpack] input_example",
                                "missing; add one so `modelpack publish --verify` can call predict()"))  # fmt: skip
    return problems


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _imports(package_dir: Path) -> dict[str, str]:
    """Top-level modules imported by the package -> first ``file:line`` importing it."""
    found: dict[str, str] = {}
    for path in sorted(package_dir.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except (SyntaxError, UnicodeDecodeError):
            continue  # the build reports broken source files
        optional: set[int] = set()
        for node in ast.walk(tree):  # imports guarded by `except ImportError` are optional
            if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers
            ):
                optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                line = getattr(node, "lineno", 0)
                found.setdefault(name.split(".", 1)[0], f"{path}:{line}")
    return found


def _declared(project: Project) -> tuple[set[str], list[Problem]]:
    names: set[str] = set()
    problems: list[Problem] = []
    for dep in project.dependencies:
        try:
            req = Requirement(dep)
        except InvalidRequirement as exc:
            problems.append(
                Problem(
                    "error", "[project] dependencies", f"{dep!r} is not a valid requirement ({exc})"
                )
            )
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.add(str(canonicalize_name(req.name)))
    return names, problems


def _closure(dists: set[str]) -> set[str]:
    """*dists* plus everything they require, as installed here."""
    seen: set[str] = set()
    todo = list(dists)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            try:
                req = Requirement(r)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(str(canonicalize_name(req.name)))
    return seen


def check_project(project: Project) -> list[Problem]:
    """Return every problem found in *project* (errors first).

    :raises ProjectError: the package folder cannot be found at all.
    """
    problems = manifest_problems(project.config)
    declared, dep_problems = _declared(project)
    problems += dep_problems
    if project.package_dir is None:
        raise ProjectError(f"cannot find the package {project.package!r} of {project.name}")
    try:
        weights = weight_files(project)
    except MissingWeightsError as exc:
        problems.append(Problem("error", "weights", str(exc)))
        weights = []

    providers = {
        m: {canonicalize_name(d) for d in ds} for m, ds in metadata.packages_distributions().items()
    }
    indirect = _closure(declared)
    own = {project.package}
    used: set[str] = set()

    for module, where in sorted(_imports(project.package_dir).items()):
        if module in _STDLIB or module in own:
            continue
        dists = providers.get(module, set())
        used |= dists
        if not dists:
            problems.append(Problem("error", where, f"imports {module}, which is not installed here, so no "
                                    "distribution can be matched to it; install it, then declare it in "
                                    "[project] dependencies"))  # fmt: skip
        elif not dists & declared:
            dist = sorted(dists)[0]
            if dists & indirect:
                problems.append(Problem("warning", where, f"imports {module}, provided only indirectly; "
                                        f"declare {dist} in [project] dependencies"))  # fmt: skip
            else:
                problems.append(Problem("error", where, f"imports {module}, which no declared dependency "
                                        f"provides; add {dist} to [project] dependencies "
                                        "(or run `modelpack check --fix`)", missing_dist=dist))  # fmt: skip

    for path in weights:
        if not path.name.endswith(PICKLE_SUFFIXES) and path.suffix not in (".pt", ".pth"):
            continue
        scan = scan_pickle(path)
        rel = path.relative_to(project.root)
        if scan.note:
            problems.append(Problem("warning", str(rel), scan.note))
        for name in scan.globals:
            module = name.split(".", 1)[0]
            if is_dangerous(name):
                problems.append(Problem("error", str(rel), f"references {name}, which can run arbitrary "
                                        "code when unpickled; rebuild the file without it"))  # fmt: skip
            elif module in _STDLIB or module in own:
                continue
            else:
                dists = providers.get(module, set())
                used |= dists
                if not dists & indirect:
                    fix = (f"add {sorted(dists)[0]} to [project] dependencies" if dists
                           else f"install and declare the distribution that provides {module}")  # fmt: skip
                    problems.append(Problem("error", str(rel), f"references {name}, but no declared "
                                            f"dependency provides module {module}; {fix}",
                                            missing_dist=sorted(dists)[0] if dists else None))  # fmt: skip

    for unused in sorted(declared - used):
        problems.append(Problem("warning", "[project] dependencies", f"{unused} is declared but never "
                                "imported nor referenced by a pickle; remove it if the model does not need it"))  # fmt: skip
    return sorted(problems, key=lambda p: p.severity != "error")


def check_wheel(info: WheelInfo, package: str) -> list[Problem]:
    """Problems of a built wheel: it must install only the model's own package."""
    others = [t for t in info.top_level if t != package]
    if not others:
        return []
    return [Problem("error", info.filename, f"installs top-level {', '.join(others)} besides {package}; "
                    "two models could overwrite each other's modules: move them inside "
                    f"{package}/")]  # fmt: skip
