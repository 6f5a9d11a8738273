"""``verify``'s checks of stages and yanks: ``state/stages/`` and ``state/yanked/``.

:func:`verify_state` reads them the way :mod:`~modelpack_registry.stages` and
:meth:`DataDir.yank_reason <modelpack_registry.storage.DataDir.yank_reason>` do, and
reports, one line each::

    error    a stages file the server reads as something else: not JSON, not the shape
             {"stages": {STAGE: {"version": ...}}, "history": [...]}, a stage name no
             URL can reach, or a file not named by the model's canonical name (never read)
             a stage pointing at a version with no file in packages/ (its stage index
             lists nothing for that model: a restore that lost files, or a hand edit)
             a yank marker that does not parse or has no reason (the file stays yanked,
             with no reason shown)
    warning  a stage pointing at a yanked version (pip skips it unless pinned)
             a yank marker for a file not in packages/ (harmless until the file returns)
             a leftover temp file or a stray file in either folder

Like the access files, these are not rebuilt by ``reindex``: ``state/`` comes back only
from a backup, so ``verify`` is how a restore is found incomplete.
"""

from __future__ import annotations

from typing import Any

from modelpack_registry.errors import BadRequest
from modelpack_registry.stages import STAGE_RE
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import keys
from modelpack_registry.validate import name_and_version
from modelpack_registry.verify.common import (
    Report,
    list_entries,
    load_json,
    model_files,
    stray_file,
)

__all__ = ["verify_state"]


def verify_state(data: DataDir, report: Report) -> None:
    """Add what is wrong in ``state/stages/`` and ``state/yanked/`` to ``report``."""
    files = _versions(data)
    yanked = _check_yanks(data, set(files), report)
    by_version: dict[tuple[str, str], list[str]] = {}
    for filename, (name, version) in files.items():
        by_version.setdefault((name, version), []).append(filename)
    _check_stages(data, by_version, yanked, report)


def _versions(data: DataDir) -> dict[str, tuple[str, str]]:
    """filename -> (canonical name, version as the server lists it) for ``packages/``."""
    found: dict[str, tuple[str, str]] = {}
    for filename, name, version in data.distributions():
        record = data.load_record(filename)
        if record is not None and record.filename == filename:
            name, version = record.name, record.version  # as the server lists it
        found[filename] = (name, version)
    return found


# -- yanks ---------------------------------------------------------------------------------
def _check_yanks(data: DataDir, present: set[str], report: Report) -> set[str]:
    """Report on ``state/yanked/``; return the filenames the server lists as yanked."""
    yanked: set[str] = set()
    for entry in list_entries(data.store, keys.YANKED, report):
        rel = f"{keys.YANKED}{entry}"
        if stray_file(rel, entry, "yank markers are named <filename>.json", report):
            continue
        filename = entry[: -len(".json")]
        if filename not in present:
            report.warn(
                f"{rel}: yanks {filename}, which is not in packages/ (harmless: the file "
                "is yanked again if it comes back). If files were lost in a restore, "
                "restore them; else delete the marker"
            )
            continue
        yanked.add(filename)
        doc, problem = load_json(data.store, rel)
        if problem is None:
            reason = doc.get("reason") if isinstance(doc, dict) else None
            if not isinstance(doc, dict):
                problem = "is not a JSON object"
            elif not isinstance(reason, str) or not reason.strip():
                problem = 'has no "reason"'
        if problem is not None:
            name, version = _name_version(filename)
            report.errors.append(
                f"corrupt: {rel}: {problem}. {filename} stays yanked, but installers see "
                f"no reason: yank it again with one (`modelpack yank {name}=={version} "
                "--reason TEXT`), or restore the file from a backup"
            )
    return yanked


def _name_version(filename: str) -> tuple[str, str]:
    try:
        return name_and_version(filename)
    except BadRequest:
        return "NAME", "VERSION"


# -- stages --------------------------------------------------------------------------------
def _check_stages(
    data: DataDir,
    by_version: dict[tuple[str, str], list[str]],
    yanked: set[str],
    report: Report,
) -> None:
    for rel, name in model_files(
        data.store,
        keys.STAGES,
        report,
        kind="stages files",
        what="the stages of a model",
        effect="these are never served",
    ):
        doc, problem = load_json(data.store, rel)
        problems = [problem] if problem is not None else _stage_problems(doc)
        if problems:
            report.errors.append(
                f"corrupt: {rel}: {'; '.join(problems)}. The server drops what it cannot "
                f"read, so /stages/<stage>/simple/{name}/ may list nothing: restore the "
                f"file from a backup, or promote again (`modelpack promote {name}==VERSION "
                "--stage STAGE`)"
            )
            continue
        for stage, entry_doc in sorted(doc["stages"].items()):
            version = entry_doc["version"]
            files = by_version.get((name, version))
            if not files:
                report.errors.append(
                    f"missing: {rel}: stage {stage} of {name} points at {version}, which has "
                    f"no file in packages/, so /stages/{stage}/simple/{name}/ lists nothing: "
                    f"restore the files from a backup, or promote another version "
                    f"(`modelpack promote {name}==VERSION --stage {stage}`)"
                )
            elif all(f in yanked for f in files):
                report.warn(
                    f"{rel}: stage {stage} of {name} points at {version}, which is yanked, "
                    f"so pip and uv skip it unless pinned to =={version}: promote another "
                    f"version, or un-yank it (`modelpack yank {name}=={version} --undo`)"
                )


def _stage_problems(doc: Any) -> list[str]:
    """Why :func:`~modelpack_registry.stages.read_stage_file` would drop part of ``doc``."""
    if not isinstance(doc, dict):
        return ["is not a JSON object"]
    problems = []
    stages = doc.get("stages")
    if not isinstance(stages, dict):
        problems.append('"stages" is not an object')
    else:
        for stage in sorted(stages, key=str):
            entry = stages[stage]
            if not STAGE_RE.match(str(stage)):
                problems.append(f"stage name {str(stage)[:40]!r} is not one a URL can name")
            if not isinstance(entry, dict) or not isinstance(entry.get("version"), str):
                problems.append(f'stage {str(stage)[:40]!r} has no "version"')
        if problems:
            return problems
    if not isinstance(doc.get("history"), list):
        problems.append('"history" is not a list (the promotion history is lost)')
    elif any(not isinstance(h, dict) for h in doc["history"]):
        problems.append('"history" holds entries that are not objects')
    return problems
