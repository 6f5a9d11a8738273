"""The model card's numbers on the pages: metrics side by side, charts, catalog controls.

The data come from :func:`modelpack_registry.web.models.card_json` (metrics, dataset and
lineage extracted from each wheel's ``modelpack.json`` at upload). The charts are inline
SVG drawn here, on the server: no script, so the catalog's CSP (``default-src 'none'``)
holds, and nothing is fetched. Every value is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from modelpack_registry.web.models import ModelSummary

__all__ = ["catalog_controls", "lineage_facts", "metric_cell", "metrics_section"]

MAX_COLUMNS = 12  # the newest versions shown side by side
MAX_CHARTS = 6
MAX_METRICS = 50
_W, _H, _PAD = 260, 90, 14


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: float) -> str:
    return f"{value:.6g}"


def _commit(lineage: dict[str, Any] | None) -> str:
    if not lineage or not isinstance(lineage.get("commit"), str):
        return '<span class="muted">—</span>'
    dirty = ' <span class="yanked" title="built from uncommitted changes">dirty</span>'
    return f"<code>{_esc(lineage['commit'][:12])}</code>" + (dirty if lineage.get("dirty") else "")


def _framework(lineage: dict[str, Any] | None) -> str:
    fw = (lineage or {}).get("framework")
    if not isinstance(fw, dict) or not fw.get("name"):
        return '<span class="muted">—</span>'
    return _esc(f"{fw['name']} {fw.get('version') or ''}".strip())


def _dataset(dataset: dict[str, str] | None) -> str:
    if not dataset:
        return '<span class="muted">—</span>'
    text = _esc(dataset["name"] + (f" {dataset['version']}" if dataset.get("version") else ""))
    url = dataset.get("url", "")
    if url.startswith(("http://", "https://")):
        return f'<a href="{_esc(url)}" rel="nofollow noopener">{text}</a>'
    return text + (f" <code>{_esc(url)}</code>" if url else "")


def lineage_facts(detail: dict[str, Any]) -> str:
    """Dataset, commit, framework and build time of the latest version, as a small table."""
    lineage = detail.get("lineage")
    if not detail.get("dataset") and not lineage:
        return ""
    rows = [("Dataset", _dataset(detail.get("dataset"))), ("Commit", _commit(lineage)),
            ("Framework", _framework(lineage)),
            ("Built (UTC)", _esc(str((lineage or {}).get("build_time") or "—")))]  # fmt: skip
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<h2>Lineage</h2><table id="lineage">{body}</table>'


def metrics_section(versions: list[dict[str, Any]]) -> str:
    """The "Metrics" section: a table of every metric per version (newest first), and a
    chart per metric when three or more versions have it; "" when no version has any."""
    shown = [v for v in versions if v.get("metrics")][-MAX_COLUMNS:]
    if not shown:
        return ""
    every = sorted({n for v in shown for n in v["metrics"]})
    names = every[:MAX_METRICS]  # a manifest may hold thousands: the rest stay in the manifest
    newest = list(reversed(shown))
    head = "".join(f'<th scope="col">{_esc(v["version"])}</th>' for v in newest)
    rows = []
    for name in names:
        better = next(v["metrics"][name]["better"] for v in newest if name in v["metrics"])
        arrow = "↑" if better == "higher" else "↓"
        values = [v["metrics"].get(name, {}).get("value") for v in newest]
        present = [x for x in values if x is not None]
        best = (max if better == "higher" else min)(present) if present else None
        cells = "".join(
            '<td class="muted">—</td>' if x is None
            else f'<td{" class=best" if x == best and len(present) > 1 else ""}>{_num(x)}</td>'
            for x in values
        )  # fmt: skip
        rows.append(
            f'<tr class="metric" data-metric="{_esc(name)}"><th scope="row">{_esc(name)} '
            f'<span class="muted" title="{better} is better">{arrow}</span></th>{cells}</tr>'
        )
    for label, render, key in (("dataset", _dataset, "dataset"), ("commit", _commit, "lineage"),
                               ("framework", _framework, "lineage")):  # fmt: skip
        cells = "".join(f"<td>{render(v.get(key))}</td>" for v in newest)
        rows.append(f'<tr class="lineage"><th scope="row">{label}</th>{cells}</tr>')
    table = (
        '<table id="metrics"><thead><tr><th>Metric</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    charts = [
        _chart(name, [(v["version"], v["metrics"][name]["value"]) for v in shown
                      if name in v["metrics"]],
               next(v["metrics"][name]["better"] for v in newest if name in v["metrics"]))
        for name in names
    ]  # fmt: skip
    drawn = "".join([c for c in charts if c][:MAX_CHARTS])
    figure = f'<div id="metric-charts">{drawn}</div>' if drawn else ""
    more = (
        f'<p class="muted">{len(every) - len(names)} more metrics are in the manifest.</p>'
        if len(every) > len(names)
        else ""
    )
    return "<h2>Metrics</h2>" + table + more + figure


def _chart(name: str, points: list[tuple[str, float]], better: str) -> str:
    """A line chart of one metric over versions (oldest left); "" under three points."""
    if len(points) < 3:
        return ""
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (_W - 2 * _PAD) / (len(points) - 1)

    def xy(i: int, value: float) -> tuple[float, float]:
        return _PAD + i * step, _H - _PAD - (value - low) / span * (_H - 2 * _PAD)

    coords = [xy(i, v) for i, (_, v) in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#36c"><title>{_esc(ver)}: '
        f"{_num(val)}</title></circle>"
        for (x, y), (ver, val) in zip(coords, points, strict=True)
    )
    label = f"{name} over {len(points)} versions ({better} is better): " + ", ".join(
        f"{ver} {_num(val)}" for ver, val in points
    )
    return (
        f'<figure class="chart"><svg class="metric-chart" role="img" width="{_W}" '
        f'height="{_H}" viewBox="0 0 {_W} {_H}" xmlns="http://www.w3.org/2000/svg" '
        f'aria-label="{_esc(label)}"><rect width="{_W}" height="{_H}" fill="#fafafa" '
        f'stroke="#ddd"/><polyline points="{line}" fill="none" stroke="#36c" '
        f'stroke-width="2"/>{dots}</svg><figcaption>{_esc(name)} '
        f'<span class="muted">{_num(low)} to {_num(high)}</span></figcaption></figure>'
    )


def metric_cell(m: ModelSummary, metric: str) -> str:
    """The catalog's extra cell when sorting by ``metric``."""
    entry = m.card["metrics"].get(metric)
    return f"<td>{_num(entry['value'])}</td>" if entry else '<td class="muted">—</td>'


def catalog_controls(everything: list[ModelSummary], chosen: dict[str, str | None]) -> str:
    """``<select>`` filters for task, framework and tag, and a sort by any metric, built
    from the values the models have (GET parameters: no script)."""

    def select(key: str, label: str, options: list[tuple[str, str]]) -> str:
        opts = "".join(
            f'<option value="{_esc(v)}"{" selected" if chosen.get(key) == v else ""}>'
            f"{_esc(text)}</option>"
            for v, text in options
        )
        return (
            f'<label>{label} <select name="{key}" aria-label="{label}">'
            f'<option value="">any</option>{opts}</select></label> '
        )

    tasks = sorted({m.task for m in everything if m.task})
    frameworks = sorted({m.framework for m in everything if m.framework})
    tags = sorted({t for m in everything for t in m.tags})
    metrics = sorted({n for m in everything for n in m.card["metrics"]})
    sort_opts = "".join(
        f'<option value="metric:{_esc(n)}"{" selected" if chosen.get("sort") == f"metric:{n}" else ""}>'
        f"best {_esc(n)}</option>"
        for n in metrics
    )
    return (
        select("task", "Task", [(t, t) for t in tasks])
        + select("framework", "Framework", [(f, f) for f in frameworks])
        + select("tag", "Tag", [(t, t) for t in tags])
        + '<label>Sort <select name="sort" aria-label="Sort"><option value="">name</option>'
        + sort_opts
        + "</select></label> "
    )
