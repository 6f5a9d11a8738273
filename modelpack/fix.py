"""``modelpack check --fix``: declare missing dependencies with a range that can read
the model's pickles.

The range comes from the version installed here, never an exact pin:

- a library whose pickles are tied to its minor version (:data:`PICKLE_MINOR`:
  scikit-learn refuses, or warns about, estimators pickled by another minor release;
  xgboost, lightgbm and catboost pickles hold their booster's internal format) is held
  to that minor release, from the installed version: ``scikit-learn>=1.9.1,<1.10``;
- any other library to its major release: ``numpy>=2.1,<3`` (or ``>=0.13,<0.14`` for a
  0.x release, where minor releases may break);
- except where the weights are all in a format that the library promises to read in
  later releases (:data:`STABLE_FORMATS`: XGBoost's own UBJSON/JSON model files): then
  the major release, as for any other library.

:func:`too_wide` explains a declared range that admits another minor release of a
library whose saved state the weights hold (``modelpack check`` warns with it).

When an added dependency, as installed here, needs a newer Python than ``requires-python``
allows (scikit-learn 1.9 needs 3.11), ``requires-python`` is raised to match: otherwise
the wheel claims to install where its dependencies cannot.

``pyproject.toml`` is edited as text so that its comments and layout survive, re-parsed
to prove the edit, and replaced atomically.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from modelpack.errors import ProjectError

if TYPE_CHECKING:
    from modelpack.checks import Problem
    from modelpack.project import Project

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "PICKLE_MINOR",
    "STABLE_FORMATS",
    "Fixed",
    "add_dependencies",
    "compatible_range",
    "fix_missing",
    "holds_minor",
    "python_floor",
    "raise_requires_python",
    "too_wide",
]

PICKLE_MINOR = frozenset(
    {"scikit-learn", "imbalanced-learn", "xgboost", "xgboost-cpu", "lightgbm", "catboost",
     "statsmodels"}
)  # fmt: skip
"""Distributions whose pickles another minor release may fail to read."""

STABLE_FORMATS: dict[str, frozenset[str]] = {
    "xgboost": frozenset({".ubj", ".json"}),
    "xgboost-cpu": frozenset({".ubj", ".json"}),
}
"""Weight-file suffixes of a :data:`PICKLE_MINOR` library's own format, which it promises
to read in later releases (XGBoost: models saved by older releases load in newer ones)."""


def holds_minor(dist: str, weights: Sequence[Path] = ()) -> bool:
    """Whether *dist* must be held to one minor release for these *weights* to load."""
    name = str(canonicalize_name(dist))
    if name not in PICKLE_MINOR:
        return False
    stable = STABLE_FORMATS.get(name)
    return not (stable and weights and all(w.suffix.lower() in stable for w in weights))


def compatible_range(dist: str, version: str | None = None, weights: Sequence[Path] = ()) -> str:
    """A requirement for *dist* that can read *weights* made with *version* (default: the
    installed one): ``>=X.Y.Z,<X.Y+1`` when :func:`holds_minor`, else ``>=X.Y,<X+1``
    (``<0.Y+1`` for 0.x).

    :raises ProjectError: *dist* is not installed here (and no *version* was given).
    """
    try:
        found = Version(version or metadata.version(dist))
    except metadata.PackageNotFoundError as exc:
        raise ProjectError(
            f"{dist} is not installed here; install it, then run --fix again"
        ) from exc
    major, minor = found.major, found.minor
    if holds_minor(dist, weights):
        return f"{dist}>={found.public},<{major}.{minor + 1}"
    upper = f"{major + 1}" if major > 0 else f"0.{minor + 1}"
    return f"{dist}>={major}.{minor},<{upper}"


@dataclass(frozen=True)
class Fixed:
    requirements: list[str]
    """The requirements added to ``[project] dependencies``."""
    requires_python: str | None = None
    """The new ``requires-python``, when the added dependencies needed a newer Python."""


def fix_missing(project: Project, problems: Sequence[Problem]) -> Fixed:
    """Declare every dependency that *problems* (``modelpack check``'s) find missing in
    *project*, and raise ``requires-python`` where they need it.

    :raises ProjectError: a missing distribution is not installed here, or
        ``pyproject.toml`` cannot be edited safely.
    """
    missing = sorted({p.missing_dist for p in problems if p.missing_dist})
    weights = _weights(project)
    requirements = [compatible_range(d, weights=weights) for d in missing]
    if not requirements:
        return Fixed([])
    pyproject = project.root / "pyproject.toml"
    add_dependencies(pyproject, requirements)
    floors = [f for f in (python_floor(_installed_requires_python(d)) for d in missing) if f]
    raised = raise_requires_python(pyproject, max(floors)) if floors else None
    return Fixed(requirements, raised)


def _weights(project: Project) -> list[Path]:
    from modelpack.errors import MissingWeightsError
    from modelpack.project import weight_files

    try:
        return weight_files(project)
    except MissingWeightsError:
        return []


def too_wide(requirement: Requirement, weights: Sequence[Path]) -> str | None:
    """Why *requirement* admits a release that may not read *weights*, or ``None``.

    Only for a library held to its minor release (:func:`holds_minor`) and installed
    here: its range must not admit the next minor release after the installed one.
    """
    if not weights or not holds_minor(requirement.name, weights):
        return None
    try:
        installed = Version(metadata.version(requirement.name))
    except metadata.PackageNotFoundError:
        return None
    after = Version(f"{installed.major}.{installed.minor + 1}.0")
    if not requirement.specifier.contains(after, prereleases=True):
        return None
    fit = compatible_range(requirement.name, str(installed), weights)
    return (
        f"{requirement} admits {requirement.name} {after} and later, but the weights hold "
        f"state saved by {installed}, which another minor release may fail to load; "
        f"declare {fit!r}"
    )


def _installed_requires_python(dist: str) -> str | None:
    try:
        return metadata.metadata(dist)["Requires-Python"]
    except metadata.PackageNotFoundError:
        return None


def python_floor(spec: str | None) -> Version | None:
    """The lowest Python a ``Requires-Python`` value admits (``>=3.11`` -> 3.11), if any."""
    try:
        specs = SpecifierSet(spec or "")
    except InvalidSpecifier:
        return None
    floors = []
    for item in specs:
        try:
            version = Version(item.version.rstrip(".*"))
        except InvalidVersion:
            continue
        if item.operator in (">=", "~=", "==", "==="):
            floors.append(version)
        elif item.operator == ">":
            floors.append(Version(f"{version.major}.{version.minor + 1}"))
    return max(floors) if floors else None


def raise_requires_python(pyproject: Path, floor: Version) -> str | None:
    """Make ``[project] requires-python`` admit nothing below *floor*; return the new
    value, or ``None`` when it already did.

    :raises ProjectError: the file cannot be edited safely.
    """
    text, start, end = _project_table(pyproject)
    current = tomllib.loads(text)["project"].get("requires-python")
    have = python_floor(current)
    if have is not None and have >= floor:
        return None
    keep = [str(s) for s in SpecifierSet(current or "") if s.operator not in (">=", ">", "~=")]
    value = ",".join([f">={floor.major}.{floor.minor}", *keep])
    line = re.compile(r"(?m)^requires-python\s*=.*$").search(text, start, end)
    if line is None:
        new = text[:start] + f'\nrequires-python = "{value}"' + text[start:]
    else:
        new = text[: line.start()] + f'requires-python = "{value}"' + text[line.end() :]
    if tomllib.loads(new)["project"].get("requires-python") != value:  # pragma: no cover
        raise ProjectError(f"could not set requires-python in {pyproject}; set {value!r} by hand")
    _replace(pyproject, new)
    return value


def _closing_bracket(text: str, start: int) -> int:
    """Index of the ``]`` closing the array opened at *start* (strings and comments skipped)."""
    depth, i, quote = 0, start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif text.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif ch == "#":
            i = text.find("\n", i)
            if i < 0:
                break
        elif text.startswith(('"""', "'''"), i):
            quote = text[i : i + 3]
            i += 2
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ProjectError("cannot find the end of [project] dependencies; fix pyproject.toml by hand")


def _with_trailing_comma(body: str) -> str:
    """*body* (an array's items) with a comma after its last item, before any comment."""
    rows = body.split("\n")
    for i in range(len(rows) - 1, -1, -1):
        code = rows[i].split("#", 1)[0].rstrip()
        if code.strip():
            if not code.endswith(","):
                rows[i] = code + "," + rows[i][len(code) :]
            break
    return "\n".join(rows)


def add_dependencies(pyproject: Path, requirements: list[str]) -> None:
    """Append *requirements* to ``[project] dependencies`` in *pyproject*.

    :raises ProjectError: the file cannot be edited safely.
    """
    text, start, end = _project_table(pyproject)
    lines = "".join(f'    "{r}",\n' for r in requirements)
    found = re.compile(r"(?m)^dependencies\s*=\s*\[").search(text, start, end)
    if found is None:
        new = text[:start] + f"\ndependencies = [\n{lines}]" + text[start:]
    else:
        close = _closing_bracket(text, found.end() - 1)
        body = text[found.end() : close].rstrip()
        new = text[: found.end()] + _with_trailing_comma(body) + "\n" + lines + text[close:]
    declared = tomllib.loads(new)["project"].get("dependencies", [])
    if not all(r in declared for r in requirements):  # pragma: no cover - defensive
        raise ProjectError(f"could not add {requirements} to {pyproject}; add them by hand")
    _replace(pyproject, new)


def _project_table(pyproject: Path) -> tuple[str, int, int]:
    """The text of *pyproject* and the span of its ``[project]`` table's body.

    :raises ProjectError: there is no ``[project]`` table.
    """
    text = pyproject.read_text(encoding="utf-8")
    section = re.search(r"(?m)^\[project\]\s*$", text)
    if section is None:
        raise ProjectError(f"{pyproject} has no [project] table")
    next_table = re.search(r"(?m)^\[", text[section.end() :])
    end = section.end() + next_table.start() if next_table else len(text)
    return text, section.end(), end


def _replace(pyproject: Path, new: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=pyproject.parent, prefix=".pyproject-", suffix=".toml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, pyproject)
