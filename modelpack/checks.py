"""``modelpack check``: what would break for a consumer, found before publishing.

- the manifest (``[tool.modelpack]``) is valid, key by key, and so is ``metrics.json``
  (:mod:`modelpack.card`);
- the model has weights;
- every module the package imports (AST scan) is provided by a declared dependency;
  declared dependencies never used are reported as warnings;
- every weight file is scanned by content for pickles (plain, joblib at any
  compression, ``.npy``/``.npz`` object arrays, torch zips and legacy files), and each
  global they name is judged against an allow-list (see :mod:`modelpack.scan`);
- (on the built wheel) the wheel installs nothing but the model's own package.

Nothing is imported or unpickled: imports are read with :mod:`ast`, pickles on a
symbolic stack, and modules are mapped to distributions from installed metadata.
"""

from __future__ import annotations

import ast
import json
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modelpack.card import dataset_errors, metrics_errors, read_card, stale_card
from modelpack.errors import MissingWeightsError, ProjectError
from modelpack.project import Project, weight_files
from modelpack.scan.policy import Policy
from modelpack.scan.report import (
    TRUSTED_KEY,
    Lazy,
    closure,
    dependency_modules,
    judge_weights,
    project_files,
    providers,
    trusted_problems,
    wheel_files,
)
from modelpack.wheel import WheelInfo

__all__ = ["MANIFEST_KEYS", "Problem", "check_project", "check_wheel", "check_wheel_weights",
           "manifest_problems"]  # fmt: skip

_STDLIB = set(sys.stdlib_module_names) | {"__builtin__", "copy_reg", "__future__"}

MANIFEST_KEYS: dict[str, str] = {
    "task": 'a string, e.g. task = "text-classification"',
    "framework": 'a string, e.g. framework = "scikit-learn"',
    "tags": 'a list of strings, e.g. tags = ["nlp", "french"]',
    "metrics": 'a table of metrics, e.g. metrics = { auc = { value = 0.93, better = "higher" } }',
    "dataset": 'a table, e.g. dataset = { name = "iris", version = "1.0" }',
    "license": 'a string, e.g. license = "Apache-2.0"',
    "input_example": "any JSON value that predict() accepts, e.g. input_example = [[1.0, 2.0]]",
    "registry": 'the registry URL, e.g. registry = "http://registry.example:8080"',
    "weights": 'the weights folder relative to the package, e.g. weights = "weights"',
    TRUSTED_KEY: "a table of weight files reviewed by hand (paths relative to the weights "
    'folder) to their sha256, e.g. trusted-pickles = { "old.pkl" = "<64 hex>" }',
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
        "metrics": lambda v: True,  # checked key by key with metrics.json (modelpack.card)
        "dataset": lambda v: True,
        "license": lambda v: isinstance(v, str) and bool(v.strip()),
        "input_example": lambda v: _json_ok(v),
        "registry": lambda v: isinstance(v, str) and v.startswith(("http://", "https://")),
        "weights": lambda v: (
            isinstance(v, str) and ".." not in Path(v).parts and not v.startswith("/")
        ),
        TRUSTED_KEY: lambda v: not trusted_problems({TRUSTED_KEY: v}),
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
                                "missing; add one so `modelpack publish --verify` can call predict() and "
                                "`modelpack build` can infer the signature `modelpack serve` checks"))  # fmt: skip
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


def package_source(package_dir: Path, package: str) -> Callable[[str], tuple[str, bool] | None]:
    """The source of one of the package's modules, and whether it is a package."""

    def source(module: str) -> tuple[str, bool] | None:
        parts = module.split(".")
        if parts[0] != package:
            return None
        base = package_dir.joinpath(*parts[1:])
        for path, is_pkg in ((base / "__init__.py", True), (base.with_suffix(".py"), False)):
            if len(parts) == 1 and not is_pkg:
                continue
            if path.is_file():
                try:
                    return path.read_text(encoding="utf-8"), is_pkg
                except (OSError, UnicodeDecodeError):
                    return None
        return None

    return source


def check_project(project: Project) -> list[Problem]:
    """Return every problem found in *project* (errors first).

    :raises ProjectError: the package folder cannot be found at all.
    """
    problems = manifest_problems(project.config)
    card = read_card(project.root, project.config)
    problems += [Problem("error", key, message) for key, message in card.errors]
    problems += [Problem("warning", key, message) for key, message in card.warnings]
    declared, dep_problems = _declared(project)
    problems += dep_problems
    if project.package_dir is None:
        raise ProjectError(f"cannot find the package {project.package!r} of {project.name}")
    try:
        weights = weight_files(project)
    except MissingWeightsError as exc:
        problems.append(Problem("error", "weights", str(exc)))
        weights = []

    problems += [Problem("warning", k, m) for k, m in stale_card(project.root, weights)]
    provided = providers()
    indirect = closure(declared)
    own = {project.package}
    used: set[str] = set()

    for module, where in sorted(_imports(project.package_dir).items()):
        if module in _STDLIB or module in own:
            continue
        dists = set(provided.get(module, []))
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

    if weights and project.weights_dir is not None:
        policy = Policy(project.package, package_source(project.package_dir, project.package),
                        dependency_modules(declared, provided), provided)  # fmt: skip
        trusted = project.config.get(TRUSTED_KEY, {})
        files = project_files(project.weights_dir, project.root, weights)
        for f in judge_weights(files, policy, trusted if isinstance(trusted, dict) else {}):
            severity = "error" if f.error else "warning"
            problems.append(Problem(severity, f.where, f.message, f.missing_dist))
        used |= policy.used

    from modelpack.fix import too_wide

    # libraries whose state the weights hold: named by a pickle, or inside a skops file
    saved = {str(canonicalize_name(d)) for d in used}
    if any(w.suffix == ".skops" for w in weights):
        saved.add("scikit-learn")
    for dep in project.dependencies:
        try:
            req = Requirement(dep)
        except InvalidRequirement:
            continue  # reported above
        if canonicalize_name(req.name) not in saved:
            continue
        if why := too_wide(req, weights):
            problems.append(Problem("warning", "[project] dependencies", why))

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


def check_wheel_weights(info: WheelInfo, subdir: str) -> list[Problem]:
    """The pickle check of :func:`check_project`, on the weights inside a built wheel.

    The allow-list comes from the wheel itself: its package (the entry point's), the
    package's sources in the wheel, and its ``Requires-Dist``; a ``trusted-pickles``
    table is read from its ``modelpack.json``, whose ``metrics`` and ``dataset`` are
    checked as ``check`` checks them in a project (a wheel made by other tools).
    """
    package = sorted(
        v.split(":", 1)[0].strip().split(".", 1)[0] for v in info.entry_points.values()
    )[0]
    declared: set[str] = set()
    for r in info.requires_dist:
        try:
            req = Requirement(r)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            declared.add(str(canonicalize_name(req.name)))
    provided = Lazy(providers)  # made only if a weight file holds a pickle to judge
    with zipfile.ZipFile(info.path) as zf:
        names = set(zf.namelist())

        def source(module: str) -> tuple[str, bool] | None:
            base = module.replace(".", "/")
            for name, is_pkg in ((f"{base}/__init__.py", True), (f"{base}.py", False)):
                if name in names and module.split(".", 1)[0] == package:
                    return zf.read(name).decode("utf-8", "replace"), is_pkg
            return None

        manifest_name = next((n for n in names if n.endswith(".dist-info/modelpack.json")), None)
        try:
            manifest = json.loads(zf.read(manifest_name)) if manifest_name else {}
        except ValueError:
            manifest = {}
        trusted = manifest.get(TRUSTED_KEY) if isinstance(manifest, dict) else None
        deps = Lazy(lambda: dependency_modules(declared, provided))
        policy = Policy(package, source, deps, provided)
        files = wheel_files(zf, info.weights, f"{package}/{subdir.strip('/')}/")
        findings = judge_weights(files, policy, trusted if isinstance(trusted, dict) else {})
    card = manifest if isinstance(manifest, dict) else {}
    where = f"{info.filename}: modelpack.json"
    bad = metrics_errors(card["metrics"], f"{where} metrics") if "metrics" in card else []
    bad += dataset_errors(card["dataset"], f"{where} dataset") if "dataset" in card else []
    return [Problem("error" if f.error else "warning", f"{info.filename}: {f.where}", f.message)
            for f in findings] + [Problem("error", key, message) for key, message in bad]  # fmt: skip
