"""The WSGI application: our dispatcher in front, pypiserver's Bottle app behind.

Endpoints (all under the WSGI ``SCRIPT_NAME``)::

    GET  /[?q=text]             catalog page (HTML, filtered server-side) catalog.py
    GET  /models/<name>/        a model's page (301 to the normalized name)
    GET|PUT|DELETE /api/v1/...  JSON API: models, stages, yank, openapi.json api.py
    GET  /stages/<stage>/simple/[<project>/]   the index narrowed to each model's
                                version in that stage (PEP 503/691)      simple.py
    POST /                      :action=file_upload (twine); writes need credentials
                                when --htpasswd is given, and the uploader must be
                                allowed to publish that name  upload.py, receive.py,
                                                                    access.py, linger.py
    GET  /simple/               project list, PEP 503 HTML / PEP 691 JSON simple.py
    GET  /simple/<project>/     files of a project (301 to the normalized name)
    GET  /packages/<file>       a distribution (Range, ETag, 304)         files.py
    GET  /packages/<file>.metadata  its core metadata (PEP 658)
    GET  /upstream/files/<project>/<sha256>/<file>[.metadata]   with --upstream: a file
                                of a non-private project, fetched, checked and cached
                                under DATA/mirror               upstream/web.py
    GET  /health                {"status": "ok", "upstream": null | {...}}, 503 if the
                                data folder is unreadable
    GET  /metrics               what the registry holds, Prometheus text      metrics.py
    GET  anything else          pypiserver's legacy routes (``/favicon.ico``,
                                ``/<project>/`` redirect, ``/<project>/json``)

Why a dispatcher rather than overriding Bottle routes: every path we own is matched
here before pypiserver sees the request, so by construction pypiserver never handles a
write (its upload and remove handlers write in place and overwrite) or a ``/simple/``
or ``/packages/`` read (which walk the folder and re-hash files); only GET/HEAD of
paths we do not own reach it. It also keeps Bottle's request object away from the
upload body (Bottle buffers bodies; we stream ``wsgi.input`` ourselves), and the hot
index paths skip Bottle's per-request overhead. pypiserver runs with
``disable_fallback=True``: unknown names are never redirected to the public index.

Access (:mod:`modelpack_registry.access.policy`) is checked here too: with ``--protect-reads``
every GET/HEAD but ``/health`` needs valid credentials before anything is dispatched
(pypiserver's routes included), and an upload publishes through a data folder that
carries the uploader, so :meth:`DataDir.publish` decides ownership under its lock.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, quote

from packaging.utils import canonicalize_name

from modelpack_registry.access.auth import Htpasswd
from modelpack_registry.access.policy import Access
from modelpack_registry.access.reserved import is_private, private_names
from modelpack_registry.errors import (
    HTTPFailure,
    MethodNotAllowed,
    NotFound,
    StorageError,
    disk_full,
    full_disk_error,
)
from modelpack_registry.index import Index, Snapshot, make_deriver
from modelpack_registry.metrics import CONTENT_TYPE as METRICS_TYPE
from modelpack_registry.metrics import render_metrics
from modelpack_registry.stages import STAGE_RE
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import keys
from modelpack_registry.upstream import Upstream
from modelpack_registry.upstream.web import (
    first_upload_warning,
    metrics_lines,
    serve_page,
    serve_upstream_file,
)
from modelpack_registry.web.api import PREFIX, handle_api, json_error
from modelpack_registry.web.catalog import CSP, render_catalog, render_model
from modelpack_registry.web.files import REDIRECT_EXPIRES, Response, serve_file
from modelpack_registry.web.linger import close_after
from modelpack_registry.web.simple import (
    content_type,
    negotiate,
    render_project,
    render_root,
    stage_view,
)
from modelpack_registry.web.upload import UploadLimits, handle_upload

__all__ = ["RegistryApp", "legacy_app"]

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def legacy_app(data: DataDir) -> WSGIApp | None:
    """pypiserver's Bottle app over ``DATA/packages``, for the routes we do not own;
    None when the data is not in a local folder (a bucket)."""
    packages = data.store.local_path(keys.PACKAGES)
    if packages is None:
        return None
    logging.getLogger("passlib").setLevel(logging.CRITICAL)
    try:
        import passlib.apache  # noqa: F401
    except ImportError:
        pass
    except ValueError:
        # passlib 1.7.4 (unmaintained) crashes at import with bcrypt >= 5; pypiserver
        # imports it unconditionally. We check passwords with bcrypt ourselves, so make
        # the import fail the way pypiserver tolerates.
        sys.modules["passlib.apache"] = None  # type: ignore[assignment]
    import pypiserver

    # password_file "." tells pypiserver "no authentication": it never handles a write here.
    app: WSGIApp = pypiserver.app(
        roots=[packages],
        disable_fallback=True,
        authenticate=[],
        password_file=".",  # noqa: S106
    )
    return app


def _text(status: str, message: str, extra: list[tuple[str, str]] | None = None) -> Response:
    body = (message.rstrip("\n") + "\n").encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    return status, headers + (extra or []), [body]


def _status_line(exc: HTTPFailure) -> str:
    """twine shows only the reason phrase of a failed upload: put the message there."""
    text = " ".join(exc.message.split()).encode("ascii", "replace").decode()
    return f"{exc.status} {exc.reason}: {text[:300]}"


def _html(body: bytes) -> Response:
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
               ("Content-Security-Policy", CSP), ("Cache-Control", "no-cache")]  # fmt: skip
    return "200 OK", headers, [body]


def _base_url(environ: dict[str, Any]) -> str:
    """The registry's absolute URL as the client reached it (for install lines)."""
    host = environ.get("HTTP_HOST") or (
        f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    )
    scheme = environ.get("HTTP_X_FORWARDED_PROTO") or environ.get("wsgi.url_scheme", "http")
    return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '')}"


_PRIVATE = ("X-Modelpack-Source", "private")


def _redirect(location: str) -> Response:
    return "301 Moved Permanently", [("Location", location), ("Content-Length", "0")], []


class RegistryApp:
    """The registry as a WSGI callable (one per worker process)."""

    def __init__(self, data: DataDir, *, htpasswd: Htpasswd | None = None,
                 limits: UploadLimits | None = None, legacy: WSGIApp | None = None,
                 access: Access | None = None, upstream: Upstream | None = None,
                 storage_redirect: bool = False, redirect_expires: int = REDIRECT_EXPIRES,
                 refresh_interval: float | None = None) -> None:  # fmt: skip
        """``redirect_expires``: seconds a download redirect's URL is valid;
        ``refresh_interval``: seconds between checks for other processes' changes
        (None: the store's default, :func:`~modelpack_registry.index.default_interval`)."""
        self.data = data
        self.storage_redirect = storage_redirect
        self.redirect_expires = redirect_expires
        self.upstream = upstream
        self.access = access or Access(data, htpasswd)
        self.limits = limits or UploadLimits()
        self.index = Index(data, make_deriver(data), refresh_interval)
        self.legacy = legacy

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            result = self.dispatch(environ, method)
            if result is None:
                if self.legacy is None:
                    raise NotFound("not found")
                return self.legacy(environ, start_response)
        except HTTPFailure as exc:
            extra = list(exc.headers)
            if environ.get("PATH_INFO", "").startswith(PREFIX + "/"):
                result = json_error(exc)
            else:
                result = _text(_status_line(exc), exc.message, extra)
            if method not in ("GET", "HEAD"):
                result[1].append(("Connection", "close"))  # the body may not have been read
        except Exception as exc:
            if disk_full(exc):  # e.g. a state/ file (stage, owners, token) on a full disk
                full = full_disk_error(exc)
                log.error("%s %s: %s", method, environ.get("PATH_INFO"), full.message)
                api = environ.get("PATH_INFO", "").startswith(PREFIX + "/")
                result = json_error(full) if api else _text(_status_line(full), full.message)
            else:
                log.exception("internal error on %s %s", method, environ.get("PATH_INFO"))
                result = _text(
                    "500 Internal Server Error", "internal server error (see server log)"
                )
        status, headers, body = result
        if method not in ("GET", "HEAD") and not status.startswith("2"):
            # A refused write may leave most of its body unsent: close without losing
            # the answer (linger.py).
            body = close_after(environ, start_response, body)
        start_response(status, headers)
        if method == "HEAD" and isinstance(body, list):
            return []
        return body

    def dispatch(self, environ: dict[str, Any], method: str) -> Response | None:
        """Answer a request we own, or None to hand it to pypiserver.

        :raises HTTPFailure: for every answer that is not a success.
        """
        path = environ.get("PATH_INFO", "") or "/"
        script = environ.get("SCRIPT_NAME", "")
        if method in ("GET", "HEAD") and path != "/health":
            self.access.check_read(environ)
            if script and not environ.get("PATH_INFO"):
                # ``/prefix`` is the catalog without its slash, where its relative links
                # would resolve outside the prefix.
                query = environ.get("QUERY_STRING", "")
                return _redirect(f"{script}/" + (f"?{query}" if query else ""))
        if path.startswith(PREFIX + "/"):
            return handle_api(environ, method, path, self.index, self.access)
        if method not in ("GET", "HEAD"):
            who = self.access.authenticate(environ, "to upload")
            if path == "/" and method == "POST":
                data = self.access.upload_data(who)
                before = self._private_names()
                message, name = handle_upload(environ, data, self.index, self.limits, who)
                return _text("200 OK", message, self._first_upload(name, before))
            raise MethodNotAllowed(
                f"{method} {path} is not supported; upload with POST / (twine upload)",
                [("Allow", "GET, HEAD" + (", POST" if path == "/" else ""))],
            )
        if path == "/health":
            return self._health()
        if path == "/metrics":
            body = render_metrics(self.data, self.index.snapshot())
            if self.upstream is not None:
                body += ("\n".join(metrics_lines(self.upstream)) + "\n").encode()
            headers = [("Content-Type", METRICS_TYPE), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache")]  # fmt: skip
            return "200 OK", headers, [body]
        if path == "/":
            params = parse_qs(environ.get("QUERY_STRING", ""))
            chosen = {k: params.get(k, [None])[0] for k in ("task", "framework", "tag", "sort")}
            snap = self.index.snapshot()
            query = params.get("q", [None])[0]
            return _html(render_catalog(snap, query, script, _base_url(environ), chosen))
        if path == "/models" or path.startswith("/models/"):
            return self._model_page(environ, path)
        if path == "/simple" or path.startswith("/simple/"):
            return self._simple(environ, path)
        if path.startswith("/stages/"):
            stage, _, rest = path[len("/stages/") :].partition("/")
            if not STAGE_RE.match(stage) or not (rest == "simple" or rest.startswith("simple/")):
                raise NotFound("not found; a stage index is at /stages/<stage>/simple/")
            return self._simple(environ, "/" + rest, stage)
        if path.startswith("/upstream/") and self.upstream is not None:
            snap = self.index.snapshot()
            return serve_upstream_file(environ, self.upstream, self.data, snap, path)
        if path == "/packages" or path.startswith("/packages/"):
            name = path[len("/packages/") :]
            if not name or "/" in name or "\\" in name or "\x00" in name or name[0] == ".":
                raise NotFound("not found")
            snap = self.index.snapshot()
            return serve_file(environ, snap, name, self.data, self.storage_redirect,
                              self.redirect_expires)  # fmt: skip
        return None

    def _health(self) -> Response:
        try:
            next(self.data.store.iter_keys(keys.PACKAGES), None)
        except (StorageError, OSError) as exc:
            body = json.dumps(
                {"status": "error", "detail": str(getattr(exc, "strerror", None) or exc)}
            )
            return (
                "503 Service Unavailable",
                [("Content-Type", "application/json")],
                [body.encode()],
            )
        upstream = self.upstream.status.as_dict() if self.upstream is not None else None
        doc = json.dumps({"status": "ok", "upstream": upstream}).encode()
        return "200 OK", [("Content-Type", "application/json")], [doc]

    def _private_names(self) -> frozenset[str]:
        if self.upstream is None:
            return frozenset()
        return private_names(self.data, self.index.snapshot())

    def _first_upload(self, name: str, before: frozenset[str]) -> list[tuple[str, str]]:
        """``X-Modelpack-Warning`` when a name first published here exists upstream."""
        if self.upstream is None or name in before:
            return []
        warning = first_upload_warning(self.upstream, name)
        if warning is None:
            return []
        log.warning("%s", warning)
        return [("X-Modelpack-Warning", warning.encode("ascii", "replace").decode())]

    def _page(self, snap: Snapshot, key: object, render: Callable[..., bytes], ctype: str,
              *args: Any) -> Response:  # fmt: skip
        body = snap.cached(key, lambda: render(snap, *args))
        assert isinstance(body, bytes)
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))),
                   ("Vary", "Accept"), ("Cache-Control", "max-age=0, must-revalidate")]  # fmt: skip
        if ctype.startswith("text/html"):
            headers.append(("Content-Security-Policy", CSP))
        return "200 OK", headers, [body]

    def _model_page(self, environ: dict[str, Any], path: str) -> Response:
        script = environ.get("SCRIPT_NAME", "")
        raw = path[len("/models/") :].removesuffix("/")
        if not raw or "/" in raw:
            return _redirect(f"{script}/")
        snap = self.index.snapshot()
        name = canonicalize_name(raw)
        if raw != name or not path.endswith("/"):
            return _redirect(f"{script}/models/{quote(name)}/")
        if name not in snap.projects:
            raise NotFound(
                f"no model named {name!r} in this registry; `modelpack list` or the catalog "
                f"at {script}/ shows them"
            )
        upstream = self.upstream is not None
        return _html(render_model(snap, self.data, name, _base_url(environ), script, upstream))

    def _simple(self, environ: dict[str, Any], path: str, stage: str | None = None) -> Response:
        script = environ.get("SCRIPT_NAME", "")
        query = environ.get("QUERY_STRING", "")
        suffix = f"?{query}" if query else ""
        rest = path[len("/simple") :]
        mount = f"/stages/{stage}/simple" if stage else "/simple"
        if rest == "":
            return _redirect(f"{script}{mount}/{suffix}")
        fmt = parse_qs(query).get("format", [None])[0]
        media = negotiate(environ.get("HTTP_ACCEPT"), fmt)
        if media is None:
            return _text(
                "406 Not Acceptable",
                "supported: application/vnd.pypi.simple.v1+json, "
                "application/vnd.pypi.simple.v1+html, text/html",
                [("Vary", "Accept")],  # a cache must not answer other Accepts with it
            )
        snap = full = self.index.snapshot()
        packages = "../../packages/"
        if stage is not None:
            view = snap.cached(("stage-view", stage), lambda: stage_view(snap, stage))
            assert isinstance(view, Snapshot)
            snap, packages = view, "../../../../packages/"
        if rest == "/":
            return self._page(snap, ("root", media), render_root, content_type(media), media)
        project = rest[1:].removesuffix("/")
        if not project or "/" in project:
            raise NotFound("not found")
        canonical = canonicalize_name(project)
        if project != canonical or not rest.endswith("/"):
            return _redirect(f"{script}{mount}/{quote(canonical)}/{suffix}")
        if self.upstream is not None and canonical not in snap.projects:
            if not is_private(self.data, full, canonical):
                root = "../../../../" if stage else "../../"
                return serve_page(self.upstream, canonical, media, content_type(media), root)
        if canonical not in snap.projects:
            where = f"stage {stage!r}" if stage else "this registry"
            raise NotFound(f"no project named {canonical!r} in {where}", [_PRIVATE])
        status, headers, body = self._page(
            snap,
            ("project", canonical, media),
            render_project,
            content_type(media),
            canonical,
            media,
            packages,
        )
        return status, [*headers, _PRIVATE], body
