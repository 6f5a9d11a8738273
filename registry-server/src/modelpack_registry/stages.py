"""Stages (named aliases such as ``production`` -> ``1.2.0``) and yanks: the ``state/`` files.

``state/`` is the only registry state that cannot be rebuilt from ``packages/``::

    state/stages/<canonical-name>.json
        {"stages": {"production": {"version": "1.2.0", "promoted_by": "alice",
                                   "promoted_at": "2024-05-01T12:00:00Z"}},
         "history": [{"stage": "production", "from": null, "to": "1.2.0",
                      "by": "alice", "at": "2024-05-01T12:00:00Z"}]}
    state/yanked/<filename>.json
        {"reason": "wrong weights", "by": "alice", "at": "2024-05-01T12:00:00Z"}

Every change is a read-modify-write done while holding ``DATA/.lock`` (``fcntl.flock``),
written with :meth:`DataDir.atomic_write` (temp file, fsync, rename) and followed by a
bump of ``DATA/generation``: two servers on one folder never lose an update, and every
process sees it at its next generation check (at most 0.25 s later).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any

from modelpack_registry.errors import BadRequest
from modelpack_registry.maintenance import utc_now
from modelpack_registry.storage import DataDir

__all__ = [
    "STAGE_RE",
    "check_stage",
    "load_stages",
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


def read_stage_file(data: DataDir, name: str) -> dict[str, Any]:
    """The stage state of one model; empty if it has none or the file is unreadable."""
    try:
        raw: Any = json.loads((data.stages / f"{name}.json").read_bytes())
    except (OSError, ValueError):
        return _empty()
    if not isinstance(raw, dict):
        return _empty()
    stages = raw.get("stages")
    history = raw.get("history")
    return {
        "stages": {
            str(k): v
            for k, v in (stages.items() if isinstance(stages, dict) else [])
            if isinstance(v, dict) and isinstance(v.get("version"), str)
        },
        "history": [h for h in history if isinstance(h, dict)] if isinstance(history, list) else [],
    }


def load_stages(data: DataDir) -> dict[str, dict[str, Any]]:
    """Stage state of every model that has a stage file (canonical name -> state)."""
    found: dict[str, dict[str, Any]] = {}
    try:
        names = os.listdir(data.stages)
    except OSError:
        return found
    for entry in names:
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
    data.stages.mkdir(parents=True, exist_ok=True)
    with data.locked():
        state = read_stage_file(data, name)
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
        body = json.dumps(state, indent=1).encode() + b"\n"
        data.atomic_write(data.stages / f"{name}.json", body)
        data.bump_generation()
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
    data.yanked.mkdir(parents=True, exist_ok=True)
    with data.locked():
        for filename in filenames:
            path = data.yanked / f"{filename}.json"
            if reason is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                body = json.dumps({"reason": reason, "by": by, "at": at}, indent=1).encode()
                data.atomic_write(path, body + b"\n")
        data.bump_generation()
