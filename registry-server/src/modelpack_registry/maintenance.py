"""``verify`` and ``reindex``: check the data folder, and rebuild what can be derived.

Both treat ``packages/`` as the whole state. ``reindex`` rewrites every ``meta/`` file
from the distributions alone (keeping each record's ``upload_time`` and uploader when a
valid one is there, else the file's mtime), re-renders every model card
(:mod:`~modelpack_registry.cards`), removes orphaned records and derived temp files,
and bumps ``generation`` so running servers reload. ``state/`` is never touched.
The CLI's ``verify`` also reads ``state/`` (and an htpasswd file) with
:mod:`~modelpack_registry.verify_access`, :mod:`~modelpack_registry.verify_tokens` and
:mod:`~modelpack_registry.verify_state`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from modelpack_registry.cards import read_card, store_cards
from modelpack_registry.errors import BadRequest
from modelpack_registry.storage import DataDir, Record
from modelpack_registry.validate import describe, inspect_distribution

__all__ = ["ReindexResult", "derive_record", "file_sha256", "reindex", "utc_now", "verify"]


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z``."""
    return iso_utc(dt.datetime.now(dt.timezone.utc))


def iso_utc(moment: dt.datetime) -> str:
    """``moment`` as ISO 8601 UTC with a ``Z``."""
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def derive_record(
    data: DataDir, filename: str, old: Record | None = None
) -> tuple[Record, bytes | None]:
    """Build the record and METADATA of ``packages/<filename>`` from the file alone.

    What the file cannot tell (when and by whom it was uploaded) is kept from ``old``, the
    file's previous record; without one the upload time is the file's mtime.

    :raises BadRequest: if the distribution is invalid (see ``inspect_distribution``).
    :raises OSError: if it cannot be read.
    """
    path = data.packages / filename
    info = inspect_distribution(path, filename)
    stat = path.stat()
    upload_time = (
        old.upload_time
        if old is not None
        else iso_utc(dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc))
    )
    record = Record(
        filename=filename,
        name=info.name,
        version=info.version,
        sha256=file_sha256(path),
        size=stat.st_size,
        upload_time=upload_time,
        # an sdist without one in PKG-INFO keeps what its upload form said
        requires_python=info.requires_python or (old.requires_python if old else None),
        summary=info.summary,
        core_metadata_sha256=(
            hashlib.sha256(info.metadata).hexdigest() if info.metadata is not None else None
        ),
        **describe(path, filename, info.metadata),
        uploaded_by=old.uploaded_by if old is not None else None,
        upload_token=old.upload_token if old is not None else None,
    )
    return record, info.metadata


def _derived_owner(name: str) -> str | None:
    for suffix in (".json", ".metadata", ".card.html"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def verify(data: DataDir) -> list[str]:
    """Every problem found in the data folder, one line each (empty if all is well)."""
    problems: list[str] = []
    packages = sorted(os.listdir(data.packages)) if data.packages.is_dir() else []
    for filename in packages:
        path = data.packages / filename
        try:
            record, metadata = derive_record(data, filename)
        except BadRequest as exc:
            problems.append(f"corrupt: packages/{filename}: {exc.message}")
            continue
        except OSError as exc:
            problems.append(f"unreadable: packages/{filename}: {exc}")
            continue
        stored = data.load_record(filename)
        if stored is None:
            problems.append(f"missing record: meta/{filename}.json (run reindex)")
        elif stored.sha256 != record.sha256:
            problems.append(
                f"corrupt: packages/{filename}: sha256 {record.sha256} does not match "
                f"its record {stored.sha256}"
            )
        elif stored.size != path.stat().st_size:
            problems.append(f"corrupt: packages/{filename}: size differs from its record")
        if metadata is not None:
            try:
                on_disk = data.metadata_path(filename).read_bytes()
            except OSError:
                problems.append(f"missing metadata: meta/{filename}.metadata (run reindex)")
            else:
                if on_disk != metadata:
                    problems.append(f"stale metadata: meta/{filename}.metadata (run reindex)")
            card = data.meta / f"{filename}.card.html"
            if card.exists() and read_card(data, record) is None:
                problems.append(f"stale card: meta/{filename}.card.html (run reindex)")
    listed = set(packages)
    for name in sorted(os.listdir(data.meta)) if data.meta.is_dir() else []:
        owner = _derived_owner(name)
        if name.startswith("."):
            problems.append(f"leftover temp file: meta/{name}")
        elif owner is None or owner not in listed:
            problems.append(f"orphan: meta/{name} has no distribution in packages/")
    for name in data.temp_files():
        problems.append(f"leftover temp file: tmp/{name}")
    return problems


@dataclass
class ReindexResult:
    """What ``reindex`` did."""

    indexed: int = 0
    removed: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def reindex(data: DataDir) -> ReindexResult:
    """Rebuild every derived file from the distributions.

    Invalid distributions are reported in ``invalid`` and get no record (so they are not
    listed); they are not deleted.
    """
    data.ensure()
    result = ReindexResult()
    cards: list[tuple[Record, bytes | None]] = []
    with data.locked():
        packages = sorted(os.listdir(data.packages))
        valid: set[str] = set()
        for filename in packages:
            old = data.load_record(filename)
            try:
                record, metadata = derive_record(data, filename, old)
            except (BadRequest, OSError) as exc:
                result.invalid.append(f"packages/{filename}: {exc}")
                for path in (data.record_path(filename), data.metadata_path(filename)):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                continue
            data.write_derived(record, metadata)
            cards.append((record, metadata))
            valid.add(filename)
            result.indexed += 1
        for name in sorted(os.listdir(data.meta)):
            owner = _derived_owner(name)
            if name.startswith(".") or owner is None or owner not in valid:
                with contextlib.suppress(FileNotFoundError):
                    (data.meta / name).unlink()
                result.removed.append(f"meta/{name}")
        data.bump_generation()
    store_cards(data, cards)  # outside the lock: uploads go on meanwhile
    result.removed.extend(f"tmp/{name}" for name in data.clean_tmp())
    return result
