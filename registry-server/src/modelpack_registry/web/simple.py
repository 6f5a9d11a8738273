"""The simple repository API: PEP 503 HTML and PEP 691 JSON, chosen by ``Accept``.

Pages carry PEP 658/714 core metadata (``data-core-metadata`` plus the older
``data-dist-info-metadata``), PEP 592 yank, ``requires-python`` and PEP 700
(``upload-time``, ``size``, ``versions``; ``api-version`` 1.1). File URLs are relative
(``../../packages/<file>#sha256=<hex>``) so the registry works behind any prefix or host.

The same renderers serve the stage indexes (``/stages/<stage>/simple/``) from a
:class:`Snapshot` narrowed by :func:`stage_view` to the one version each model's stage
points at.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any, NamedTuple
from urllib.parse import quote

from modelpack_registry.index import Snapshot
from modelpack_registry.storage import Record

__all__ = ["JSON", "negotiate", "render_project", "render_root", "stage_view"]

API_VERSION = "1.1"
JSON = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
_MEDIA = {
    JSON: JSON,
    "application/vnd.pypi.simple.latest+json": JSON,
    HTML_V1: HTML_V1,
    "application/vnd.pypi.simple.latest+html": HTML_V1,
    TEXT_HTML: TEXT_HTML,
    "text/*": TEXT_HTML,
    "*/*": TEXT_HTML,
    "application/*": JSON,
}
_FORMAT_ALIASES = {"json": JSON, "html": TEXT_HTML}


def negotiate(accept: str | None, query_format: str | None = None) -> str | None:
    """The content type to answer with, or None if nothing acceptable is offered.

    ``?format=`` (a media type, or ``json``/``html``) wins over ``Accept``; no ``Accept``
    means HTML.
    """
    if query_format:
        fmt = query_format.lower().replace(" ", "+")  # an unencoded "+" arrives as " "
        fmt = _FORMAT_ALIASES.get(fmt, fmt)
        return _MEDIA.get(fmt)
    if not accept or not accept.strip():
        return TEXT_HTML
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media, q = parts[0].lower(), 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media not in _MEDIA or q <= 0:
            continue
        candidate = (q, -position, _MEDIA[media])
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def content_type(media: str) -> str:
    """The ``Content-Type`` header value for a negotiated media type."""
    return "text/html; charset=utf-8" if media == TEXT_HTML else media


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


PACKAGES = "../../packages/"  # from /simple/<project>/


def _file_url(record: Record, packages: str = PACKAGES) -> str:
    return f"{packages}{quote(record.filename)}"


def render_root(snap: Snapshot, media: str) -> bytes:
    """The project list (``/simple/``)."""
    if media == JSON:
        doc = {
            "meta": {"api-version": API_VERSION},
            "projects": [{"name": name} for name in snap.projects],
        }
        return json.dumps(doc).encode()
    lines = [
        "<!DOCTYPE html>",
        "<html><head>",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">',
        "<title>Simple index</title></head><body>",
    ]
    lines += [f'<a href="{quote(name)}/">{_esc(name)}</a><br>' for name in snap.projects]
    lines.append("</body></html>")
    return ("\n".join(lines) + "\n").encode()


def render_project(snap: Snapshot, project: str, media: str, packages: str = PACKAGES) -> bytes:
    """The file list of one (existing, canonical) project.

    ``packages`` is the relative URL of ``/packages/`` from the page (it differs for the
    stage indexes at ``/stages/<stage>/simple/<project>/``).
    """
    records = snap.projects[project]
    if media == JSON:
        doc = {
            "meta": {"api-version": API_VERSION},
            "name": project,
            "versions": snap.versions(project),
            "files": [_json_file(snap, r, packages) for r in records],
        }
        return json.dumps(doc).encode()
    return html_page(
        project,
        (
            Anchor(
                _file_url(record, packages),
                record.filename,
                record.sha256,
                record.requires_python,
                record.core_metadata_sha256,
                snap.yanked.get(record.filename),
            )
            for record in records
        ),
    )


class Anchor(NamedTuple):
    """One file link of a PEP 503 project page, whichever source it came from."""

    url: str
    filename: str
    sha256: str
    requires_python: str | None
    core_metadata_sha256: str | None
    yanked: str | None
    """The PEP 592 reason ("" for none given), or None when not yanked."""


def html_page(project: str, anchors: Iterable[Anchor]) -> bytes:
    """A PEP 503 project page (with PEP 592, 658/714 and ``requires-python`` attributes).

    The one HTML renderer for private pages and for upstream pages passed through
    (:mod:`modelpack_registry.upstream.render`), so both read the same to pip and uv.
    """
    lines = [
        "<!DOCTYPE html>",
        "<html><head>",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">',
        f"<title>Links for {_esc(project)}</title></head><body>",
        f"<h1>Links for {_esc(project)}</h1>",
    ]
    for a in anchors:
        attrs = [f'href="{_esc(a.url)}#sha256={a.sha256}"']
        if a.requires_python:
            attrs.append(f'data-requires-python="{_esc(a.requires_python)}"')
        if a.core_metadata_sha256:
            value = f"sha256={a.core_metadata_sha256}"
            attrs.append(f'data-core-metadata="{value}"')
            attrs.append(f'data-dist-info-metadata="{value}"')
        if a.yanked is not None:
            attrs.append(f'data-yanked="{_esc(a.yanked)}"')
        lines.append(f"<a {' '.join(attrs)}>{_esc(a.filename)}</a><br>")
    lines.append("</body></html>")
    return ("\n".join(lines) + "\n").encode()


def _json_file(snap: Snapshot, record: Record, packages: str) -> dict[str, Any]:
    core: dict[str, str] | bool = (
        {"sha256": record.core_metadata_sha256} if record.core_metadata_sha256 else False
    )
    yanked: str | bool = False
    if record.filename in snap.yanked:
        yanked = snap.yanked[record.filename] or True
    entry: dict[str, Any] = {
        "filename": record.filename,
        "url": _file_url(record, packages),
        "hashes": {"sha256": record.sha256},
        "core-metadata": core,
        "dist-info-metadata": core,
        "yanked": yanked,
        "size": record.size,
        "upload-time": record.upload_time,
    }
    if record.requires_python:
        entry["requires-python"] = record.requires_python
    return entry


def stage_view(snap: Snapshot, stage: str) -> Snapshot:
    """``snap`` with only the models that have ``stage``, each with only that version."""
    projects: dict[str, list[Record]] = {}
    for name, records in snap.projects.items():
        entry = snap.stages.get(name, {}).get("stages", {}).get(stage)
        if entry is None:
            continue
        chosen = [r for r in records if r.version == entry["version"]]
        if chosen:
            projects[name] = chosen
    files = {r.filename: r for recs in projects.values() for r in recs}
    yanked = {f: reason for f, reason in snap.yanked.items() if f in files}
    return Snapshot(snap.generation, files, projects, yanked, snap.stages)
