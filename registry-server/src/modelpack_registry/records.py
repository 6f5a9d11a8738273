"""One distribution's record (``meta/<file>.json``): what the index knows about a file.

Derived from ``packages/`` (``modelpack-registry reindex`` rebuilds it), except who
uploaded it and when, which reindex keeps. :mod:`modelpack_registry.storage` writes it
before the file is linked; it re-exports :class:`Record`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Record"]


@dataclass(frozen=True)
class Record:
    """What the index needs to know about one distribution file (``meta/<file>.json``)."""

    filename: str
    name: str  # canonical project name (PEP 503)
    version: str
    sha256: str
    size: int
    upload_time: str  # ISO 8601, UTC, e.g. 2024-05-01T12:00:00.123456Z
    requires_python: str | None
    summary: str | None
    core_metadata_sha256: str | None  # sha256 of meta/<file>.metadata, None for sdists
    # Extracted at upload/reindex so no request ever opens a distribution (see
    # validate.describe): modelpack.json (None if absent or invalid) and METADATA fields.
    manifest: dict[str, Any] | None = None
    requires_dist: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    classifiers: tuple[str, ...] = ()
    license: str | None = None
    # Who published it (None: an anonymous registry, or a file placed by hand), and the
    # id of the API token used, if one was. Kept by reindex, like upload_time.
    uploaded_by: str | None = None
    upload_token: str | None = None

    def to_json(self) -> bytes:
        """The record as it is stored on disk."""
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> Record:
        """Parse a stored record.

        :raises ValueError: if it is not a record (bad JSON, missing or wrong fields).
        """
        data: Any = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("record is not a JSON object")
        try:
            record = cls(
                filename=str(data["filename"]),
                name=str(data["name"]),
                version=str(data["version"]),
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                upload_time=str(data["upload_time"]),
                requires_python=_opt_str(data.get("requires_python")),
                summary=_opt_str(data.get("summary")),
                core_metadata_sha256=_opt_str(data.get("core_metadata_sha256")),
                manifest=data.get("manifest") if isinstance(data.get("manifest"), dict) else None,
                requires_dist=_str_tuple(data.get("requires_dist")),
                keywords=_str_tuple(data.get("keywords")),
                classifiers=_str_tuple(data.get("classifiers")),
                license=_opt_str(data.get("license")),
                uploaded_by=_opt_str(data.get("uploaded_by")),
                upload_token=_opt_str(data.get("upload_token")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"record field missing or wrong: {exc}") from exc
        return record


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _str_tuple(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()
