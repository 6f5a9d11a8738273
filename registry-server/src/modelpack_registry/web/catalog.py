"""The pages for people: the catalog at ``GET /`` and a page per model at ``/models/<name>/``.

Plain HTML that needs no JavaScript: the filter is a GET form (``/?q=text``) answered on
the server from the per-snapshot model list (:mod:`modelpack_registry.web.models`). Every
value is HTML-escaped; a model card (the README from METADATA) is rendered once per
file, outside the request, by markdown-it-py with raw HTML disabled, whose link
validation also drops ``javascript:``/``vbscript:``/``data:`` URLs (see
:mod:`modelpack_registry.cards`). The app sends :data:`CSP` with each page, so even a
missed hole could not run a script. Links are relative, so the pages work under any
prefix.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from modelpack_registry.cards import card_for_view
from modelpack_registry.index import Snapshot
from modelpack_registry.storage import DataDir, Record
from modelpack_registry.web.metrics_view import (
    catalog_controls,
    lineage_facts,
    metric_cell,
    metrics_section,
)
from modelpack_registry.web.models import (
    ModelSummary,
    describe_model,
    filter_models,
    latest_version,
    parse_sort,
    select_models,
    summaries,
    version_records,
)

__all__ = ["CSP", "latest_version", "render_catalog", "render_model"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src * data:"
_STYLE = (
    "body{font-family:sans-serif;margin:2em auto;max-width:64em;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top}"
    "code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow-x:auto}"
    ".tag{display:inline-block;background:#e8eef8;border-radius:3px;padding:0 .4em;"
    "margin:0 .2em .2em 0;font-size:.9em}.yanked{color:#a00;font-weight:bold}"
    ".card{border:1px solid #ddd;padding:0 1em;margin:1em 0}.muted{color:#666}"
    ".warning{border-left:4px solid #c80;padding-left:.6em}"
    "input[type=search]{width:24em;padding:.3em}"
    "td.best{font-weight:bold}figure.chart{display:inline-block;margin:.5em 1em .5em 0}"
)


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"{body}\n</body></html>\n"
    ).encode()


def human_size(size: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _tags(m: ModelSummary) -> str:
    parts = [f'<span class="tag">{_esc(t)}</span>' for t in m.tags]
    return "".join(parts)


def _row(m: ModelSummary, script: str) -> str:
    kind = " / ".join(_esc(v) for v in (m.task, m.framework) if v)
    stages = ", ".join(f"{_esc(s)}: {_esc(v)}" for s, v in m.stages.items())
    yanked = ' <span class="yanked">yanked</span>' if m.yanked else ""
    return (
        f'<tr class="model" data-name="{_esc(m.name)}">'
        f'<td><a href="models/{quote(m.name)}/">{_esc(m.name)}</a> '
        f'<a class="muted" href="{_esc(script)}/simple/{quote(m.name)}/" '
        f'title="the files in the package index">files</a></td>'
        f"<td>{_esc(m.version)}{yanked}</td>"
        f"<td>{_esc(m.summary)}</td><td>{kind}</td><td>{_tags(m)}</td>"
        f"<td>{stages}</td><td>{_esc(human_size(m.size))}</td>"
        f"<td>{_esc((m.upload_time or '')[:10])}</td></tr>"
    )


def _who(user: str | None) -> str:
    """A "By" cell: the user, or that nobody was recorded."""
    if user:
        return _esc(user)
    return (
        '<span class="muted" title="no user was recorded: the registry took anonymous '
        'writes (no --htpasswd), or the file was placed in its folder by hand">anonymous</span>'
    )


def render_catalog(
    snap: Snapshot, query: str | None, script: str = "", base: str = "",
    chosen: dict[str, str | None] | None = None,
) -> bytes:  # fmt: skip
    """The catalog page, filtered by ``query`` and the exact ``task``, ``framework`` and
    ``tag`` of *chosen*, sorted by its ``sort`` (``metric:<name>``: best first), rows
    rendered once per snapshot; ``base`` is the registry's absolute URL, as the client
    reached it."""
    rows = snap.cached(
        ("catalog-rows", script), lambda: {m.name: _row(m, script) for m in summaries(snap)}
    )
    assert isinstance(rows, dict)
    chosen = {k: v for k, v in (chosen or {}).items() if v}
    everything = summaries(snap)
    problem = ""
    try:
        metric = parse_sort(chosen.get("sort"))
    except ValueError as exc:
        metric, problem = None, f'<p class="warning">{_esc(exc)}</p>'
    shown = select_models(filter_models(everything, query), chosen.get("task"),
                          chosen.get("framework"), chosen.get("tag"), metric)  # fmt: skip
    q = (query or "").strip()
    filtered = bool(q or set(chosen) - {"sort"})
    form = (
        '<form method="get" action="" role="search">'
        f'<input type="search" name="q" value="{_esc(q)}" '
        'placeholder="Filter by name, task, framework, tag..." aria-label="Filter models"> '
        + catalog_controls(everything, chosen)
        + '<button type="submit">Filter</button>'
        + (' <a href="./">Clear</a>' if q or chosen else "")
        + "</form>"
        + problem
    )
    count = (
        f"<p>{len(shown)} of {len(everything)} models match"
        + (f" <code>{_esc(q)}</code>" if q else " the filters")
        + ".</p>"
        if filtered
        else f"<p>{len(everything)} models. Install one with "
        f"<code>pip install --index-url {_esc(base)}/simple/ NAME</code>.</p>"
    )
    if shown:
        table = (
            '<table id="models"><thead><tr><th>Model</th><th>Latest</th><th>Summary</th>'
            "<th>Task / framework</th><th>Tags</th><th>Stages</th><th>Size</th>"
            "<th>Uploaded</th>"
            + (f"<th>{_esc(metric)}</th>" if metric else "")
            + "</tr></thead><tbody>\n"
            + "\n".join(
                rows[m.name][: -len("</tr>")] + metric_cell(m, metric) + "</tr>"
                if metric
                else rows[m.name]
                for m in shown
            )
            + "\n</tbody></table>"
        )
    elif everything:
        table = "<p>No model matches this filter.</p>"
    else:
        table = (
            "<p>No models published yet. Publish one with "
            f"<code>modelpack publish --registry {_esc(base)}</code>.</p>"
        )
    return _page("modelpack registry", f"<h1>Models</h1>\n{form}\n{count}\n{table}")


def _card(snap: Snapshot, data: DataDir, record: Record) -> str:
    """The stored card of ``record``, cached per snapshot once it exists."""
    key = ("card", record.filename)
    cached = snap.cache.get(key)
    if isinstance(cached, str):
        return cached
    card, final = card_for_view(data, record)
    if final:
        snap.cached(key, lambda: card)
    return card


def _public_deps(requires_dist: list[str]) -> list[str]:
    """The names of the dependencies pip installs by default (extras left out)."""
    from packaging.requirements import InvalidRequirement, Requirement

    names: list[str] = []
    for line in requires_dist:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or "extra" not in str(req.marker):
            names.append(req.name)
    return names


def _install_lines(
    name: str, version: str, base: str, stages: dict[str, Any], deps: list[str], upstream: bool
) -> str:
    """Commands with the registry as the only index, and what to do when they cannot work.

    Without an upstream (``serve --upstream``), pip asked this registry alone cannot find
    the model's public dependencies; the page says so instead of printing a command that
    fails, and never suggests ``--extra-index-url`` (any index could then answer for the
    model's name).
    """
    simple = f"{base}/simple/"
    lines = [
        f"pip install {name}=={version} --index-url {simple}",
        f"uv pip install {name}=={version} --index-url {simple}",
    ]
    for stage in stages:
        lines.append(f"pip install {name} --index-url {base}/stages/{stage}/simple/")
    html = "".join(f"<pre><code>{_esc(line)}</code></pre>" for line in lines)
    if deps and not upstream:
        html += (
            '<p class="warning">This registry has no upstream index, so these commands '
            f"cannot find the model's public dependencies ({_esc(', '.join(deps))}). Ask "
            "the platform team to serve it with <code>modelpack-registry serve --upstream "
            "URL</code>. Until then, take the model alone from here and its dependencies "
            "from your usual index:</p>"
            f"<pre><code>{_esc(f'pip install --no-deps {name}=={version} --index-url {simple}')}"
            f"</code></pre><pre><code>{_esc(f'pip install {name}=={version}')}</code></pre>"
            "<p>Never add this registry with <code>--extra-index-url</code>: then any index "
            "may answer for the model's name.</p>"
        )
    return html


def _signature_table(manifest: dict[str, Any] | None) -> str:
    """The inputs and outputs ``modelpack build`` inferred (what ``modelpack serve`` checks)."""
    sig = (manifest or {}).get("signature")
    if not isinstance(sig, dict):
        return '<p class="muted">No signature: <code>modelpack serve</code> will not check requests.</p>'
    rows = "".join(
        f"<tr><td>{role}</td><td>{_esc(f.get('name'))}</td><td>{_esc(f.get('type'))}</td>"
        f"<td><code>{_esc(json.dumps(f.get('shape')))}</code></td></tr>"
        for role in ("input", "output")
        for f in sig.get(role + "s") or []
        if isinstance(f, dict)
    )
    return (
        f"<p>Layout: {_esc(sig.get('layout'))} (<code>-1</code>: any number of rows)</p>"
        "<table><tr><th></th><th>Name</th><th>Type</th><th>Shape</th></tr>" + rows + "</table>"
    )


def _manifest_table(manifest: dict[str, Any] | None, classifiers: tuple[str, ...]) -> str:
    rows = []
    for key, value in (manifest or {}).items():
        if key == "signature":
            continue  # its own section
        if key == "weights" and isinstance(value, list):
            shown = "<br>".join(
                f"{_esc(w.get('path'))} ({_esc(human_size(int(w.get('size') or 0)))}, "
                f"sha256 <code>{_esc(str(w.get('sha256', ''))[:16])}</code>…)"
                for w in value
                if isinstance(w, dict)
            )
        elif isinstance(value, (dict, list)):
            shown = f"<code>{_esc(json.dumps(value, sort_keys=True))}</code>"
        else:
            shown = _esc(value)
        rows.append(f"<tr><th>{_esc(key)}</th><td>{shown}</td></tr>")
    if classifiers:
        shown = "<br>".join(_esc(c) for c in classifiers)
        rows.append(f"<tr><th>classifiers</th><td>{shown}</td></tr>")
    if not rows:
        return '<p class="muted">No manifest (this wheel was not built by modelpack).</p>'
    return "<table>" + "".join(rows) + "</table>"


def render_model(
    snap: Snapshot, data: DataDir, name: str, base: str, script: str, upstream: bool = False
) -> bytes:
    """The page of one existing canonical model; ``base`` is the registry's absolute URL.

    ``upstream``: the registry proxies an upstream index, so one ``--index-url`` finds the
    model's public dependencies too.
    """
    detail = describe_model(snap, name, script)
    summary = next(m for m in summaries(snap) if m.name == name)
    latest = detail["latest"]
    records = version_records(snap, name, latest)
    main = next((r for r in records if r.filename.endswith(".whl")), records[0])
    card = _card(snap, data, main)
    parts = [
        '<p><a href="../../">← all models</a></p>',
        f"<h1>{_esc(name)} <small>{_esc(latest)}</small></h1>",
        f"<p>{_esc(detail['summary'])}</p>",
        f"<p>{_tags(summary)}</p>" if summary.tags else "",
    ]
    if summary.yanked:
        parts.append('<p class="yanked">Every version of this model is yanked.</p>')
    public = _public_deps(detail["requires_dist"])
    install = _install_lines(name, latest, base, detail["stages"], public, upstream)
    parts.append("<h2>Install</h2>" + install)
    if detail["stages"]:
        rows = "".join(
            f"<tr><td>{_esc(s)}</td><td>{_esc(e['version'])}</td>"
            f"<td>{_who(e['promoted_by'])}</td><td>{_esc(e['promoted_at'])}</td></tr>"
            for s, e in detail["stages"].items()
        )
        parts.append(
            "<h2>Stages</h2><table><tr><th>Stage</th><th>Version</th><th>Promoted by</th>"
            f"<th>At</th></tr>{rows}</table>"
        )
    parts.append(lineage_facts(detail))
    parts.append(metrics_section(detail["versions"]))
    parts.append(f'<h2>Model card</h2><div class="card">{card}</div>')
    vrows: list[str] = []
    for v in reversed(detail["versions"]):
        mark = ""
        if v["yanked"]:
            reason = f": {_esc(v['yanked_reason'])}" if v["yanked_reason"] else ""
            mark = f' <span class="yanked">yanked{reason}</span>'
        files = "<br>".join(
            f'<a href="../../packages/{quote(f["filename"])}">{_esc(f["filename"])}</a> '
            f'<span class="muted">{_esc(human_size(f["size"]))}</span>'
            for f in v["files"]
        )
        vrows.append(
            f'<tr class="version"><td>{_esc(v["version"])}{mark}</td>'
            f"<td>{_esc(v['upload_time'][:19].replace('T', ' '))}</td>"
            f"<td>{_who(v['uploaded_by'])}</td><td>{files}</td></tr>"
        )
    parts.append(
        "<h2>Versions</h2><table><tr><th>Version</th><th>Uploaded (UTC)</th><th>By</th>"
        "<th>Files</th></tr>" + "".join(vrows) + "</table>"
    )
    deps = detail["requires_dist"]
    parts.append(
        "<h2>Dependencies</h2>"
        + (
            "<ul>" + "".join(f"<li><code>{_esc(d)}</code></li>" for d in deps) + "</ul>"
            if deps
            else '<p class="muted">None declared.</p>'
        )
    )
    if main.requires_python:
        parts.append(f"<p>Requires Python <code>{_esc(main.requires_python)}</code></p>")
    parts.append("<h2>Signature</h2>" + _signature_table(detail["manifest"]))
    parts.append("<h2>Manifest</h2>" + _manifest_table(detail["manifest"], main.classifiers))
    if detail["history"]:
        hrows = [
            f"<tr><td>{_esc(h['at'])}</td><td>{_esc(h['stage'])}</td>"
            f"<td>{_esc(h['from'] or '—')} → {_esc(h['to'] or 'removed')}</td>"
            f"<td>{_who(h['by'])}</td></tr>"
            for h in reversed(detail["history"])
        ]
        parts.append(
            "<h2>Stage history</h2><table><tr><th>At</th><th>Stage</th><th>Change</th>"
            "<th>By</th></tr>" + "".join(hrows) + "</table>"
        )
    return _page(f"{name} {latest} · modelpack registry", "\n".join(p for p in parts if p))
