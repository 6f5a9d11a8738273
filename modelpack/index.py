"""Read a package index's simple API (PEP 503 HTML or PEP 691 JSON).

Works against any standard index, not only modelpack-registry: JSON when the index
offers it, else the HTML page with ``#sha256=`` fragments.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from packaging.utils import canonicalize_name

from modelpack.config import Credentials, missing_credentials, redact
from modelpack.errors import AuthenticationError, RegistryError, RegistryUnreachableError

if TYPE_CHECKING:
    import requests

__all__ = ["IndexClient", "IndexFile", "error_detail"]

ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
    "text/html;q=0.1"
)


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    yanked: str | bool = False


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []
        self._current: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._current = {**dict(attrs), "_text": ""}

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current["_text"] = (self._current["_text"] or "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            self.links.append(self._current)
            self._current = None


def error_detail(resp: requests.Response) -> str:
    """The ``{"error": ...}`` message of a modelpack-registry JSON answer, if any."""
    if "json" not in resp.headers.get("Content-Type", ""):
        return ""
    try:
        data = resp.json()
    except ValueError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


class IndexClient:
    """A small reader of one registry's simple index."""

    def __init__(self, registry: str, credentials: Credentials | None = None, timeout: float = 30):
        self.registry = registry.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self._session: requests.Session | None = None
        self._simple: str | None = None

    @property
    def simple(self) -> str:
        """The simple API's path under the registry: ``simple``, or ``+simple`` for a
        devpi index (whose ``simple/`` is a 404); asked once."""
        if self._simple is None:
            self._simple = "simple"
            if self._status("simple/") == 404 and self._status("+simple/") == 200:
                self._simple = "+simple"
        return self._simple

    def _status(self, path: str) -> int:
        """The status of GET *path*, without downloading the body (an index root can be
        megabytes on a large index)."""
        with self.request("GET", path, headers={"Accept": ACCEPT}, stream=True) as resp:
            return int(resp.status_code)

    @property
    def simple_url(self) -> str:
        """The URL to give pip and uv as ``--index-url``."""
        return f"{self.registry}/{self.simple}/"

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
            if self.credentials:
                self._session.auth = (self.credentials.username, self.credentials.password)
        return self._session

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET *path* (relative to the registry); see :meth:`request`."""
        return self.request("GET", path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send *method* to *path* (relative to the registry), mapping failures to our errors.

        :raises RegistryUnreachableError: nothing answers at the registry URL.
        :raises AuthenticationError: the registry wants (other) credentials.
        """
        import requests

        url = f"{self.registry}/{path.lstrip('/')}"
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise RegistryUnreachableError(
                f"cannot reach the registry at {redact(self.registry)}; start it "
                "(`modelpack-registry serve`) or point modelpack at it with --registry URL "
                "or MODELPACK_REGISTRY"
            ) from exc
        except requests.RequestException as exc:
            raise RegistryError(f"request to {redact(url)} failed: {exc}") from exc
        if resp.status_code in (401, 403) and not self.credentials:
            raise AuthenticationError(
                f"the registry at {redact(self.registry)} needs credentials (HTTP "
                f"{resp.status_code}): {missing_credentials(self.registry)}"
            )
        if resp.status_code in (401, 403):
            detail = error_detail(resp)
            raise AuthenticationError(
                f"the registry at {redact(self.registry)} refused the credentials "
                f"(HTTP {resp.status_code}{': ' + detail if detail else ''}); "
                + (
                    "check MODELPACK_USERNAME and MODELPACK_PASSWORD"
                    if resp.status_code == 401
                    else "check MODELPACK_USERNAME and MODELPACK_PASSWORD, or ask an owner "
                    "of the model for access"
                )
            )
        return resp

    def upstream(self) -> dict[str, Any] | None:
        """The upstream index the registry proxies (``/health``'s ``"upstream"``), or
        ``None``: no upstream, an older modelpack-registry, or a plain index.

        :raises RegistryUnreachableError: nothing answers at the registry URL.
        """
        resp = self.get("health", headers={"Accept": "application/json"})
        if resp.status_code != 200 or "json" not in resp.headers.get("Content-Type", ""):
            return None
        try:
            found = resp.json().get("upstream")
        except (ValueError, AttributeError):
            return None
        return found if isinstance(found, dict) else None

    def projects(self) -> list[str]:
        """The project names the index lists (PEP 691 JSON or PEP 503 HTML).

        :raises RegistryError: the index answered something that is not an index page.
        """
        resp = self.get(f"{self.simple}/", headers={"Accept": ACCEPT})
        if resp.status_code != 200:
            raise RegistryError(
                f"{redact(resp.url)} answered HTTP {resp.status_code}; is it a package index?"
            )
        if "json" in resp.headers.get("Content-Type", ""):
            return [str(p["name"]) for p in resp.json().get("projects", [])]
        parser = _Links()
        parser.feed(resp.text)
        return [str(link.get("_text") or "").strip() for link in parser.links]

    def project_files(self, name: str) -> list[IndexFile]:
        """Return the files the index lists for project *name* (empty if unknown).

        :raises RegistryError: the index answered something that is not an index page.
        """
        resp = self.get(f"{self.simple}/{canonicalize_name(name)}/", headers={"Accept": ACCEPT})
        if resp.status_code == 404:
            return []
        if resp.headers.get("X-Modelpack-Source") == "upstream":
            # The registry passes this name through from its upstream index (serve
            # --upstream): none of those files are the registry's own, so none of them
            # make a version "already published" here.
            return []
        if resp.status_code != 200:
            raise RegistryError(
                f"{redact(resp.url)} answered HTTP {resp.status_code}; is "
                f"{redact(self.registry)} a package index?"
            )
        ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if ctype == "application/vnd.pypi.simple.v1+json":
            data = resp.json()
            return [
                IndexFile(
                    filename=f["filename"],
                    url=urljoin(resp.url, f["url"]),
                    sha256=(f.get("hashes") or {}).get("sha256"),
                    yanked=f.get("yanked", False),
                )
                for f in data.get("files", [])
            ]
        parser = _Links()
        parser.feed(resp.text)
        files = []
        for link in parser.links:
            href = link.get("href") or ""
            url = urljoin(resp.url, href)
            frag = urlsplit(url).fragment
            sha = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
            filename = urlsplit(url).path.rsplit("/", 1)[-1] or (link.get("_text") or "")
            yanked: str | bool = False
            if "data-yanked" in link:
                yanked = link["data-yanked"] or True
            files.append(IndexFile(filename, url.split("#", 1)[0], sha, yanked))
        return files
