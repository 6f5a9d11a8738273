"""``modelpack check --fix``: declare missing dependencies with a range that can read
the model's pickles.

The range comes from the version installed here, never an exact pin:

- a library whose pickles are tied to its minor version (:data:`PICKLE_MINOR`:
  scikit-learn refuses, or warns about, estimators pickled by another minor release;
  xgboost, lightgbm and catboost pickles hold their booster's internal format) is held
  to that minor release, from the installed version: ``scikit-learn>=1.9.1,<1.10``;
- any other library to its major release: ``numpy>=2.1,<3`` (or ``>=0.13,<0.14`` for a
  0.x release, where minor releases may break).

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
    "Fixed",
    "add_dependencies",
    "compatible_range",
    "fix_missing",
    "python_floor",
    "raise_requires_python",
]

PICKLE_MINOR = frozenset(
    {"scikit-learn", "imbalanced-learn", "xgboost", "lightgbm", "catboost", "statsmodels"}
)
"""Distributions whose pickles another minor release may fail to read."""


def compatible_range(dist: str, version: str | None = None) -> str:
    """A requirement for *dist* that can read pickles made with *version* (default: the
    installed one): ``>=X.Y.Z,<X.Y+1`` for :data:`PICKLE_MINOR`, else ``>=X.Y,<X+1``
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
    if canonicalize_name(dist) in PICKLE_MINOR:
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
    requirements = [compatible_range(d) for d in missing]
    if not requirements:
        return Fixed([])
    pyproject = project.root / "pyproject.toml"
    add_dependencies(pyproject, requirements)
    floors = [f for f in (python_floor(_installed_requires_python(d)) for d in missing) if f]
    raised = raise_requires_python(pyproject, max(floors)) if floors else None
    return Fixed(requirements, raised)


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
    text = pyproject.read_text(encoding="utf-8")
    section = re.search(r"(?m)^\[project\]\s*$", text)
    if section is None:
        raise ProjectError(f"{pyproject} has no [project] table")
    next_table = re.search(r"(?m)^\[", text[section.end() :])
    end = section.end() + next_table.start() if next_table else len(text)
    current = tomllib.loads(text)["project"].get("requires-python")
    have = python_floor(current)
    if have is not None and have >= floor:
        return None
    keep = [str(s) for s in SpecifierSet(current or "") if s.operator not in (">=", ">", "~=")]
    value = ",".join([f">={floor.major}.{floor.minor}", *keep])
    line = re.compile(r"(?m)^requires-python\s*=.*$").search(text, section.end(), end)
    if line is None:
        new = text[: section.end()] + f'\nrequires-python = "{value}"' + text[section.end() :]
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
    text = pyproject.read_text(encoding="utf-8")
    section = re.search(r"(?m)^\[project\]\s*$", text)
    if section is None:
        raise ProjectError(f"{pyproject} has no [project] table")
    next_table = re.search(r"(?m)^\[", text[section.end() :])
    end = section.end() + next_table.start() if next_table else len(text)
    lines = "".join(f'    "{r}",\n' for r in requirements)
    found = re.compile(r"(?m)^dependencies\s*=\s*\[").search(text, section.end(), end)
    if found is None:
        new = text[: section.end()] + f"\ndependencies = [\n{lines}]" + text[section.end() :]
    else:
        close = _closing_bracket(text, found.end() - 1)
        body = text[found.end() : close].rstrip()
        new = text[: found.end()] + _with_trailing_comma(body) + "\n" + lines + text[close:]
    declared = tomllib.loads(new)["project"].get("dependencies", [])
    if not all(r in declared for r in requirements):  # pragma: no cover - defensive
        raise ProjectError(f"could not add {requirements} to {pyproject}; add them by hand")
    _replace(pyproject, new)


def _replace(pyproject: Path, new: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=pyproject.parent, prefix=".pyproject-", suffix=".toml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, pyproject)
