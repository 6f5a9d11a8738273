"""An upstream project page as the registry re-serves it (PEP 503 HTML or PEP 691 JSON).

The same shape as the private pages (:mod:`modelpack_registry.web.simple`): hashes,
``requires-python``, PEP 592 yank, PEP 658/714 core metadata (only when the upstream gave
its sha256, so it can be checked), PEP 700 ``size``/``upload-time``/``versions`` where
known. Every file URL is rewritten to go through the registry, relative to the page::

    <root>upstream/files/<project>/<sha256>/<filename>[.metadata]

where ``<root>`` leads from the page back to the registry's root (``../../`` from
``/simple/<project>/``), so the registry works behind any prefix or host.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from packaging.utils import parse_sdist_filename, parse_wheel_filename

from modelpack_registry.upstream.client import Link
from modelpack_registry.web.simple import Anchor, html_page

__all__ = ["FILES_ROUTE", "file_url", "render_page", "versions_of"]

API_VERSION = "1.1"
JSON = "application/vnd.pypi.simple.v1+json"
FILES_ROUTE = "/upstream/files/"


def file_url(root: str, project: str, link: Link) -> str:
    """The registry URL of ``link``, relative to a page ``root`` levels down."""
    return f"{root}upstream/files/{quote(project)}/{link.sha256}/{quote(link.filename)}"


def versions_of(links: Sequence[Link]) -> list[str]:
    """Distinct versions named by the file names, in page order."""
    seen: dict[str, None] = {}
    for link in links:
        try:
            if link.filename.endswith(".whl"):
                version = parse_wheel_filename(link.filename)[1]
            else:
                version = parse_sdist_filename(link.filename)[1]
        except ValueError:
            continue
        seen.setdefault(str(version), None)
    return list(seen)


def render_page(project: str, links: Sequence[Link], versions: Sequence[str], media: str,
                root: str) -> bytes:  # fmt: skip
    """The page of ``project`` in ``media`` (JSON, or HTML for anything else)."""
    if media == JSON:
        # PEP 700 (1.1) makes "size" mandatory; an HTML upstream does not give it.
        known = all(link.size is not None for link in links)
        doc = {
            "meta": {"api-version": API_VERSION if known else "1.0"},
            "name": project,
            "versions": list(versions) or versions_of(links),
            "files": [_json_file(project, link, root) for link in links],
        }
        return json.dumps(doc).encode()
    return html_page(
        project,
        (
            Anchor(
                file_url(root, project, link),
                link.filename,
                link.sha256,
                link.requires_python,
                link.core_metadata,
                None
                if link.yanked is False
                else (link.yanked if isinstance(link.yanked, str) else ""),
            )
            for link in links
        ),
    )


def _json_file(project: str, link: Link, root: str) -> dict[str, Any]:
    core: dict[str, str] | bool = {"sha256": link.core_metadata} if link.core_metadata else False
    entry: dict[str, Any] = {
        "filename": link.filename,
        "url": file_url(root, project, link),
        "hashes": {"sha256": link.sha256},
        "core-metadata": core,
        "dist-info-metadata": core,
        "yanked": link.yanked,
    }
    if link.requires_python:
        entry["requires-python"] = link.requires_python
    if link.size is not None:
        entry["size"] = link.size
    if link.upload_time is not None:
        entry["upload-time"] = link.upload_time
    return entry
