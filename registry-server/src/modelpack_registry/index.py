"""The in-memory index of one server process, kept in step with the data folder.

Each process holds an immutable :class:`Snapshot` (records by filename and by project).
A request calls :meth:`Index.snapshot`, which at most every ``interval`` seconds
(``serve --refresh-interval``; :data:`CHECK_INTERVAL` on a folder,
:data:`BUCKET_CHECK_INTERVAL` on a bucket) reads the small ``generation`` document; only when it changed does a refresh run: it lists
``packages/`` and loads records only for files that are new, and drops the removed ones
(yank and stage state, being small, are re-read whole). No request hashes a file, and no request
lists the store while nothing changes. Rendered pages are cached per snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from modelpack_registry.errors import BadRequest, StorageError
from modelpack_registry.storage import DataDir, Record
from modelpack_registry.storage.base import keys

__all__ = [
    "BUCKET_CHECK_INTERVAL",
    "CHECK_INTERVAL",
    "Index",
    "Snapshot",
    "default_interval",
    "version_key",
]

log = logging.getLogger(__name__)
#: seconds between two reads of ``generation`` on a folder (a local read costs nothing)
CHECK_INTERVAL = 0.25
#: on a bucket each read is a billed GET with a network round trip, which the request
#: that triggers it waits for: 1 s bounds a replica's lag at about a second plus one
#: refresh, for 2.6 million GETs ($1.04) a month per busy server process (4x less than
#: 0.25 s). An idle process reads nothing: the check runs only when a request arrives.
BUCKET_CHECK_INTERVAL = 1.0
#: Records read at once when a bucket's listing shows new files (below its client's pool).
READ_THREADS = 32


def version_key(version: str) -> tuple[int, Version | str]:
    """Sort key for versions: PEP 440 order, unparsable ones first as text."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


@dataclass
class Snapshot:
    """The index as of one generation; never mutated after it is published."""

    generation: str
    records: dict[str, Record]
    projects: dict[str, list[Record]]  # canonical name -> records sorted by version
    yanked: dict[str, str]  # filename -> reason ("" when none given)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> stage state
    cache: dict[object, object] = field(default_factory=dict)
    cache_lock: threading.Lock = field(default_factory=threading.Lock)

    def cached(self, key: object, make: Callable[[], object]) -> object:
        """Return ``make()`` computed once per snapshot for ``key``."""
        try:
            return self.cache[key]
        except KeyError:
            pass
        value = make()
        with self.cache_lock:
            return self.cache.setdefault(key, value)

    def versions(self, project: str) -> list[str]:
        """Distinct versions of a project, oldest first."""
        seen: dict[str, None] = {}
        for record in self.projects.get(project, []):
            seen.setdefault(record.version, None)
        return list(seen)


class Index:
    """The per-process index of a data folder."""

    def __init__(self, data: DataDir, derive: Callable[[str], Record | None],
                 interval: float | None = None) -> None:  # fmt: skip
        """:param derive: builds (and stores) a record for a file that has none.
        :param interval: seconds between two checks of ``generation`` (None: the
            store's default, see :func:`default_interval`)."""
        self.data = data
        self.interval = default_interval(data) if interval is None else interval
        self._derive = derive
        self._lock = threading.Lock()
        self._checked = 0.0
        self._snapshot = Snapshot("", {}, {}, {})

    def snapshot(self) -> Snapshot:
        """The current snapshot, refreshed if the generation changed."""
        now = time.monotonic()
        if now - self._checked < self.interval:
            return self._snapshot
        with self._lock:
            if now - self._checked < self.interval:
                return self._snapshot
            generation = self.data.read_generation()
            if generation != self._snapshot.generation or not generation:
                self._snapshot = self._refresh(generation)
            self._checked = time.monotonic()
            return self._snapshot

    def invalidate(self) -> None:
        """Force the next :meth:`snapshot` to check the generation (after our own write)."""
        self._checked = 0.0

    def _refresh(self, generation: str) -> Snapshot:
        old = self._snapshot.records
        try:
            names = self.data.package_names()
        except (StorageError, OSError) as exc:
            log.error("cannot list %s%s: %s", self.data.store.url, "/packages", exc)
            return self._snapshot
        records = {name: rec for name, rec in old.items() if name in names}
        for name, record in self._load(sorted(names - records.keys())):
            if record is not None:
                records[name] = record
        projects: dict[str, list[Record]] = {}
        for record in records.values():
            projects.setdefault(record.name, []).append(record)
        for files in projects.values():
            files.sort(key=lambda r: (version_key(r.version), r.filename))
        yanked: dict[str, str] = {}
        try:
            for key in self.data.store.iter_keys(keys.YANKED):
                filename = key[len(keys.YANKED) : -len(".json")]
                if key.endswith(".json") and filename in records:
                    reason = self.data.yank_reason(filename)
                    if reason is not None:
                        yanked[filename] = reason
        except (StorageError, OSError):
            pass
        stages = load_stages(self.data)
        return Snapshot(generation, records, dict(sorted(projects.items())), yanked, stages)

    def _load(self, names: list[str]) -> Iterator[tuple[str, Record | None]]:
        """Each new file's record (derived again if missing). On a bucket every read is
        a round trip (10,000 files one by one: 85 s to the first page on moto), so many
        are read at once there; a folder reads from the page cache, faster alone."""
        if len(names) < 8 or self.data.store.local_path(keys.GENERATION) is not None:
            yield from ((name, self._record(name)) for name in names)
            return
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            yield from zip(names, pool.map(self._record, names), strict=True)

    def _record(self, name: str) -> Record | None:
        record = self.data.load_record(name)
        if record is None or record.filename != name:
            record = self._derive(name)
        return record


def default_interval(data: DataDir) -> float:
    """:data:`CHECK_INTERVAL` for a data folder, :data:`BUCKET_CHECK_INTERVAL` else."""
    return CHECK_INTERVAL if data.store.local_path(keys.GENERATION) else BUCKET_CHECK_INTERVAL


def load_stages(data: DataDir) -> dict[str, dict[str, Any]]:
    """Stage state of every model (see :mod:`modelpack_registry.stages`)."""
    from modelpack_registry.stages import load_stages as load

    return load(data)


def make_deriver(data: DataDir) -> Callable[[str], Record | None]:
    """A deriver for files placed in ``packages/`` by hand (no record yet)."""
    from modelpack_registry.verify.maintenance import derive_record

    def derive(filename: str) -> Record | None:
        try:
            record, metadata = derive_record(data, filename)
        except (BadRequest, OSError) as exc:
            log.warning("not listing packages/%s: %s", filename, exc)
            return None
        try:
            if data.exists(filename):  # no lock: the record is rebuilt from the file anyway
                data.write_derived(record, metadata)
        except (StorageError, OSError) as exc:
            log.warning("cannot write the record of %s: %s", filename, exc)
        return record

    return derive
