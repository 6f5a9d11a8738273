"""The upstream as a source of project pages and files, with its cache and its health.

The index is an ordered list of sources, ``[private, upstream]`` (devpi's shape): the
first that knows a name answers for it, and the private source knows every *private*
name (:mod:`modelpack_registry.access.reserved`), so for those the upstream is never asked.
:class:`Upstream` is the second source. For a page it answers:

- from memory or ``DATA/mirror/simple/`` while the page is younger than the TTL;
- else after a conditional GET (``If-None-Match``), one per project at a time across
  threads and processes (others serve the copy they have, or wait for the first fetch);
- if the upstream fails, from the last copy (stale), logging the failure once (not per
  request) and showing it in ``/health`` and ``/metrics``; with no copy, 502.

A file is fetched on its first request, hashed while it is written to ``mirror/tmp``,
and kept only if its sha256 is the one the upstream page gave (else 502, nothing kept);
from then on it is served from the cache with ``sendfile`` like a private file.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelpack_registry.errors import BadGateway, NotFound
from modelpack_registry.upstream.cache import MirrorCache
from modelpack_registry.upstream.client import Client, Limits, Link, UpstreamError, safe_filename
from modelpack_registry.verify.maintenance import iso_utc

__all__ = ["DEFAULT_TTL", "Page", "Status", "Upstream"]

log = logging.getLogger(__name__)
DEFAULT_TTL = 600.0
MAX_METADATA = 10 * 1024**2
MEMORY_PAGES = 2000
BACKOFF = 30.0
"""After a failure, seconds during which stale pages are served without asking again."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
DISK_RESERVE = 1024**3
"""Free space the cache never eats into: a download that would leave less is refused."""


def valid_name(name: str) -> bool:
    """True for a canonical project name the upstream may be asked about."""
    return len(name) <= 200 and bool(_NAME.match(name))


@dataclass
class Page:
    """An upstream project page as kept (``missing``: the upstream has no such project)."""

    name: str
    links: tuple[Link, ...]
    versions: tuple[str, ...]
    fetched_at: float
    etag: str | None = None
    serial: int | None = None
    missing: bool = False
    last_modified: str | None = None
    rendered: dict[tuple[str, str], bytes] = field(default_factory=dict, compare=False)

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "links": [link.to_dict() for link in self.links],
                "versions": list(self.versions), "fetched_at": self.fetched_at,
                "etag": self.etag, "serial": self.serial, "missing": self.missing,
                "last_modified": self.last_modified}  # fmt: skip

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Page | None:
        try:
            return cls(str(doc["name"]), tuple(Link.from_dict(d) for d in doc["links"]),
                       tuple(str(v) for v in doc.get("versions") or ()),
                       float(doc["fetched_at"]), doc.get("etag"), doc.get("serial"),
                       bool(doc.get("missing")), doc.get("last_modified"))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None

    def find(self, sha256: str, filename: str) -> Link | None:
        for link in self.links:
            if link.sha256 == sha256 and link.filename == filename:
                return link
        return None


class Status:
    """Whether the upstream answered last time (per process), for /health and /metrics."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = True
        self.failed_at = 0.0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.errors = 0
        self._lock = threading.Lock()

    def success(self) -> None:
        with self._lock:
            if not self.ok:
                log.warning("upstream %s answers again", self.url)
            self.ok, self.last_success = True, time.time()

    def failure(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            if self.ok or message != self.last_error:
                log.error("upstream %s failed: %s (serving cached pages and files; retrying "
                          "at most every %d s)", self.url, message, BACKOFF)  # fmt: skip
            self.ok, self.last_error, self.failed_at = False, message, time.time()

    def backing_off(self) -> bool:
        """True shortly after a failure: a stale copy is served without asking again, so
        an upstream that drops packets costs one timeout per :data:`BACKOFF`, not one per
        request."""
        return not self.ok and time.time() - self.failed_at < BACKOFF

    def as_dict(self) -> dict[str, Any]:
        success = self.last_success
        return {"url": self.url, "ok": self.ok, "last_error": self.last_error,
                "last_success": iso_utc_ts(success) if success is not None else None}  # fmt: skip


def iso_utc_ts(seconds: float) -> str:
    import datetime as dt

    return iso_utc(dt.datetime.fromtimestamp(seconds, dt.timezone.utc))


class Upstream:
    """The upstream index behind ``--upstream``, with its cache in ``DATA/mirror``."""

    def __init__(self, url: str, mirror: Path, ttl: float = DEFAULT_TTL,
                 limits: Limits | None = None) -> None:  # fmt: skip
        self.client = Client(url, limits)
        self.limits = self.client.limits
        self.cache = MirrorCache(mirror)
        self.ttl = ttl
        self.status = Status(self.client.display_url)
        self._pages: OrderedDict[str, Page] = OrderedDict()
        self._lock = threading.Lock()

    # -- pages ----------------------------------------------------------------------------
    def page(self, name: str) -> tuple[Page | None, bool]:
        """The page of canonical ``name`` and whether it is stale; (None, _) if unknown.

        :raises BadGateway: the upstream fails and no copy of the page was ever kept.
        """
        if not valid_name(name):
            return None, False  # never sent upstream (and cannot name a cache file)
        now = time.time()
        page = self._latest(name)
        if page is not None and now - page.fetched_at < self.ttl:
            return self._known(page), False
        if page is not None and self.status.backing_off():
            return self._known(page), True
        wait = 0.0 if page is not None else self.limits.page_time
        with self.cache.lock(f"page-{name}", wait) as got:
            if got:
                page = self._latest(name)  # another process may have just fetched it
                if page is not None and time.time() - page.fetched_at < self.ttl:
                    return self._known(page), False
                try:
                    page = self._refresh(name, page)
                except UpstreamError as exc:
                    self.status.failure(str(exc))
                    if page is None:
                        raise BadGateway(
                            f"the upstream index {self.status.url} cannot answer for "
                            f"{name!r} and no copy is cached: {exc}"
                        ) from None
                    return self._known(page), True
                self.status.success()
                return self._known(page), False
        if page is None:
            raise BadGateway(f"the upstream index is slow to answer for {name!r}; try again")
        return self._known(page), True  # another worker is refreshing it

    def _known(self, page: Page) -> Page | None:
        return None if page.missing else page

    def _latest(self, name: str) -> Page | None:
        """The newest copy: this process's, or the cache file if another process's is newer."""
        with self._lock:
            page = self._pages.get(name)
        if page is not None and time.time() - page.fetched_at < self.ttl:
            return page  # fresh: no need to look at the disk
        mtime = self.cache.page_mtime(name)
        if mtime is not None and (page is None or mtime > page.fetched_at + 0.5):
            doc = self.cache.read_page(name)
            stored = Page.from_doc(doc) if doc else None
            if stored is not None and (page is None or stored.fetched_at > page.fetched_at):
                page = self._remember(stored)
        return page

    def _remember(self, page: Page) -> Page:
        with self._lock:
            self._pages[page.name] = page
            self._pages.move_to_end(page.name)
            while len(self._pages) > MEMORY_PAGES:
                self._pages.popitem(last=False)
        return page

    def _refresh(self, name: str, old: Page | None) -> Page:
        known = old is not None and not old.missing
        fetched = self.client.fetch_page(name, old.etag if known and old else None,
                                         last_modified=old.last_modified if known and old else None)  # fmt: skip
        now = time.time()
        if fetched.status == 304 and old is not None:
            page = replace(old, fetched_at=now, rendered={})
        elif (old is not None and fetched.serial is not None and old.serial is not None
              and fetched.serial < old.serial):  # fmt: skip
            log.warning("upstream page of %s went back to serial %s from %s; keeping ours",
                        name, fetched.serial, old.serial)  # fmt: skip
            page = replace(old, fetched_at=now, rendered={})
        elif fetched.status == 404:
            page = Page(name, (), (), now, missing=True)
        else:
            if fetched.dropped:
                log.info("upstream page of %s: left out %d link(s) without a sha256 or with an "
                         "unsafe file name or URL", name, fetched.dropped)  # fmt: skip
            page = Page(name, fetched.links, fetched.versions, now, fetched.etag, fetched.serial,
                        last_modified=fetched.last_modified)  # fmt: skip
        if not page.missing:  # "no such project" is kept in memory only: cannot fill the disk
            try:
                self.cache.write_page(name, page.to_doc())
            except OSError as exc:
                log.warning("cannot cache the upstream page of %s: %s", name, exc)
        return self._remember(page)

    def exists(self, name: str, timeout: float = 5.0) -> bool:
        """Whether the upstream lists ``name`` (a cached answer, else one quick fetch).

        For the warning on a first upload; never raises (False when unknown).
        """
        page = self._latest(name)
        if page is not None:
            return not page.missing
        try:
            return self.client.fetch_page(name, total=timeout).status == 200
        except UpstreamError:
            return False

    # -- files ----------------------------------------------------------------------------
    def file(self, name: str, sha256: str, filename: str) -> tuple[Path, str]:
        """The cached path of a file of ``name`` (fetched and checked if need be), and
        the sha256 to use as its ETag. ``filename`` may end in ``.metadata`` (PEP 658).

        :raises NotFound: no such file on the upstream page (or an invalid path).
        :raises BadGateway: the upstream fails, or sent bytes that do not match its hash.
        """
        metadata = filename.endswith(".metadata")
        dist = filename[: -len(".metadata")] if metadata else filename
        if not _SHA256.match(sha256) or not safe_filename(dist) or not valid_name(name):
            raise NotFound(f"no such upstream file: {filename}")
        if not metadata:
            cached = self.cache.file_path(sha256, dist)
            if cached.is_file():
                return cached, sha256
        link = self._link(name, sha256, dist)
        if metadata:
            if link.core_metadata is None:
                raise NotFound(f"the upstream offers no core metadata for {dist}")
            return self._fetch(link.url + ".metadata", link.core_metadata, filename,
                               MAX_METADATA), link.core_metadata  # fmt: skip
        return self._fetch(link.url, sha256, dist, self.limits.file_size), sha256

    def _link(self, name: str, sha256: str, filename: str) -> Link:
        page, _ = self.page(name)
        link = page.find(sha256, filename) if page is not None else None
        if link is None:
            raise NotFound(f"{filename} with sha256 {sha256} is not on the upstream page of {name}")
        return link

    def _fetch(self, url: str, sha256: str, filename: str, cap: int) -> Path:
        target = self.cache.file_path(sha256, filename)
        if target.is_file():
            return target
        wait = self.limits.page_time + cap / self.limits.min_rate
        with self.cache.lock(f"file-{sha256}", wait) as got:
            if target.is_file():
                return target
            if not got:
                raise BadGateway(f"{filename} is still being fetched from the upstream; try again")
            with self.cache.temp_file() as (temp, f):
                free = shutil.disk_usage(self.cache.tmp).free - DISK_RESERVE
                if free < min(cap, MAX_METADATA):
                    log.error("no room left in %s to cache %s from the upstream (keeping %d "
                              "bytes free)", temp.parent, filename, DISK_RESERVE)  # fmt: skip
                    raise BadGateway(f"no room left to cache {filename} from the upstream")
                try:
                    # never more than the disk can take while keeping DISK_RESERVE free
                    actual, size = self.client.download(url, f, min(cap, free))
                except UpstreamError as exc:
                    self.status.failure(str(exc))
                    raise BadGateway(f"cannot fetch {filename} from the upstream: {exc}") from None
                self.status.success()
                if actual != sha256:
                    log.error("upstream sent %s with sha256 %s, but its index says %s: refused, "
                              "not cached", filename, actual, sha256)  # fmt: skip
                    raise BadGateway(
                        f"the upstream sent {filename} with sha256 {actual}, but its index "
                        f"lists {sha256}; refused and not cached"
                    )
                path = self.cache.keep(temp, f, sha256, filename)
            log.info("cached upstream file %s (%d bytes, sha256 %s)", filename, size, sha256)
            return path
