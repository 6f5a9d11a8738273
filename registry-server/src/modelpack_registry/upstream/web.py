"""The app's side of ``--upstream``: pages, files, the first-upload warning, health, metrics.

:class:`modelpack_registry.web.app.RegistryApp` calls these only for names that are not
private (see :mod:`modelpack_registry.access.reserved`) and only when an upstream is configured;
every answer for a project page carries ``X-Modelpack-Source: upstream`` (the private
pages carry ``private``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from packaging.utils import canonicalize_name

from modelpack_registry.access.reserved import is_private
from modelpack_registry.errors import BadGateway, NotFound
from modelpack_registry.index import Snapshot
from modelpack_registry.storage import DataDir
from modelpack_registry.upstream.render import FILES_ROUTE, render_page
from modelpack_registry.upstream.sources import Upstream
from modelpack_registry.web.files import Response, content_type, serve_path

__all__ = ["SOURCE", "first_upload_warning", "metrics_lines", "serve_page", "serve_upstream_file"]

SOURCE = "X-Modelpack-Source"


def serve_page(upstream: Upstream, name: str, media: str, ctype: str, root: str) -> Response:
    """The upstream's page of (non-private, canonical) ``name``.

    ``root`` leads from the page to the registry root (``../../`` for ``/simple/<name>/``).

    :raises NotFound: the upstream has no such project.
    :raises BadGateway: the upstream fails and nothing is cached.
    """
    try:
        page, stale = upstream.page(name)
    except BadGateway as exc:
        exc.headers.append((SOURCE, "upstream"))
        raise
    if page is None:
        raise NotFound(
            f"no project named {name!r} in this registry or its upstream index",
            [(SOURCE, "upstream")],
        )
    key = (media, root)
    body = page.rendered.get(key)
    if body is None:
        body = page.rendered.setdefault(
            key, render_page(name, page.links, page.versions, media, root)
        )
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Vary", "Accept"),
               ("Cache-Control", "max-age=0, must-revalidate"), (SOURCE, "upstream")]  # fmt: skip
    if stale:
        headers.append(("X-Modelpack-Stale", "upstream unreachable; this is the last copy fetched"))
    return "200 OK", headers, [body]


def serve_upstream_file(environ: dict[str, Any], upstream: Upstream, data: DataDir,
                        snap: Snapshot, path: str) -> Response:  # fmt: skip
    """``GET /upstream/files/<project>/<sha256>/<filename>[.metadata]``.

    The file is looked up on the project's upstream page (by sha256 and name) and served
    from ``DATA/mirror/files/<sha256[:2]>/<sha256>/<filename>``; a path is never built
    from the request except through those two validated parts.

    :raises NotFound: unknown file, a private project, or a malformed path.
    :raises BadGateway: see :meth:`Upstream.file`.
    """
    parts = path[len(FILES_ROUTE) :].split("/")
    if not path.startswith(FILES_ROUTE) or len(parts) != 3 or not all(parts):
        raise NotFound("not found; upstream files are at /upstream/files/<project>/<sha256>/<file>")
    project, sha256, filename = parts[0], parts[1], unquote(parts[2])
    if canonicalize_name(project) != project or is_private(data, snap, project):
        # A private name shadows the upstream completely, files included.
        raise NotFound(f"no upstream file {filename} for {project!r}")
    found, etag = upstream.file(project, sha256, filename)
    return serve_path(environ, found, etag, content_type(filename), filename)


def first_upload_warning(upstream: Upstream, name: str) -> str | None:
    """The warning for the first upload of ``name``, if the upstream has that name."""
    if not upstream.exists(name):
        return None
    return (
        f"{name} also exists on the upstream index {upstream.status.url}; from now on this "
        f"registry serves only its own {name} and never the upstream's. To claim a name "
        f"before its first upload, run `modelpack-registry reserve {name}` on the registry."
    )


def metrics_lines(upstream: Upstream | None) -> list[str]:
    """Prometheus lines on the upstream (this process's view) and the cache."""
    if upstream is None:
        return []
    status = upstream.status
    files, size = upstream.cache.usage()
    samples = [
        ("upstream_up", "gauge", "1 if the last request to the upstream succeeded (per process).",
         1 if status.ok else 0),
        ("upstream_last_success_timestamp_seconds", "gauge",
         "When the upstream last answered (per process; 0: not yet).", status.last_success or 0),
        ("upstream_errors_total", "counter", "Failed requests to the upstream (per process).",
         status.errors),
        ("mirror_files", "gauge", "Upstream files kept in DATA/mirror.", files),
        ("mirror_bytes", "gauge", "Total size of the upstream files kept in DATA/mirror.", size),
    ]  # fmt: skip
    out: list[str] = []
    for name, kind, text, value in samples:
        full = f"modelpack_registry_{name}"
        number = str(int(value)) if float(value).is_integer() else repr(float(value))
        out += [f"# HELP {full} {text}", f"# TYPE {full} {kind}", f"{full} {number}"]
    return out
