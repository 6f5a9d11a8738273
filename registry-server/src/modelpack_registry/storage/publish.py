"""Publishing one upload with conditional writes only (no lock); see :mod:`.datadir`.

The order: the version claim (:mod:`.claims`), the ``meta/`` files, the owners document
of a new name (created only if absent), the file (:meth:`~.base.Upload.commit`, created
only if absent: the commit point), the generation. Whatever fails, what this publish
created is removed again.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from modelpack_registry.errors import Conflict, StorageError, disk_full, full_disk_error
from modelpack_registry.records import Record
from modelpack_registry.storage.base import AlreadyExists, NotFound, Upload, keys
from modelpack_registry.storage.claims import Claim, Published
from modelpack_registry.validate import describe

if TYPE_CHECKING:
    from modelpack_registry.storage.datadir import DataDir

__all__ = ["exists_message", "publish", "same_bytes"]


def publish(data: DataDir, upload: Upload, record: Record, metadata: bytes | None) -> bool:
    """Make a finished, validated upload visible as ``packages/<record.filename>``.

    No lock: see the module docstring for the order of the conditional writes. The
    record is completed here with what :func:`validate.describe` reads from the file.

    Returns False, changing nothing, if these very bytes are already published
    under this name (a client's re-run); True once published.

    :raises Conflict: the file name exists with other bytes, or the version rules
        refuse the file (nothing is changed).
    :raises Forbidden: if :attr:`DataDir.guard` refuses it (nothing is changed).
    """
    if record.manifest is None and not record.requires_dist and not record.keywords:
        source = upload.local_path() or upload.reader()
        try:
            record = replace(record, **describe(source, record.filename, metadata))
        finally:
            if not isinstance(source, Path):
                source.close()
    if data.exists(record.filename):
        return _republished(data, record)
    after = data.guard.authorize_publish(data, record.name) if data.guard else None
    claim = Claim(data, record)
    try:
        claim.take()
    except Published:
        return _republished(data, record)
    owners: str | None = None
    committed = False
    try:
        data.write_derived(record, metadata)
        if after is not None:
            owners = after()
        try:
            upload.commit(keys.package(record.filename))
        except AlreadyExists:  # placed by hand, or by a server that predates claims
            claim.release()
            if not _hashed(data, record.filename, record.sha256):
                data.remove_derived(record.filename)  # ours: the index derives its own
            return _republished(data, record)
        committed = True
        data.bump_generation()
    except BaseException as exc:
        # All or nothing, also when only the generation could not be bumped (a full
        # disk): the file this publish created goes too (nobody else can have
        # created that key), then the records, the owners document and the claim.
        undo: list[Callable[[], object]] = [
            lambda: data.remove_derived(record.filename),
            claim.release,
        ]
        if committed:
            undo.insert(0, lambda: data.store.delete(keys.package(record.filename)))
        if owners is not None:
            undo.append(lambda: data.store.delete_doc(keys.owners(record.name), owners))
        for step in undo:
            with contextlib.suppress(Exception):
                step()
        if isinstance(exc, OSError) and disk_full(exc):
            raise full_disk_error(exc) from exc
        raise
    return True


def _republished(data: DataDir, record: Record) -> bool:
    """The file name exists: False if with these bytes (and the guard agrees), else 409."""
    if not same_bytes(data, record.filename, record.sha256):
        raise Conflict(exists_message(record.filename))
    if data.guard is not None:
        data.guard.authorize_publish(data, record.name)  # 403 still applies
    return False


def same_bytes(data: DataDir, filename: str, sha256: str) -> bool:
    """True if ``packages/<filename>`` has this sha256 (its record's, else hashed)."""
    stored = data.load_record(filename)
    if stored is not None:
        return stored.sha256 == sha256
    return _hashed(data, filename, sha256)


def _hashed(data: DataDir, filename: str, sha256: str) -> bool:
    """True if ``packages/<filename>`` hashes to ``sha256`` (read whole)."""
    digest = hashlib.sha256()
    try:
        with data.store.open(keys.package(filename)) as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except (NotFound, StorageError, OSError):
        return False
    return digest.hexdigest() == sha256


def exists_message(filename: str) -> str:
    return f"{filename} already exists; published versions are immutable: bump the version"
