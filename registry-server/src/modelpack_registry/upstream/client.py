"""HTTP to the upstream index: project pages (PEP 691 JSON or PEP 503 HTML) and files.

Everything an upstream sends is bounded, so a broken or hostile index cannot hang a
worker or fill the disk: a socket timeout on connect and on every read
(:attr:`Limits.timeout`), a total time per page (:attr:`Limits.page_time`) and per file
(``page_time`` plus the time the file takes at :attr:`Limits.min_rate`), a page size cap
and a file size cap. Only ``http``/``https`` URLs are followed (also on redirects): a
page cannot point the registry at ``file://`` or ``ftp://``. Credentials in the upstream
URL (``https://user:pass@host/simple/``) are sent as Basic auth to that host only, never
after a redirect elsewhere, and never shown (:attr:`Client.display_url`).

Only ``urllib`` is used (``requests`` is not a registry dependency).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from modelpack_registry.errors import disk_full

__all__ = ["Client", "Fetched", "Limits", "Link", "UpstreamError", "check_url", "safe_filename"]

JSON = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
BLOCK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!~-]{0,254}$")


class UpstreamError(Exception):
    """The upstream could not be reached, or answered something that is not an index."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one upstream response may cost."""

    timeout: float = 10.0
    """Seconds to connect, and between two reads of a response."""
    page_time: float = 60.0
    """Total seconds for one project page."""
    page_size: int = 50 * 1024**2
    file_size: int = 20 * 1024**3
    min_rate: float = 1024**2
    """Bytes per second a file download must average (beyond ``page_time``)."""


@dataclass(frozen=True)
class Link:
    """One file of an upstream project page, as the registry keeps and re-serves it."""

    filename: str
    url: str  # absolute upstream URL, without fragment
    sha256: str
    requires_python: str | None = None
    yanked: str | bool = False  # False, True (no reason given) or the reason
    core_metadata: str | None = None  # sha256 of the PEP 658 file; None: not offered
    size: int | None = None
    upload_time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Link:
        fields: dict[str, Any] = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**fields)


@dataclass(frozen=True)
class Fetched:
    """The answer to one page request: 200 with links, 304 (unchanged) or 404."""

    status: int
    links: tuple[Link, ...] = ()
    versions: tuple[str, ...] = ()
    etag: str | None = None
    serial: int | None = None
    dropped: int = 0  # links left out (no sha256, unsafe file name or URL)
    last_modified: str | None = None


def check_url(url: str) -> str:
    """The upstream root URL with a trailing slash.

    :raises ValueError: if it is not an absolute http(s) URL.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"--upstream {redact(url)!r} is not an http(s) URL of a simple index, "
            "e.g. https://pypi.org/simple/"
        )
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def redact(url: str) -> str:
    """``url`` without its user and password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def safe_filename(name: str) -> bool:
    """True for a plain file name (no path, no leading dot, no ``.metadata`` suffix)."""
    return bool(_FILENAME.match(name)) and not name.endswith(".metadata")


class Client:
    """Fetches pages and files from one upstream simple index."""

    def __init__(self, url: str, limits: Limits | None = None) -> None:
        root = check_url(url)
        parts = urlsplit(root)
        self.limits = limits or Limits()
        self.display_url = redact(root)
        self.root = self.display_url
        self._host = parts.hostname
        self._auth: str | None = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        opener = urllib.request.OpenerDirector()
        for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                        urllib.request.HTTPSHandler(), urllib.request.HTTPRedirectHandler(),
                        urllib.request.HTTPDefaultErrorHandler(),
                        urllib.request.HTTPErrorProcessor()):  # fmt: skip
            opener.add_handler(handler)
        self._opener = opener

    def page_url(self, name: str) -> str:
        return f"{self.root}{name}/"

    def _open(self, url: str, headers: dict[str, str]) -> Any:
        if urlsplit(url).scheme not in ("http", "https"):
            raise UpstreamError(f"refusing a non-http(s) URL from the upstream: {url[:200]}")
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - checked above
        if self._auth and urlsplit(url).hostname == self._host:
            request.add_unredirected_header("Authorization", self._auth)
        return self._opener.open(request, timeout=self.limits.timeout)

    def fetch_page(self, name: str, etag: str | None = None, total: float | None = None,
                   last_modified: str | None = None) -> Fetched:  # fmt: skip
        """Ask for project ``name`` (canonical); ``etag`` (``If-None-Match``) or else
        ``last_modified`` (``If-Modified-Since``) makes it a conditional GET.

        :raises UpstreamError: unreachable, timed out, too large, or not an index page.
        """
        deadline = time.monotonic() + (total or self.limits.page_time)
        headers = {"Accept": ACCEPT, "User-Agent": "modelpack-registry (upstream proxy)"}
        if etag:
            headers["If-None-Match"] = etag
        elif last_modified:
            headers["If-Modified-Since"] = last_modified
        url = self.page_url(name)
        try:
            with self._open(url, headers) as resp:
                body = _read_capped(resp, self.limits.page_size, deadline, "page")
                final = resp.geturl()
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                new_etag = resp.headers.get("ETag")
                modified = resp.headers.get("Last-Modified")
                serial = _int(resp.headers.get("X-PyPI-Last-Serial"))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304:
                return Fetched(304, etag=etag)
            if exc.code in (404, 410):
                return Fetched(404)
            raise UpstreamError(f"{self.display_url} answered HTTP {exc.code} for {name}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise UpstreamError(f"{self.display_url} cannot be reached: {reason}") from None
        if ctype == JSON:
            fetched = _parse_json(body, final)
        elif ctype in ("text/html", "application/vnd.pypi.simple.v1+html"):
            fetched = _parse_html(body, final)
        else:
            raise UpstreamError(
                f"{self.display_url} answered {ctype or 'no content type'} for {name}, "
                "not a simple index page"
            )
        return Fetched(200, fetched.links, fetched.versions, new_etag, serial, fetched.dropped,
                       modified)  # fmt: skip

    def download(self, url: str, out: IO[bytes], max_size: int) -> tuple[str, int]:
        """Copy the file at ``url`` into ``out``; return its (sha256, size).

        :raises UpstreamError: unreachable, an HTTP error, over ``max_size``, or too slow.
        """
        started = time.monotonic()
        deadline = started + self.limits.page_time + max_size / self.limits.min_rate
        digest, size = hashlib.sha256(), 0

        def keep(block: bytes) -> None:
            digest.update(block)
            out.write(block)

        # Hash and write block n on a second thread while block n+1 is read (both release
        # the GIL): at most two blocks in memory.
        pending: Future[None] | None = None
        try:
            with ThreadPoolExecutor(1) as pool, self._open(url, {"User-Agent": "modelpack-registry (upstream proxy)"}) as resp:  # fmt: skip
                declared = _int(resp.headers.get("Content-Length"))
                if declared is not None and declared > max_size:
                    raise UpstreamError(f"{url} is {declared} bytes, over the {max_size} cap")
                if declared is not None:
                    deadline = started + self.limits.page_time + declared / self.limits.min_rate
                while block := resp.read(BLOCK):
                    size += len(block)
                    if size > max_size:
                        raise UpstreamError(f"{url} is over the {max_size} byte cap")
                    if time.monotonic() > deadline:
                        raise UpstreamError(f"{url} is too slow (timed out after {size} bytes)")
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(keep, block)
                if pending is not None:
                    pending.result()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise UpstreamError(f"the upstream answered HTTP {exc.code} for {url}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if disk_full(exc):
                raise  # our disk, not the upstream: the app answers 507
            reason = getattr(exc, "reason", None) or exc
            raise UpstreamError(f"{url} cannot be fetched: {reason}") from None
        return digest.hexdigest(), size


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _read_capped(resp: Any, cap: int, deadline: float, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while block := resp.read(BLOCK):
        size += len(block)
        if size > cap:
            raise UpstreamError(f"the upstream {what} is over {cap} bytes")
        if time.monotonic() > deadline:
            raise UpstreamError(f"the upstream {what} took too long")
        chunks.append(block)
    return b"".join(chunks)


def _link(filename: str, url: str, sha256: object, **extra: Any) -> Link | None:
    """A kept link, or None if it cannot be served safely."""
    if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
        return None
    if not safe_filename(filename) or urlsplit(url).scheme not in ("http", "https"):
        return None
    return Link(filename, url.split("#", 1)[0], sha256.lower(), **extra)


def _core_hash(value: object) -> str | None:
    """A PEP 658/714 value (dict of hashes, "sha256=<hex>", True) as a sha256 or None.

    Metadata offered without a sha256 is not re-offered: it could not be checked.
    """
    if isinstance(value, dict):
        value = value.get("sha256")
    elif isinstance(value, str) and value.startswith("sha256="):
        value = value[len("sha256=") :]
    if isinstance(value, str) and _SHA256.match(value.lower()):
        return value.lower()
    return None


def _parse_json(body: bytes, base: str) -> Fetched:
    try:
        doc: Any = json.loads(body)
        files = doc["files"]
        assert isinstance(files, list)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise UpstreamError(f"the upstream sent an invalid PEP 691 page: {exc}") from None
    links: list[Link] = []
    dropped = 0
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            dropped += 1
            continue
        yanked = entry.get("yanked", False)
        requires = entry.get("requires-python")
        link = _link(
            str(entry.get("filename", "")),
            urljoin(base, entry["url"]),
            (entry.get("hashes") or {}).get("sha256"),
            requires_python=requires if isinstance(requires, str) and requires else None,
            yanked=yanked if isinstance(yanked, (str, bool)) else bool(yanked),
            core_metadata=_core_hash(entry.get("core-metadata", entry.get("dist-info-metadata"))),
            size=entry.get("size") if isinstance(entry.get("size"), int) else None,
            upload_time=entry.get("upload-time") if isinstance(entry.get("upload-time"), str) else None,
        )  # fmt: skip
        if link is None:
            dropped += 1
        else:
            links.append(link)
    raw_versions = doc.get("versions")
    versions = tuple(str(v) for v in raw_versions) if isinstance(raw_versions, list) else ()
    return Fetched(200, tuple(links), versions, dropped=dropped)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))


def _parse_html(body: bytes, base: str) -> Fetched:
    parser = _Anchors()
    try:
        parser.feed(body.decode("utf-8", "replace"))
        parser.close()
    except Exception as exc:  # noqa: BLE001 - HTMLParser raises assorted errors
        raise UpstreamError(f"the upstream sent an unreadable HTML page: {exc}") from None
    links: list[Link] = []
    dropped = 0
    for attrs in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url = urljoin(base, href)
        fragment = urlsplit(url).fragment
        sha = fragment[len("sha256=") :] if fragment.startswith("sha256=") else None
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        yanked: str | bool = False
        if "data-yanked" in attrs:
            yanked = attrs["data-yanked"] or True
        core = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        link = _link(filename, url, sha, requires_python=attrs.get("data-requires-python") or None,
                     yanked=yanked, core_metadata=_core_hash(core))  # fmt: skip
        if link is None:
            dropped += 1
        else:
            links.append(link)
    return Fetched(200, tuple(links), dropped=dropped)
