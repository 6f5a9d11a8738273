"""The catalog page at ``GET /``: every model with its versions, for people.

Plain HTML, no JavaScript, every value HTML-escaped; rendered once per index snapshot.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from packaging.version import InvalidVersion, Version

from modelpack_registry.index import Snapshot

__all__ = ["latest_version", "render_catalog"]

_STYLE = (
    "body{font-family:sans-serif;margin:2em auto;max-width:60em;padding:0 1em}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd}"
)


def latest_version(versions: list[str], yanked: set[str] | None = None) -> str | None:
    """The newest final release, else the newest version at all (ignoring ``yanked``)."""
    candidates = [v for v in versions if v not in (yanked or set())] or versions
    finals = []
    for v in candidates:
        try:
            if not Version(v).is_prerelease:
                finals.append(v)
        except InvalidVersion:
            continue
    pool = finals or candidates
    return pool[-1] if pool else None


def render_catalog(snap: Snapshot) -> bytes:
    """The catalog page of a snapshot."""
    esc = html.escape
    rows = []
    for name, records in snap.projects.items():
        versions = snap.versions(name)
        fully_yanked = {
            v for v in versions if all(r.filename in snap.yanked for r in records if r.version == v)
        }
        latest = latest_version(versions, fully_yanked) or ""
        summary = next((r.summary for r in reversed(records) if r.version == latest), None)
        rows.append(
            "<tr>"
            f'<td><a href="/simple/{quote(name)}/">{esc(name)}</a></td>'
            f"<td>{esc(latest)}</td>"
            f"<td>{esc(', '.join(reversed(versions)))}</td>"
            f"<td>{esc(summary or '')}</td>"
            "</tr>"
        )
    body = (
        "<table><thead><tr><th>Model</th><th>Latest</th><th>Versions</th>"
        "<th>Summary</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
        if rows
        else "<p>No models published yet. Publish one with <code>modelpack publish</code>.</p>"
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>modelpack registry</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>Models</h1>\n<p>{len(snap.projects)} models. Install one with "
        "<code>pip install --index-url &lt;this registry&gt;/simple/ NAME</code>.</p>\n"
        f"{body}\n</body></html>\n"
    )
    return page.encode()
