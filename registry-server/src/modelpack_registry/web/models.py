"""The registry seen as models: summaries and details built from the in-memory index.

Both the catalog pages (:mod:`catalog`) and the JSON API (:mod:`api`) read these, so
they always agree. Everything comes from the :class:`~modelpack_registry.index.Snapshot`
(records carry the manifest and METADATA fields extracted at upload), and results are
cached per snapshot: with 1,000 models a request filters a precomputed list. A model's
card is rendered once per file and stored (:mod:`modelpack_registry.cards`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from modelpack_registry.index import Snapshot
from modelpack_registry.storage import Record

__all__ = [
    "ModelSummary",
    "card_json",
    "describe_model",
    "filter_models",
    "latest_version",
    "parse_sort",
    "select_models",
    "summaries",
    "summary_json",
    "version_records",
    "yanked_versions",
]


def latest_version(versions: list[str], yanked: set[str] | None = None) -> str | None:
    """The newest final release, else the newest version at all (ignoring ``yanked``
    unless every version is yanked). ``versions`` is ascending."""
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


def version_records(snap: Snapshot, name: str, version: str) -> list[Record]:
    """The files of one version of a model."""
    return [r for r in snap.projects.get(name, []) if r.version == version]


def yanked_versions(snap: Snapshot, name: str) -> set[str]:
    """Versions whose every file is yanked."""
    by_version: dict[str, list[Record]] = {}
    for record in snap.projects.get(name, []):
        by_version.setdefault(record.version, []).append(record)
    return {v for v, recs in by_version.items() if all(r.filename in snap.yanked for r in recs)}


def _main_record(records: list[Record]) -> Record | None:
    """The file whose metadata describes a version: a wheel if there is one."""
    wheels = [r for r in records if r.filename.endswith(".whl")]
    pool = wheels or records
    return pool[0] if pool else None


def _from_keywords(keywords: tuple[str, ...]) -> tuple[str | None, str | None, list[str]]:
    task = framework = None
    tags: list[str] = []
    for word in keywords:
        if word.startswith("task:"):
            task = task or word[5:] or None
        elif word.startswith("framework:"):
            framework = framework or word[10:] or None
        elif word != "modelpack-model" and word not in tags:
            tags.append(word)
    return task, framework, tags


def classify(record: Record | None) -> tuple[str | None, str | None, list[str]]:
    """task, framework and tags: from the manifest, else from METADATA Keywords."""
    if record is None:
        return None, None, []
    task, framework, tags = _from_keywords(record.keywords)
    manifest = record.manifest or {}
    if isinstance(manifest.get("task"), str):
        task = manifest["task"]
    if isinstance(manifest.get("framework"), str):
        framework = manifest["framework"]
    if isinstance(manifest.get("tags"), list):
        tags = [str(t) for t in manifest["tags"]]
    return task, framework, tags


def _license(record: Record | None) -> str | None:
    if record is None:
        return None
    value = (record.manifest or {}).get("license")
    return str(value) if isinstance(value, str) and value else record.license


def _metrics(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's ``metrics`` as ``{name: {"value", "better"}}``; a plain number (older
    manifests) means higher is better; anything else is left out (never trusted)."""
    raw = manifest.get("metrics")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in raw.items() if isinstance(raw, dict) else ():
        value, better = (entry.get("value"), entry.get("better", "higher")) if isinstance(
            entry, dict) else (entry, "higher")  # fmt: skip
        if isinstance(value, (int, float)) and not isinstance(value, bool) and better in (
            "higher", "lower") and math.isfinite(value):  # fmt: skip
            out[str(name)] = {"value": float(value), "better": better}
    return out


def card_json(record: Record | None) -> dict[str, Any]:
    """``metrics``, ``dataset`` and ``lineage`` of a file's manifest, normalized for the
    API and the pages (empty or None when the wheel has none)."""
    manifest = (record.manifest if record else None) or {}
    dataset = manifest.get("dataset")
    lineage = manifest.get("lineage")
    return {
        "metrics": _metrics(manifest),
        "dataset": (
            {k: str(v) for k, v in dataset.items() if k in ("name", "version", "url")}
            if isinstance(dataset, dict) and isinstance(dataset.get("name"), str)
            else None
        ),
        "lineage": lineage if isinstance(lineage, dict) else None,
    }


@dataclass(frozen=True)
class ModelSummary:
    """One row of the catalog / one item of ``GET /api/v1/models``."""

    name: str
    version: str
    summary: str | None
    task: str | None
    framework: str | None
    tags: tuple[str, ...]
    license: str | None
    size: int
    upload_time: str | None
    versions: tuple[str, ...]
    stages: dict[str, str]
    yanked: bool  # the shown version is yanked (every version is)
    haystack: str  # lowercase text the filter searches
    card: dict[str, Any]  # card_json() of the shown version


def _summarize(snap: Snapshot, name: str) -> ModelSummary:
    versions = snap.versions(name)
    yanked = yanked_versions(snap, name)
    latest = latest_version(versions, yanked) or ""
    records = version_records(snap, name, latest)
    main = _main_record(records)
    task, framework, tags = classify(main)
    state = snap.stages.get(name, {}).get("stages", {})
    stages = {stage: str(entry["version"]) for stage, entry in state.items()}
    summary = main.summary if main else None
    license_ = _license(main)
    words = [name, summary or "", task or "", framework or "", license_ or "", *tags]
    words += [f"{s}" for s in stages]
    return ModelSummary(
        name=name,
        version=latest,
        summary=summary,
        task=task,
        framework=framework,
        tags=tuple(tags),
        license=license_,
        size=sum(r.size for r in records),
        upload_time=min((r.upload_time for r in records), default=None),
        versions=tuple(versions),
        stages=stages,
        yanked=latest in yanked,
        haystack="\n".join(words).lower(),
        card=card_json(main),
    )


def summaries(snap: Snapshot) -> list[ModelSummary]:
    """Every model, sorted by name (cached per snapshot)."""

    def make() -> list[ModelSummary]:
        return [_summarize(snap, name) for name in snap.projects]

    value = snap.cached("model-summaries", make)
    assert isinstance(value, list)
    return value


def filter_models(items: list[ModelSummary], query: str | None) -> list[ModelSummary]:
    """Models whose name, summary, task, framework, license, tags or stages contain
    every word of ``query`` (case-insensitive); all models for an empty query."""
    words = (query or "").lower().split()
    if not words:
        return items
    return [m for m in items if all(w in m.haystack for w in words)]


def parse_sort(sort: str | None) -> str | None:
    """The metric of ``?sort=metric:<name>`` (None: by name).

    :raises ValueError: any other value, with the fix in the message.
    """
    if not sort or sort == "name":
        return None
    kind, _, metric = sort.partition(":")
    if kind != "metric" or not metric.strip():
        raise ValueError(f"sort={sort!r} is not understood; use sort=name or sort=metric:<name>, "
                         "e.g. sort=metric:auc")  # fmt: skip
    return metric.strip()


def select_models(
    items: list[ModelSummary], task: str | None = None, framework: str | None = None,
    tag: str | None = None, metric: str | None = None,
) -> list[ModelSummary]:  # fmt: skip
    """Models with this task, framework and tag (exact, case-insensitive), sorted by
    ``metric`` best first (the direction most of them declare) when given: models without
    it come last, by name."""

    def same(a: str | None, b: str | None) -> bool:
        return not b or (a or "").lower() == b.lower()

    shown = [
        m for m in items
        if same(m.task, task) and same(m.framework, framework)
        and (not tag or tag.lower() in (t.lower() for t in m.tags))
    ]  # fmt: skip
    if metric is None:
        return shown
    having = [m for m in shown if metric in m.card["metrics"]]
    lower = sum(m.card["metrics"][metric]["better"] == "lower" for m in having) * 2 > len(having)
    having.sort(key=lambda m: (m.card["metrics"][metric]["value"] * (1 if lower else -1), m.name))
    return having + [m for m in shown if metric not in m.card["metrics"]]


def summary_json(m: ModelSummary) -> dict[str, Any]:
    """The API shape of a summary."""
    return {
        "name": m.name,
        "version": m.version,
        "summary": m.summary,
        "task": m.task,
        "framework": m.framework,
        "tags": list(m.tags),
        "license": m.license,
        "size": m.size,
        "upload_time": m.upload_time,
        "versions": list(m.versions),
        "stages": m.stages,
        **m.card,
    }


def describe_model(snap: Snapshot, name: str, script: str = "") -> dict[str, Any]:
    """``GET /api/v1/models/<name>`` for an existing canonical ``name`` (cached)."""

    def make() -> dict[str, Any]:
        summary = next(m for m in summaries(snap) if m.name == name)
        latest_main = _main_record(version_records(snap, name, summary.version))
        versions = []
        for version in summary.versions:
            records = version_records(snap, name, version)
            main = _main_record(records)
            reasons = [snap.yanked[r.filename] for r in records if r.filename in snap.yanked]
            yanked = len(reasons) == len(records)
            versions.append(
                {
                    "version": version,
                    "upload_time": min(r.upload_time for r in records),
                    "uploaded_by": main.uploaded_by if main else None,
                    "yanked": yanked,
                    "yanked_reason": (next((r for r in reasons if r), None) if yanked else None),
                    "summary": main.summary if main else None,
                    "requires_python": main.requires_python if main else None,
                    "requires_dist": list(main.requires_dist) if main else [],
                    "manifest": main.manifest if main else None,
                    **card_json(main),
                    "files": [
                        {
                            "filename": r.filename,
                            "url": f"{script}/packages/{r.filename}",
                            "sha256": r.sha256,
                            "size": r.size,
                            "upload_time": r.upload_time,
                            "uploaded_by": r.uploaded_by,
                            "upload_token": r.upload_token,
                        }
                        for r in records
                    ],
                }
            )
        state = snap.stages.get(name, {"stages": {}, "history": []})
        return {
            "name": name,
            "summary": summary.summary,
            "latest": summary.version,
            "manifest": latest_main.manifest if latest_main else None,
            "task": summary.task,
            "framework": summary.framework,
            "tags": list(summary.tags),
            **summary.card,
            "requires_dist": list(latest_main.requires_dist) if latest_main else [],
            "stages": {
                stage: {
                    "version": entry.get("version"),
                    "promoted_by": entry.get("promoted_by"),
                    "promoted_at": entry.get("promoted_at"),
                }
                for stage, entry in state["stages"].items()
            },
            "history": [
                {k: h.get(k) for k in ("stage", "from", "to", "by", "at")} for h in state["history"]
            ],
            "versions": versions,
        }

    value = snap.cached(("model-detail", name, script), make)
    assert isinstance(value, dict)
    return value
