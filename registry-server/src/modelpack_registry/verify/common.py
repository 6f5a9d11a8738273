"""What the ``verify`` checks of ``state/`` share: the report and how files are read.

:mod:`~modelpack_registry.verify.access` (owners, htpasswd),
:mod:`~modelpack_registry.verify.tokens` and :mod:`~modelpack_registry.verify.state`
(stages, yanks) add their lines to one :class:`Report`. They read the documents through
the store (a folder or a bucket); only what exists on a folder alone (the leftover temp
files of interrupted writes, file modes) is looked at on the folder itself.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack_registry.access.owners import model_name
from modelpack_registry.errors import BadRequest, StorageError
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import Store

__all__ = [
    "Report",
    "are",
    "data_option",
    "delete_command",
    "file_readable_by",
    "list_entries",
    "load_json",
    "local_readable_by",
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


def data_option(store: Store) -> str:
    """How a ``modelpack-registry`` command names ``store``: ``--data DIR`` for a folder,
    ``--storage s3://BUCKET/PREFIX`` for a bucket (for the fixes ``verify`` suggests)."""
    if "://" not in store.url:
        return f"--data {store.url}"
    endpoint = getattr(store, "endpoint_url", None)  # a non-AWS service (MinIO, Ceph, ...)
    return f"--storage {store.url}" + (f" --s3-endpoint {endpoint}" if endpoint else "")


def delete_command(store: Store, key: str) -> str:
    """A shell command that deletes ``key`` by hand: ``rm PATH``, or ``aws s3 rm URL``."""
    path = store.local_path(key)
    if path is not None:
        return f"rm {path}"
    endpoint = getattr(store, "endpoint_url", None)
    where = f" --endpoint-url {endpoint}" if endpoint else ""
    return f"aws s3 rm{where} {store.url.rstrip('/')}/{key}"


def list_entries(store: Store, prefix: str, report: Report) -> list[str]:
    """The names under ``prefix`` (``state/owners/``), sorted; on a folder also the temp
    files of interrupted writes (dot-files, which the store does not list)."""
    rel = prefix.rstrip("/")
    try:
        names = {key[len(prefix) :] for key in store.iter_keys(prefix)}
        folder = store.local_path(rel)
        if folder is not None and folder.is_dir():
            names.update(n for n in os.listdir(folder) if n.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as exc:
        report.errors.append(f"unreadable: {rel}/: {exc.strerror or exc}")
        return []
    except StorageError as exc:
        report.errors.append(f"unreadable: {rel}/: {exc}")
        return []
    return sorted(names)


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
    store: Store, prefix: str, report: Report, *, kind: str, what: str, effect: str,
    also: str = "",
) -> Iterator[tuple[str, str]]:  # fmt: skip
    """``(key, model name)`` of each ``<canonical model name>.json`` under
    ``prefix``; a temp, stray or misnamed file is reported instead (``kind`` of files,
    ``what`` they hold, the ``effect`` of a misnamed one, and ``also`` after its fix).
    """
    rel = prefix.rstrip("/")
    for entry in list_entries(store, prefix, report):
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
        yield path, stem


def load_json(store: Store, key: str) -> tuple[Any, str | None]:
    """The parsed document, or what is wrong with it (never quoting its content)."""
    try:
        found = store.read_doc(key)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except StorageError as exc:
        return None, f"cannot be read ({exc})"
    if found is None:
        return None, "was deleted while verify read it"
    raw = found[0]
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


def local_readable_by(store: Store, key: str) -> str | None:
    """:func:`file_readable_by` for a document of a folder store; None on a bucket (where
    no other local user can read it: who may is the bucket's policy)."""
    path = store.local_path(key)
    return None if path is None else file_readable_by(path)


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
