"""The model card's numbers: ``metrics`` and ``dataset``, from ``pyproject.toml`` and
from the ``metrics.json`` that a training run writes.

Two sources, one shape. ``[tool.modelpack]`` may declare them by hand::

    metrics = { auc = { value = 0.93, better = "higher" }, rmse = { value = 1.2, better = "lower" } }
    dataset = { name = "iris", version = "1.0" }     # or url = "https://..."

and the template's ``train.py`` writes ``metrics.json`` in the project root::

    {"metrics": {"auc": {"value": 0.93, "better": "higher"}},
     "dataset": {"name": "iris", "version": "1.0"}}

Precedence: ``metrics.json`` is the output of the last training run, so it is fresher
than hand-written numbers. A metric it names replaces the pyproject entry of the same
name (``check`` warns when their values differ); metrics only in pyproject are kept; its
``dataset``, when present, replaces pyproject's. A plain number (``metrics = { auc =
0.93 }``) still works and means higher is better. :func:`card_fields` returns the
normalized result that ``build`` writes into the wheel's ``modelpack.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "METRICS_FILE",
    "Card",
    "card_fields",
    "card_lines",
    "dataset_errors",
    "metrics_errors",
    "read_card",
]

METRICS_FILE = "metrics.json"
BETTER = ("higher", "lower")
_DATASET_KEYS = ("name", "version", "url")
_METRIC_EXAMPLE = 'metrics = { auc = { value = 0.93, better = "higher" } }'
_DATASET_EXAMPLE = 'dataset = { name = "iris", version = "1.0" } (or url = "https://...")'


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def metrics_errors(value: object, where: str) -> list[tuple[str, str]]:
    """(key, message) for each problem of a ``metrics`` table; *where* prefixes each key."""
    if not isinstance(value, dict):
        return [(where, f"must be a table of metrics, e.g. {_METRIC_EXAMPLE}")]
    problems: list[tuple[str, str]] = []
    for name, entry in value.items():
        key = f"{where}.{name}"
        if not str(name).strip():
            problems.append((key, "a metric needs a name"))
        elif _is_number(entry):
            continue
        elif not isinstance(entry, dict):
            problems.append((key, f"must be a number or a table, e.g. {_METRIC_EXAMPLE}; "
                                  f"got {json.dumps(entry)}"))  # fmt: skip
        else:
            if not _is_number(entry.get("value")):
                got = json.dumps(entry.get("value"))
                problems.append((f"{key}.value", f"must be a finite number, got {got}"))
            if entry.get("better", "higher") not in BETTER:
                problems.append((f"{key}.better", f'must be "higher" or "lower", '
                                                  f"got {json.dumps(entry.get('better'))}"))  # fmt: skip
            for extra in sorted(set(entry) - {"value", "better"}):
                problems.append((f"{key}.{extra}", "unknown key; a metric has value and better"))
    return problems


def dataset_errors(value: object, where: str) -> list[tuple[str, str]]:
    """(key, message) for each problem of a ``dataset`` table."""
    if not isinstance(value, dict):
        return [(where, f"must be a table, e.g. {_DATASET_EXAMPLE}")]
    problems: list[tuple[str, str]] = []
    if not isinstance(value.get("name"), str) or not value["name"].strip():
        problems.append(
            (f"{where}.name", f"is required and must be a string, e.g. {_DATASET_EXAMPLE}")
        )
    for key in ("version", "url"):
        if key in value and (not isinstance(value[key], str) or not value[key].strip()):
            problems.append((f"{where}.{key}", "must be a non-empty string"))
    url = value.get("url")
    if isinstance(url, str) and url.strip() and not url.startswith(("http://", "https://", "s3://",
                                                                    "gs://", "hf://")):  # fmt: skip
        problems.append(
            (f"{where}.url", f"must be an http(s)://, s3://, gs:// or hf:// URL, got {url!r}")
        )
    for extra in sorted(set(value) - set(_DATASET_KEYS)):
        problems.append(
            (f"{where}.{extra}", f"unknown key; a dataset has {', '.join(_DATASET_KEYS)}")
        )
    return problems


def _normalize_metrics(value: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, entry in value.items():
        if _is_number(entry):
            out[str(name)] = {"value": float(entry), "better": "higher"}
        else:
            out[str(name)] = {
                "value": float(entry["value"]),
                "better": entry.get("better", "higher"),
            }
    return out


@dataclass
class Card:
    """What ``metrics.json`` and ``[tool.modelpack]`` say together, with their problems."""

    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset: dict[str, str] | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)


def read_card(root: Path, config: dict[str, Any]) -> Card:
    """Merge ``[tool.modelpack]`` *config* and ``<root>/metrics.json`` (see the module
    docstring for the precedence); every problem names its key. Never raises."""
    card = Card()
    declared: dict[str, Any] = {}
    if "metrics" in config:
        found = metrics_errors(config["metrics"], "[tool.modelpack] metrics")
        card.errors += found
        if not found:
            declared = _normalize_metrics(config["metrics"])
    if "dataset" in config:
        found = dataset_errors(config["dataset"], "[tool.modelpack] dataset")
        card.errors += found
        if not found:
            card.dataset = {k: str(v) for k, v in config["dataset"].items()}
    card.metrics = dict(declared)
    path = root / METRICS_FILE
    if not path.is_file():
        return card
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        card.errors.append(
            (METRICS_FILE, f"is not valid JSON ({exc}); run train.py again or fix it")
        )
        return card
    if not isinstance(data, dict):
        card.errors.append(
            (METRICS_FILE, 'must be an object like {"metrics": {...}, "dataset": {...}}')
        )
        return card
    for extra in sorted(set(data) - {"metrics", "dataset"}):
        card.errors.append((f"{METRICS_FILE} {extra}", "unknown key; it has metrics and dataset"))
    if "metrics" in data:
        found = metrics_errors(data["metrics"], f"{METRICS_FILE} metrics")
        card.errors += found
        if not found:
            for name, entry in _normalize_metrics(data["metrics"]).items():
                old = declared.get(name)
                if old is not None and old != entry:
                    card.warnings.append((f"[tool.modelpack] metrics.{name}",
                                          f"{METRICS_FILE} overrides it ({old['value']} -> "
                                          f"{entry['value']}); drop it from pyproject.toml"))  # fmt: skip
                card.metrics[name] = entry
    if "dataset" in data:
        found = dataset_errors(data["dataset"], f"{METRICS_FILE} dataset")
        card.errors += found
        if not found:
            card.dataset = {k: str(v) for k, v in data["dataset"].items()}
    return card


def stale_card(root: Path, weights: list[Path]) -> list[tuple[str, str]]:
    """A warning when ``metrics.json`` is older than a weight file: the weights were saved
    again by something that did not measure them, so the card may describe other weights."""
    try:
        card_time = (root / METRICS_FILE).stat().st_mtime
        newest = max(weights, key=lambda p: p.stat().st_mtime)
        newest_time = newest.stat().st_mtime
    except (OSError, ValueError):
        return []  # no metrics.json, or no weights (reported elsewhere)
    if newest_time <= card_time + 1:
        return []
    rel = newest.relative_to(root) if newest.is_relative_to(root) else newest
    return [(METRICS_FILE, f"is older than {rel.as_posix()}: the weights were "
                    "saved again without measuring them; run train.py again so the metrics "
                    "describe these weights")]  # fmt: skip


def card_fields(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``metrics`` and ``dataset`` (only those present), normalized."""
    card = read_card(root, config)
    fields: dict[str, Any] = {}
    if card.metrics:
        fields["metrics"] = card.metrics
    if card.dataset:
        fields["dataset"] = card.dataset
    return fields


def card_lines(model: dict[str, Any]) -> list[str]:
    """The metrics, dataset and lineage of a registry answer (``GET /api/v1/models/<name>``:
    its latest version), as ``modelpack show`` prints them."""
    lines = []
    metrics = model.get("metrics") or {}
    if metrics:
        lines.append("metrics: " + ", ".join(
            f"{k}={v['value']:.6g} ({v['better']} is better)" for k, v in sorted(metrics.items())))  # fmt: skip
    if dataset := model.get("dataset"):
        lines.append("dataset: " + " ".join(str(dataset[k]) for k in _DATASET_KEYS if k in dataset))
    lineage = model.get("lineage") or {}
    if lineage:
        fw = lineage.get("framework") or {}
        commit = (lineage.get("commit") or "-")[:12] + (" (dirty)" if lineage.get("dirty") else "")
        lines.append(f"commit: {commit}  framework: {fw.get('name', '-')} {fw.get('version', '')}".rstrip()
                     + f"  built: {lineage.get('build_time', '-')}")  # fmt: skip
    return lines
