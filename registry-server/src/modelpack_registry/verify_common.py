"""What the ``verify`` checks of ``state/`` share: the report and how files are read.

:mod:`~modelpack_registry.verify_access` (owners, htpasswd),
:mod:`~modelpack_registry.verify_tokens` and :mod:`~modelpack_registry.verify_state`
(stages, yanks) add their lines to one :class:`Report`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack_registry.errors import BadRequest
from modelpack_registry.owners import model_name
from modelpack_registry.storage import DataDir

__all__ = [
    "Report",
    "are",
    "file_readable_by",
    "list_entries",
    "load_json",
    "model_files",
    "published_names",
    "readable_by",
    "some",
    "stray_file",
]


@dataclass
class Report:
    """What the checks found: ``errors`` fail ``verify``, ``warnings`` do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.warnings.append(f"warning: {text}")


def are(names: list[str]) -> str:
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"


def some(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def published_names(data: DataDir) -> set[str]:
    """The projects with a file in ``packages/`` (misnamed files: the distribution checks)."""
    return {name for _, name, _ in data.distributions()}


def list_entries(folder: Path, rel: str, report: Report) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        report.errors.append(f"unreadable: {rel}/: {exc.strerror or exc}")
        return []


def stray_file(rel: str, entry: str, kind: str, report: Report) -> bool:
    """Warn about (and return True for) a temp or foreign file among ``kind`` files."""
    if entry.startswith("."):
        report.warn(
            f"{rel}: leftover temp file of a write that did not finish; delete it when no "
            "server or CLI command is writing"
        )
        return True
    if not entry.endswith(".json"):
        report.warn(f"{rel}: not read by the registry ({kind}); move it out of the folder")
        return True
    return False


def model_files(
    folder: Path, rel: str, report: Report, *, kind: str, what: str, effect: str, also: str = ""
) -> Iterator[tuple[str, str, str]]:
    """``(entry, rel path, model name)`` of each ``<canonical model name>.json`` in
    ``folder``; a temp, stray or misnamed file is reported instead (``kind`` of files,
    ``what`` they hold, the ``effect`` of a misnamed one, and ``also`` after its fix).
    """
    for entry in list_entries(folder, rel, report):
        path = f"{rel}/{entry}"
        if stray_file(path, entry, f"{kind} are named <model-name>.json", report):
            continue
        stem = entry[: -len(".json")]
        try:
            name: str | None = model_name(stem)
        except BadRequest:
            name = None
        if name != stem:
            fix = f"rename it to {rel}/{name}.json" if name else "delete it"
            report.errors.append(
                f"misnamed: {path}: the registry reads {what} only from "
                f"{rel}/<canonical name>.json, so {effect}: {fix}{also}"
            )
            continue
        yield entry, path, stem


def load_json(path: Path) -> tuple[Any, str | None]:
    """The parsed file, or what is wrong with it (never quoting its content)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if not raw.strip():
        return None, "is empty"
    try:
        return json.loads(raw), None
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
            return None, f"is truncated (the JSON ends early, {where})"
        return None, f"is not valid JSON ({exc.msg} at {where})"


def file_readable_by(path: Path) -> str | None:
    """Who besides the server can read ``path``: "others", "its group", or None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return readable_by(
        st.st_mode, st.st_uid, st.st_gid, os.geteuid(), [os.getegid(), *os.getgroups()]
    )


def readable_by(mode: int, uid: int, gid: int, euid: int, groups: list[int]) -> str | None:
    """Who besides user ``euid`` (in ``groups``) can read a file of ``mode``, ``uid``, ``gid``.

    Group read is fine when the group is how this user reads a file it does not own: a
    Kubernetes secret is root's, mode 0440, with the pod's fsGroup as its group.
    """
    if mode & stat.S_IROTH:
        return "others"
    if mode & stat.S_IRGRP:
        if uid != euid and gid in groups:
            return None
        return "its group"
    return None
