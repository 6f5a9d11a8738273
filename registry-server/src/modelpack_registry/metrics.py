"""``GET /metrics``: what the registry holds, in the Prometheus text format (0.0.4).

Every figure is read from the data folder (through the index snapshot), not counted in
memory, so each worker process and each replica answers the same and a restart loses
nothing::

    modelpack_registry_info{version="..."}                 1
    modelpack_registry_models                               models with at least one file
    modelpack_registry_files                                distributions listed
    modelpack_registry_bytes                                their total size
    modelpack_registry_yanked_files                         of which yanked
    modelpack_registry_staged_models{stage="production"}    models with that stage
    modelpack_registry_uploads_in_progress                  uploads not yet published
    modelpack_registry_last_change_timestamp_seconds        when DATA/generation last changed
    modelpack_registry_api_tokens                           token files in state/tokens
    modelpack_registry_api_tokens_expired                   of which past their expiry

Requests, statuses and durations are per process and are what ``serve --access-log`` (or
the ingress in front) already records, so they are not repeated here. Like every other
read, ``/metrics`` needs credentials with ``--protect-reads``; it holds counts only.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelpack_registry import __version__
from modelpack_registry.access.tokens import list_tokens
from modelpack_registry.errors import StorageError
from modelpack_registry.index import Snapshot
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import keys

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PREFIX = "modelpack_registry_"


def render_metrics(data: DataDir, snap: Snapshot) -> bytes:
    """The metrics of ``data`` as of ``snap``."""
    out: list[str] = []

    def gauge(name: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        out.append(f"# HELP {_PREFIX}{name} {help_text}")
        out.append(f"# TYPE {_PREFIX}{name} gauge")
        for labels, value in samples:
            out.append(f"{_PREFIX}{name}{labels} {_number(value)}")

    records = list(snap.records.values())
    gauge("info", "The registry's version.", [(f'{{version="{_label(__version__)}"}}', 1)])
    gauge("models", "Models with at least one listed file.", [("", len(snap.projects))])
    gauge("files", "Distribution files listed.", [("", len(records))])
    gauge("bytes", "Total size of the listed files.", [("", sum(r.size for r in records))])
    gauge("yanked_files", "Listed files that are yanked (PEP 592).", [("", len(snap.yanked))])
    staged: dict[str, int] = {}
    for name, state in snap.stages.items():
        if name in snap.projects:
            for stage in state.get("stages", {}):
                staged[stage] = staged.get(stage, 0) + 1
    gauge(
        "staged_models",
        "Models that have this stage.",
        [(f'{{stage="{_label(stage)}"}}', count) for stage, count in sorted(staged.items())],
    )
    gauge(
        "uploads_in_progress",
        "Uploads being received (the store's pending uploads).",
        [("", _count(data))],
    )
    try:
        info = data.store.stat(keys.GENERATION)
    except (StorageError, OSError):
        info = None
    changed = info.mtime if info is not None else 0.0
    gauge(
        "last_change_timestamp_seconds",
        "When the data folder last changed (an upload, yank, stage or owners change).",
        [("", changed)],
    )
    tokens = list_tokens(data)
    gauge("api_tokens", "API tokens that exist.", [("", len(tokens))])
    gauge(
        "api_tokens_expired",
        "API tokens past their expiry (refused; revoke them).",
        [("", sum(1 for t in tokens if t.expired()))],
    )
    return ("\n".join(out) + "\n").encode()


def _count(data: DataDir) -> int:
    try:
        return len(data.pending_uploads())
    except (StorageError, OSError):
        return 0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _label(value: str) -> str:
    """A label value escaped as the text format wants (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
