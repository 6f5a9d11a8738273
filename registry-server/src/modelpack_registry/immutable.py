"""What a published version may still receive: the rules behind "a version cannot change".

A version is identified by its normalized value (PEP 440: ``1.0``, ``1.0.0`` and
``v1.0`` are one version) within a project identified by its canonical name (PEP 503).
Once a version has a file, :func:`version_conflict` refuses (409) every file that pip
could take *instead of* one already there:

- the same version spelled another way (``1.0.0`` after ``1.0``);
- a wheel whose tags overlap those of a wheel already published for the version: a
  build tag (``model_ver-1.0-1-py3-none-any.whl``), another spelling of the project
  name (``Model_Ver-1.0-...``), or a tag set sharing one tag (``py2.py3-none-any``);
- a second sdist (``.zip`` after ``.tar.gz``);
- any file at all once the version is, or was, in a stage (``production``): what a
  stage installs never changes.

Files that are new to a version that was never promoted stay allowed: a wheel for
other tags (a platform wheel beside a pure one, as a CI matrix uploads them one by one)
and the first sdist beside the wheels, which is how ``twine upload dist/*`` publishes a
release. The same file name again is decided by the caller: the same bytes are a
successful no-op (as on the public index), other bytes a 409.

:meth:`DataDir.publish <modelpack_registry.storage.DataDir.publish>` applies these rules
through the version's claims document (:mod:`modelpack_registry.storage.claims`, a
compare-and-swap, no lock); the upload handler applies them to its snapshot first only
to refuse early.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

__all__ = ["promoted_to", "version_conflict"]

_BUMP = "published versions are immutable: bump the version"


def _parse(filename: str) -> tuple[str, frozenset[Tag] | None] | None:
    """``(normalized version, wheel tags or None for an sdist)``; None if unparsable."""
    try:
        if filename.endswith(".whl"):
            _, version, _, tags = parse_wheel_filename(filename)
            return str(version), tags
        return str(parse_sdist_filename(filename)[1]), None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def version_conflict(filename: str, others: Iterable[str], stage: str | None) -> str | None:
    """Why ``filename`` may not join ``others``; None if it may.

    ``others``: the published files of the same project whose version equals this
    file's (the same file name excluded). ``stage``: a stage this version is or was in
    (see :func:`promoted_to`), or None.
    """
    mine = _parse(filename)
    if mine is None:
        return None  # the file name checks refuse it
    version, tags = mine
    files = [name for name in others if name != filename]
    for other in sorted(files):
        theirs = _parse(other)
        if theirs is None:
            continue
        if theirs[0] != version:
            return (
                f"{filename}: version {version} is the published version {theirs[0]} "
                f"({other}) spelled another way; {_BUMP}"
            )
        if tags is None and theirs[1] is None:
            return f"{filename}: version {version} already has an sdist ({other}); {_BUMP}"
        if tags is not None and theirs[1] is not None and tags & theirs[1]:
            return (
                f"{filename} already exists as {other} (the same version for the same "
                f"platforms: another build tag or spelling); {_BUMP}"
            )
    if files and stage is not None:
        return (
            f"{filename}: version {version} was promoted to {stage}; no file can be added "
            f"to a promoted version, so what it installs never changes; {_BUMP}"
        )
    return None


def promoted_to(stage_doc: bytes | None, version: str) -> str | None:
    """A stage that points, or once pointed, at ``version``; None if none ever did.

    ``stage_doc`` is the content of ``state/stages/<name>.json`` (see
    :mod:`modelpack_registry.stages`); a missing (None) or unparsable one counts as no stage.
    """
    if stage_doc is None:
        return None
    try:
        raw: Any = json.loads(stage_doc)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    stages = raw.get("stages")
    history = raw.get("history")
    pointers: list[tuple[object, object]] = []
    if isinstance(stages, dict):
        pointers += [(s, v.get("version")) for s, v in stages.items() if isinstance(v, dict)]
    if isinstance(history, list):
        pointers += [(h.get("stage"), h.get("to")) for h in history if isinstance(h, dict)]
    for stage, pointed in pointers:
        if isinstance(pointed, str) and _same(pointed, version):
            return str(stage)
    return None


def _same(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b
