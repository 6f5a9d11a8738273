"""``claims/<name>==<version>.json``: the version rules of immutable.py without a lock.

One document per project (canonical name) and version (PEP 440 normal form)::

    {"files": {"<filename>": {"sha256": "...", "at": <epoch seconds>, "claim": "<id>"}},
     "sealed": "<stage>" | null}

An upload adds its file name by compare-and-swap (:func:`~.base.update_doc`) *before*
it writes anything else, and only if :func:`~modelpack_registry.immutable.version_conflict`
allows it next to the files already published for that version and those claimed less
than :data:`CLAIM_TTL` seconds ago by uploads still in flight. Two servers taking claims
for ``1.0`` and ``1.0.0`` at once: one compare-and-swap loses, re-reads, sees the other
and is refused (409). A claim whose file never appeared (its server died) stops counting
after :data:`CLAIM_TTL`. ``sealed`` is set by a promotion (:func:`seal`), which waits
while a claim is in flight; after it no file may join the version.

Derived: ``reindex`` rebuilds each document from ``packages/`` (:func:`rebuild`),
keeping ``sealed``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelpack_registry.errors import Conflict, StorageError
from modelpack_registry.immutable import promoted_to, version_conflict
from modelpack_registry.records import Record
from modelpack_registry.storage.base import keys, update_doc
from modelpack_registry.validate import normalized_version, versions_equal

if TYPE_CHECKING:
    from modelpack_registry.storage.datadir import DataDir

__all__ = ["CLAIM_TTL", "CLAIM_WAIT", "Claim", "Published", "rebuild", "seal"]

#: Seconds a claim without its file keeps other uploads of its version out (a live
#: publisher commits within seconds of claiming; a dead one's claim expires, and so
#: does one whose withdrawal failed, e.g. on a full disk).
CLAIM_TTL = 300.0
#: Seconds an upload waits for another upload of the same file name (or a promotion
#: for an upload in flight) to finish.
CLAIM_WAIT = 120.0


class Published(Exception):
    """The file name is in ``packages/`` already (the caller compares the bytes)."""


class _Busy(Exception):
    """Another upload is publishing this very file name (or this version, for seal)."""


def claims_key(name: str, version: str) -> str:
    return keys.claims(name, normalized_version(version))


def _load(current: bytes | None) -> dict[str, Any]:
    try:
        raw: Any = json.loads(current) if current else {}
    except ValueError:
        raw = {}
    files = raw.get("files") if isinstance(raw, dict) else None
    sealed = raw.get("sealed") if isinstance(raw, dict) else None
    return {
        "files": {k: v for k, v in files.items() if isinstance(v, dict)}
        if isinstance(files, dict)
        else {},
        "sealed": sealed if isinstance(sealed, str) else None,
    }


def _dump(doc: dict[str, Any]) -> bytes | None:
    if not doc["files"] and doc["sealed"] is None:
        return None  # delete the document
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def _in_flight(entry: dict[str, Any], now: float) -> bool:
    at = entry.get("at")
    return isinstance(at, (int, float)) and now - at < CLAIM_TTL


def _wait(data: DataDir, key: str, mutate: Callable[[bytes | None], bytes | None],
          busy: str, done: Callable[[], bool] | None = None) -> None:  # fmt: skip
    deadline = time.monotonic() + CLAIM_WAIT
    while True:
        try:
            update_doc(data.store, key, mutate)
            return
        except _Busy:
            if done is not None and done():
                raise Published() from None
            if time.monotonic() > deadline:
                raise Conflict(busy) from None
            time.sleep(0.1)


class Claim:
    """This upload's claim on its file name within its version."""

    def __init__(self, data: DataDir, record: Record) -> None:
        self.data = data
        self.record = record
        self.key = claims_key(record.name, record.version)
        self.id = secrets.token_hex(8)

    def take(self) -> None:
        """Join the version, or raise.

        :raises Published: the file name got published (by another upload) meanwhile.
        :raises Conflict: the version rules refuse the file, or another upload of this
            file name kept it for more than :data:`CLAIM_WAIT` seconds.
        """
        rec = self.record
        listed = [
            f for f, _, v in self.data.distributions(rec.name) if versions_equal(v, rec.version)
        ]
        busy = f"{rec.filename} is being published by another upload right now; try again"
        _wait(self.data, self.key, lambda cur: self._add(cur, listed), busy,
              lambda: self.data.exists(rec.filename))  # fmt: skip

    def _add(self, current: bytes | None, listed: list[str]) -> bytes | None:
        rec, data, now = self.record, self.data, time.time()
        doc = _load(current)
        live: dict[str, Any] = {}
        for filename, entry in doc["files"].items():
            if filename == rec.filename:
                if data.exists(filename):
                    raise Published()
                if _in_flight(entry, now):
                    raise _Busy()
            elif data.exists(filename) or _in_flight(entry, now):
                live[filename] = entry
        stage = doc["sealed"] or promoted_to(data.stage_doc(rec.name), rec.version)
        why = version_conflict(rec.filename, set(listed) | live.keys(), stage)
        if why is not None:
            raise Conflict(why)
        live[rec.filename] = {"sha256": rec.sha256, "at": now, "claim": self.id}
        return _dump({"files": live, "sealed": doc["sealed"]})

    def release(self) -> None:
        """Withdraw the claim (publishing failed); idempotent."""

        def drop(current: bytes | None) -> bytes | None:
            doc = _load(current)
            entry = doc["files"].get(self.record.filename)
            if entry is None or entry.get("claim") != self.id:
                return current
            del doc["files"][self.record.filename]
            return _dump(doc)

        update_doc(self.data.store, self.key, drop)


def seal(data: DataDir, name: str, version: str, stage: str) -> None:
    """Mark ``version`` of ``name`` as promoted, once no upload of it is in flight.

    :raises StorageError: if uploads of that version kept it busy too long.
    """

    def mark(current: bytes | None) -> bytes | None:
        doc, now = _load(current), time.time()
        for filename, entry in doc["files"].items():
            if not data.exists(filename) and _in_flight(entry, now):
                raise _Busy()
        doc["sealed"] = doc["sealed"] or stage
        return _dump(doc)

    try:
        _wait(data, claims_key(name, version), mark,
              f"{name} {version} is receiving a file right now; promote it again")  # fmt: skip
    except Conflict as exc:
        raise StorageError(exc.message) from None


def rebuild(data: DataDir) -> int:
    """Rewrite every version's claims document from ``packages/`` (``reindex``);
    return how many were written. Live claims and ``sealed`` are kept."""
    groups: dict[str, dict[str, str]] = {}
    for filename, name, version in data.distributions():
        record = data.load_record(filename)
        groups.setdefault(claims_key(name, version), {})[filename] = record.sha256 if record else ""

    for key, files in groups.items():

        def merge(current: bytes | None, files: dict[str, str] = files) -> bytes | None:
            doc, now = _load(current), time.time()
            live = {f: e for f, e in doc["files"].items() if f not in files and _in_flight(e, now)}
            live.update({f: {"sha256": sha, "at": 0} for f, sha in files.items()})
            return _dump({"files": live, "sealed": doc["sealed"]})

        update_doc(data.store, key, merge)
    return len(groups)
