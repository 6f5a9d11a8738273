"""``verify`` and ``reindex``: check the data folder, and rebuild what can be derived.

Both treat ``packages/`` as the whole state. ``reindex`` rewrites every ``meta/`` file
(and the version claims of :mod:`~modelpack_registry.storage.claims`) from the
distributions alone (keeping each record's ``upload_time`` and uploader when a valid one
is there, else the file's mtime), re-renders every model card
(:mod:`~modelpack_registry.cards`), removes orphaned records and derived temp files,
and bumps ``generation`` so running servers reload. ``state/`` is never touched.
The CLI's ``verify`` also reads ``state/`` (and an htpasswd file) with
:mod:`~modelpack_registry.verify.access`, :mod:`~modelpack_registry.verify.tokens` and
:mod:`~modelpack_registry.verify.state`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from modelpack_registry.cards import read_card, store_cards
from modelpack_registry.errors import BadRequest, StorageError
from modelpack_registry.storage import DataDir, Record
from modelpack_registry.storage.base import NotFound, keys
from modelpack_registry.storage.claims import rebuild as rebuild_claims
from modelpack_registry.validate import Source, describe, inspect_distribution

__all__ = ["ReindexResult", "derive_record", "file_sha256", "reindex", "utc_now", "verify"]


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z``."""
    return iso_utc(dt.datetime.now(dt.timezone.utc))


def iso_utc(moment: dt.datetime) -> str:
    """``moment`` as ISO 8601 UTC with a ``Z``."""
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def file_sha256(src: Source) -> str:
    """The hex sha256 of a file (a path or a seekable stream), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        if isinstance(src, Path):
            f: BinaryIO = stack.enter_context(open(src, "rb"))
        else:
            f = src
            f.seek(0)
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _readable(data: DataDir, key: str) -> Iterator[Source]:
    """The blob ``key`` as a local path (a folder), else as a local temp copy (a bucket:
    zip files are read from their end, so a seekable copy is needed)."""
    path = data.store.local_path(key)
    if path is not None:
        yield path
        return
    with tempfile.TemporaryFile() as copy, data.store.open(key) as remote:
        shutil.copyfileobj(remote, copy, 1 << 20)
        yield copy


def derive_record(
    data: DataDir, filename: str, old: Record | None = None
) -> tuple[Record, bytes | None]:
    """Build the record and METADATA of ``packages/<filename>`` from the file alone.

    What the file cannot tell (when and by whom it was uploaded) is kept from ``old``, the
    file's previous record; without one the upload time is the file's mtime.

    :raises BadRequest: if the distribution is invalid (see ``inspect_distribution``).
    :raises OSError: if it cannot be read (:class:`~.base.NotFound`: it is gone).
    """
    key = keys.package(filename)
    stat = data.store.stat(key)
    if stat is None:
        raise NotFound(key)
    with _readable(data, key) as src:
        info = inspect_distribution(src, filename)
        sha256 = file_sha256(src)
        described = describe(src, filename, info.metadata)
    upload_time = (
        old.upload_time
        if old is not None
        else iso_utc(dt.datetime.fromtimestamp(stat.mtime, dt.timezone.utc))
    )
    record = Record(
        filename=filename,
        name=info.name,
        version=info.version,
        sha256=sha256,
        size=stat.size,
        upload_time=upload_time,
        # an sdist without one in PKG-INFO keeps what its upload form said
        requires_python=info.requires_python or (old.requires_python if old else None),
        summary=info.summary,
        core_metadata_sha256=(
            hashlib.sha256(info.metadata).hexdigest() if info.metadata is not None else None
        ),
        **described,
        uploaded_by=old.uploaded_by if old is not None else None,
        upload_token=old.upload_token if old is not None else None,
    )
    return record, info.metadata


def _derived_owner(name: str) -> str | None:
    for suffix in (".json", ".metadata", ".card.html"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _packages(data: DataDir) -> list[str]:
    try:
        return sorted(data.package_names())
    except (StorageError, OSError):
        return []


def _meta_names(data: DataDir) -> list[str]:
    try:
        return sorted(key[len(keys.META) :] for key in data.store.iter_keys(keys.META))
    except (StorageError, OSError):
        return []


def verify(data: DataDir) -> list[str]:
    """Every problem found in the data, one line each (empty if all is well)."""
    problems: list[str] = []
    packages = _packages(data)
    for filename in packages:
        try:
            record, metadata = derive_record(data, filename)
        except BadRequest as exc:
            problems.append(f"corrupt: packages/{filename}: {exc.message}")
            continue
        except (StorageError, OSError) as exc:
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
        elif stored.size != record.size:
            problems.append(f"corrupt: packages/{filename}: size differs from its record")
        if metadata is not None:
            on_disk = data.load_metadata(filename)
            if on_disk is None:
                problems.append(f"missing metadata: meta/{filename}.metadata (run reindex)")
            elif on_disk != metadata:
                problems.append(f"stale metadata: meta/{filename}.metadata (run reindex)")
            card = data.store.stat(keys.card(filename))
            if card is not None and read_card(data, record) is None:
                problems.append(f"stale card: meta/{filename}.card.html (run reindex)")
    listed = set(packages)
    for name in _meta_names(data):
        owner = _derived_owner(name)
        if name.startswith("."):
            problems.append(f"leftover temp file: meta/{name}")
        elif owner is None or owner not in listed:
            problems.append(f"orphan: meta/{name} has no distribution in packages/")
    for name in data.pending_uploads():  # a bucket names its keys (tmp/..., packages/...)
        problems.append(f"leftover temp file: {name if '/' in name else f'tmp/{name}'}")
    return problems


@dataclass
class ReindexResult:
    """What ``reindex`` did."""

    indexed: int = 0
    removed: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def reindex(data: DataDir) -> ReindexResult:
    """Rebuild every derived file (``meta/``, ``claims/``) from the distributions.

    Invalid distributions are reported in ``invalid`` and get no record (so they are not
    listed); they are not deleted. No lock: run it while no upload is in flight (an
    upload's record written just before its file is committed could be removed; the
    index then derives it from the file).
    """
    data.ensure()
    result = ReindexResult()
    cards: list[tuple[Record, bytes | None]] = []
    valid: set[str] = set()
    for filename in _packages(data):
        old = data.load_record(filename)
        try:
            record, metadata = derive_record(data, filename, old)
        except (BadRequest, StorageError, OSError) as exc:
            result.invalid.append(f"packages/{filename}: {exc}")
            data.remove_derived(filename)
            continue
        data.write_derived(record, metadata)
        cards.append((record, metadata))
        valid.add(filename)
        result.indexed += 1
    for name in _meta_names(data):
        owner = _derived_owner(name)
        if name.startswith(".") or owner is None or owner not in valid:
            data.store.delete(keys.META + name)
            result.removed.append(f"meta/{name}")
    rebuild_claims(data)
    data.bump_generation()
    store_cards(data, cards)  # uploads go on meanwhile
    result.removed.extend(n if "/" in n else f"tmp/{n}" for n in data.sweep_uploads())
    return result
