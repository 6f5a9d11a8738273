"""Stages (named aliases such as ``production`` -> ``1.2.0``) and yanks: the ``state/`` files.

``state/`` is the only registry state that cannot be rebuilt from ``packages/``::

    state/stages/<canonical-name>.json
        {"stages": {"production": {"version": "1.2.0", "promoted_by": "alice",
                                   "promoted_at": "2024-05-01T12:00:00Z"}},
         "history": [{"stage": "production", "from": null, "to": "1.2.0",
                      "by": "alice", "at": "2024-05-01T12:00:00Z"}]}
    state/yanked/<filename>.json
        {"reason": "wrong weights", "by": "alice", "at": "2024-05-01T12:00:00Z"}

A change of stages is a conditional read-modify-write
(:func:`~modelpack_registry.storage.base.update_doc`: the write names the version it read
and is retried if another writer got in between; no lock, so it holds on a bucket as on a
folder), followed by a bump of the generation: two servers on one store never lose an
update, and every process sees it at its next generation check. A yank marker does not
depend on what it replaces, so it is written (or deleted) unconditionally.
"""

from __future__ import annotations

import json
import re
from typing import Any

from modelpack_registry.errors import BadRequest
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import keys, update_doc
from modelpack_registry.verify.maintenance import utc_now

__all__ = [
    "STAGE_RE",
    "check_stage",
    "load_stages",
    "parse_stages",
    "read_stage_file",
    "set_stage",
    "set_yank",
]

STAGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
MAX_REASON = 500


def check_stage(stage: str) -> str:
    """Return ``stage`` if it is a valid stage name.

    :raises BadRequest: if it does not match ``^[a-z][a-z0-9-]{0,31}$``.
    """
    if not STAGE_RE.match(stage):
        raise BadRequest(
            f"invalid stage name {stage!r}: use 1 to 32 lowercase letters, digits or '-', "
            "starting with a letter (e.g. production, staging)"
        )
    return stage


def _empty() -> dict[str, Any]:
    return {"stages": {}, "history": []}


def parse_stages(raw: bytes | None) -> dict[str, Any]:
    """A stages document as ``{"stages": {...}, "history": [...]}``; empty if there is
    none or it does not parse (what it cannot read is dropped)."""
    try:
        doc: Any = json.loads(raw) if raw is not None else None
    except ValueError:
        return _empty()
    if not isinstance(doc, dict):
        return _empty()
    stages = doc.get("stages")
    history = doc.get("history")
    return {
        "stages": {
            str(k): v
            for k, v in (stages.items() if isinstance(stages, dict) else [])
            if isinstance(v, dict) and isinstance(v.get("version"), str)
        },
        "history": [h for h in history if isinstance(h, dict)] if isinstance(history, list) else [],
    }


def read_stage_file(data: DataDir, name: str) -> dict[str, Any]:
    """The stage state of one model; empty if it has none or the document is unreadable."""
    try:
        found = data.store.read_doc(keys.stages(name))
    except OSError:
        return _empty()
    return parse_stages(None if found is None else found[0])


def load_stages(data: DataDir) -> dict[str, dict[str, Any]]:
    """Stage state of every model that has a stages document (canonical name -> state)."""
    found: dict[str, dict[str, Any]] = {}
    try:
        entries = list(data.store.iter_keys(keys.STAGES))
    except OSError:
        return found
    for key in entries:
        entry = key[len(keys.STAGES) :]
        if entry.endswith(".json") and not entry.startswith("."):
            found[entry[: -len(".json")]] = read_stage_file(data, entry[: -len(".json")])
    return found


def set_stage(data: DataDir, name: str, stage: str, version: str | None,
              by: str | None) -> dict[str, Any]:  # fmt: skip
    """Point ``stage`` of model ``name`` at ``version`` (None removes the stage).

    The caller has checked that the model and version exist. Returns
    ``{"stage", "version", "previous", "by", "at"}``; a no-op change is still recorded.
    """
    check_stage(stage)
    at = utc_now()
    if version is not None:
        # Seal the version first: an upload of it still in flight finishes (or is
        # refused) before the stage points at it, and no file joins it afterwards.
        data.seal_version(name, version, stage)

    def mutate(raw: bytes | None) -> bytes:
        state = parse_stages(raw)
        current = state["stages"].get(stage)
        previous = current.get("version") if current else None
        if version is None:
            state["stages"].pop(stage, None)
        else:
            state["stages"][stage] = {"version": version, "promoted_by": by, "promoted_at": at}
        state["stages"] = dict(sorted(state["stages"].items()))
        state["history"].append(
            {"stage": stage, "from": previous, "to": version, "by": by, "at": at}
        )
        return json.dumps(state, indent=1).encode() + b"\n"

    written = update_doc(data.store, keys.stages(name), mutate)
    data.bump_generation()
    previous = parse_stages(written)["history"][-1]["from"]
    return {"stage": stage, "version": version, "previous": previous, "by": by, "at": at}


def check_reason(reason: object) -> str:
    """Return a valid yank reason.

    :raises BadRequest: if it is missing, not a string, blank or over 500 characters.
    """
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest(
            "a yank needs a reason, which pip and uv show: `modelpack yank NAME==VERSION "
            '--reason TEXT` (in the API: {"reason": "why this version must not be installed"})'
        )
    if len(reason) > MAX_REASON:
        raise BadRequest(f"the reason is {len(reason)} characters long; keep it under 500")
    return reason.strip()


def set_yank(data: DataDir, filenames: list[str], reason: str | None,
             by: str | None) -> None:  # fmt: skip
    """Yank (``reason`` given) or un-yank (None) every file in ``filenames``."""
    at = utc_now()
    body = json.dumps({"reason": reason, "by": by, "at": at}, indent=1).encode() + b"\n"
    for filename in filenames:
        if reason is None:
            data.store.delete_doc(keys.yanked(filename))
        else:
            data.store.write_doc(keys.yanked(filename), body)
    data.bump_generation()
