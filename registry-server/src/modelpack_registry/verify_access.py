"""``verify``'s checks of the access files: owners, API tokens and (if given) htpasswd.

:func:`verify_access` reads ``state/owners/``, ``state/tokens/`` and the htpasswd file
the way :mod:`~modelpack_registry.owners`, :mod:`~modelpack_registry.tokens` and
:mod:`~modelpack_registry.auth` read them, and reports, one line each::

    error    a file that cannot be read or parsed (empty, truncated, not JSON, wrong shape)
             a file the registry never reads (not named by a canonical model name or a
             16-hex-digit token id), or reads differently from what it says (an unknown
             key such as "owner", an entry that is not a user name, a token whose id,
             model, user or sha256 can never match, or whose expiry does not parse)
             two token files with one id, or with one secret (a copied file: revoking
             one leaves the other working)
             an htpasswd file that ``serve`` would refuse
    warning  owners of a name with no file in packages/ (a name reserved on purpose, or
             distributions missing from a restored copy: verify cannot tell which)
             a token for a model with no file and no owners file
             a token that has expired, or expires within two weeks
             with --htpasswd: owners or tokens naming a user who is not in it; models
             with files but no owners file (admins only); an htpasswd file with no users
             a user listed twice in one owners file; a leftover temp file or a stray
             file in state/owners/ or state/tokens/
             a token file or the htpasswd file that its group or others can read

Errors are files the server silently reads as something else: it fails closed (an owners
file it cannot parse means "admins only", a token file it cannot parse is a revoked
token), so nothing is exposed, but what the file says does not hold. Warnings are states
a registry can be in on purpose, or that work but are risky.

Owners files are not checked for permissions: they hold user names only, which
``GET /api/v1/models/<name>/owners`` serves to every reader anyway. Group read of a file
is not reported when the user running ``verify`` does not own the file and reads it only
through its group (a Kubernetes secret mounted with ``defaultMode: 0440`` and ``fsGroup``):
the server, running as that user, needs it.

No line ever holds a token's secret, a token's sha256, or an htpasswd hash: the
malformed entries of a file are named by position, never quoted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack_registry.auth import Htpasswd
from modelpack_registry.errors import BadRequest, ConfigError
from modelpack_registry.maintenance import iso_utc
from modelpack_registry.owners import check_user, model_name
from modelpack_registry.storage import DataDir
from modelpack_registry.tokens import parse_time
from modelpack_registry.validate import name_and_version

__all__ = [
    "AccessReport",
    "list_entries",
    "load_json",
    "published_names",
    "some",
    "stray_file",
    "verify_access",
]

_TOKEN_FIELDS = ("id", "model", "user", "created", "sha256")
_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_OWNER_KEYS = ("owners", "maintainers")


@dataclass
class AccessReport:
    """What :func:`verify_access` found: ``errors`` fail ``verify``, ``warnings`` do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        self.warnings.append(f"warning: {text}")


def verify_access(data: DataDir, htpasswd: Path | None = None) -> AccessReport:
    """Check the owners and token files of ``data`` and, if given, the htpasswd file.

    With ``htpasswd``, owners and tokens are also checked against its users. Nothing is
    changed.
    """
    report = AccessReport()
    users = _check_htpasswd(Path(htpasswd), report) if htpasswd is not None else None
    published = published_names(data)
    owned = _check_owners(data, published, users, report)
    _check_tokens(data, published | owned, users, report)
    if users is not None:
        ownerless = sorted(published - owned)
        if ownerless:
            report.warn(
                f"{len(ownerless)} model(s) have files but no owners file, so only admins "
                f"may upload, yank or promote them ({some(ownerless)}): if state/owners/ "
                "was lost, restore it from a backup; else run `modelpack-registry owners "
                f"add NAME USER --data {data.root}`"
            )
    return report


# -- shared (verify_state.py uses these too) -----------------------------------------------
def _are(names: list[str]) -> str:
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"


def some(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def published_names(data: DataDir) -> set[str]:
    names: set[str] = set()
    try:
        entries = os.listdir(data.packages)
    except OSError:
        return names
    for filename in entries:
        if filename.startswith("."):
            continue
        try:
            names.add(name_and_version(filename)[0])
        except BadRequest:
            continue  # the distribution checks report it
    return names


def list_entries(folder: Path, rel: str, report: AccessReport) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        report.errors.append(f"unreadable: {rel}/: {exc.strerror or exc}")
        return []


def stray_file(rel: str, entry: str, kind: str, report: AccessReport) -> bool:
    """Warn about (and return True for) a temp or foreign file among ``kind`` files."""
    if entry.startswith("."):
        report.warn(
            f"{rel}: leftover temp file of a write that did not finish; delete it when no "
            "server or CLI command is writing"
        )
        return True
    if not entry.endswith(".json"):
        report.warn(f"{rel}: not read by the registry ({kind}); move it out of the folder")
        return True
    return False


def load_json(path: Path) -> tuple[Any, str | None]:
    """The parsed file, or what is wrong with it (never quoting its content)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if not raw.strip():
        return None, "is empty"
    try:
        return json.loads(raw), None
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
            return None, f"is truncated (the JSON ends early, {where})"
        return None, f"is not valid JSON ({exc.msg} at {where})"


def _readable_by(path: Path) -> str | None:
    """Who besides the server can read ``path``: "others", "its group", or None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return readable_by(
        st.st_mode, st.st_uid, st.st_gid, os.geteuid(), [os.getegid(), *os.getgroups()]
    )


def readable_by(mode: int, uid: int, gid: int, euid: int, groups: list[int]) -> str | None:
    """Who besides user ``euid`` (in ``groups``) can read a file of ``mode``, ``uid``, ``gid``.

    Group read is fine when the group is how this user reads a file it does not own: a
    Kubernetes secret is root's, mode 0440, with the pod's fsGroup as its group.
    """
    if mode & stat.S_IROTH:
        return "others"
    if mode & stat.S_IRGRP:
        if uid != euid and gid in groups:
            return None
        return "its group"
    return None


# -- htpasswd ----------------------------------------------------------------------------
def _check_htpasswd(path: Path, report: AccessReport) -> frozenset[str] | None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        report.errors.append(
            f"missing: htpasswd {path} does not exist (`serve --htpasswd` would refuse to "
            f"start): restore it from a backup, or write it with `htpasswd -cB {path} USER`"
        )
        return None
    except OSError as exc:
        report.errors.append(f"unreadable: htpasswd {path}: {exc.strerror or exc}")
        return None
    who = _readable_by(path)
    if who is not None:
        mode = stat.S_IMODE(path.stat().st_mode)
        report.warn(
            f"htpasswd {path} is readable by {who} (mode {mode:04o}) and holds password "
            f"hashes: give it to the user the server runs as and `chmod 600 {path}` (a "
            "Kubernetes secret: defaultMode 0440 with the pod's fsGroup)"
        )
    try:
        users = Htpasswd(path).users()
    except ConfigError as exc:
        report.errors.append(
            f"invalid htpasswd: {exc} (`serve --htpasswd` would refuse to start): fix or "
            f"delete that line; `htpasswd -B {path} USER` writes a user's entry again"
        )
        return None
    if not users:
        report.warn(
            f"htpasswd {path} has no users, so nobody can upload: add one with "
            f"`htpasswd -B {path} USER`"
        )
    return users


# -- owners ------------------------------------------------------------------------------
def _owner_lists(doc: Any) -> tuple[dict[str, list[str]], list[str]]:
    """The owners and maintainers lists, and what is wrong with the document."""
    if not isinstance(doc, dict):
        return {}, ['is not a JSON object like {"owners": ["alice"], "maintainers": []}']
    problems = [
        f"has an unknown key {key!r} that the registry ignores (it reads only "
        '"owners" and "maintainers")'
        for key in doc
        if key not in _OWNER_KEYS
    ]
    lists: dict[str, list[str]] = {}
    for key in _OWNER_KEYS:
        value = doc.get(key, [])
        if not isinstance(value, list):
            problems.append(f'"{key}" is not a list of user names')
            continue
        bad = []
        for position, user in enumerate(value, 1):
            try:
                check_user(user if isinstance(user, str) else "")
            except BadRequest:
                bad.append(str(position))
        if len(bad) == 1:
            problems.append(f'entry {bad[0]} of "{key}" is not a user name')
        elif bad:
            problems.append(f'entries {", ".join(bad)} of "{key}" are not user names')
        lists[key] = [u for u in value if isinstance(u, str)]
    return lists, problems


def _check_owners(
    data: DataDir, published: set[str], users: frozenset[str] | None, report: AccessReport
) -> set[str]:
    """Check ``state/owners/``; return the model names that have an owners file."""
    named: set[str] = set()
    for entry in list_entries(data.owners, "state/owners", report):
        rel = f"state/owners/{entry}"
        if stray_file(rel, entry, "owners files are named <model-name>.json", report):
            continue
        stem = entry[: -len(".json")]
        try:
            name: str | None = model_name(stem)
        except BadRequest:
            name = None
        if name != stem:
            target = f"rename it to state/owners/{name}.json" if name else "delete it"
            report.errors.append(
                f"misnamed: {rel}: the registry reads owners only from "
                f"state/owners/<canonical name>.json, so this file has no effect: {target} "
                "(or merge it into that file if it exists)"
            )
            continue
        named.add(name)
        fix = (
            f"restore it from a backup, or delete it and run `modelpack-registry owners "
            f"add {name} USER --data {data.root}` for each owner"
        )
        doc, problem = load_json(data.owners / entry)
        lists, problems = _owner_lists(doc) if problem is None else ({}, [problem])
        if problems:
            report.errors.append(
                f"corrupt: {rel}: {'; '.join(problems)}. The registry reads it as "
                f"'no owners' (only admins may change {name}): {fix}"
            )
            continue
        owners, maintainers = lists.get("owners", []), lists.get("maintainers", [])
        twice = sorted({u for u in owners if owners.count(u) > 1}
                       | {u for u in maintainers if maintainers.count(u) > 1 or u in owners})  # fmt: skip
        if twice:
            report.warn(
                f"{rel}: {_are(twice)} listed more than once (the registry keeps the "
                f"first, an owner before a maintainer); `modelpack-registry owners add {name} "
                f"USER [--maintainer] --data {data.root}` for any user of it rewrites the file "
                "without repeats"
            )
        if users is not None:
            unknown = sorted({*owners, *maintainers} - users)
            if unknown:
                report.warn(
                    f"{rel}: {_are(unknown)} not in the htpasswd file, so cannot sign "
                    f"in: `modelpack-registry owners remove {name} USER --data {data.root}`"
                )
        if name not in published:
            report.warn(
                f"{rel}: {name} has no file in packages/. Fine for a name reserved with "
                "`owners add` before its first upload; otherwise its distributions are "
                "missing from this copy (restore packages/ from a backup) or the name is "
                "gone (delete the file)"
            )
    return named


# -- tokens ------------------------------------------------------------------------------
EXPIRY_WARNING = dt.timedelta(days=14)


def _days(left: dt.timedelta) -> str:
    if left < dt.timedelta(days=1):
        hours = max(1, round(left.total_seconds() / 3600))
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{left.days} day{'s' if left.days != 1 else ''}"


def _token_problems(doc: Any, token_id: str, folder: Path) -> list[str]:
    """What makes tokens.py refuse this token (never quoting a value)."""
    if not isinstance(doc, dict):
        return ["is not a JSON object"]
    missing = [f'"{k}"' for k in _TOKEN_FIELDS if not isinstance(doc.get(k), str)]
    if missing:
        return [f"has no string field {', '.join(missing)}"]
    problems = []
    if doc["id"] != token_id:
        if _ID_RE.match(doc["id"]) and (folder / f"{doc['id']}.json").exists():
            problems.append(
                f"duplicate id: its id field says {doc['id']}, which has its own file (this "
                "is a copy of it), so it is refused"
            )
        else:
            problems.append(
                "its id field is not its file name's, so it is refused (a renamed file?)"
            )
    try:
        canonical: str | None = model_name(doc["model"])
    except BadRequest:
        canonical = None
    if canonical != doc["model"]:
        problems.append("its model is not a canonical model name, so it matches no model")
    try:
        check_user(doc["user"])
    except BadRequest:
        problems.append("its user is not a valid user name")
    if not _SHA256_RE.match(doc["sha256"]):
        problems.append("its sha256 is not 64 lowercase hex digits, so no secret matches it")
    if _expiry(doc) is _BAD_EXPIRY:
        problems.append(
            'its "expires" is not an ISO 8601 time with a zone (2027-06-30T00:00:00Z) or null'
        )
    return problems


_BAD_EXPIRY = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def _expiry(doc: dict[str, Any]) -> dt.datetime | None:
    """The token's expiry, None for never, or ``_BAD_EXPIRY`` when it does not parse."""
    value = doc.get("expires")
    if value is None:
        return None
    try:
        return parse_time(value)
    except (ValueError, TypeError, AttributeError):
        return _BAD_EXPIRY


def _check_tokens(
    data: DataDir, models: set[str], users: frozenset[str] | None, report: AccessReport
) -> None:
    create = (
        "create a new one with `modelpack-registry tokens create --model MODEL --user USER "
        f"--data {data.root}`"
    )
    secrets_seen: dict[str, str] = {}  # sha256 -> token id; never printed
    now = dt.datetime.now(dt.timezone.utc)

    def create_for(doc: dict[str, Any]) -> str:
        return (
            f"create its successor with `modelpack-registry tokens create --model "
            f"{doc['model']} --user {doc['user']} --data {data.root}`"
        )

    exposed: list[str] = []
    for entry in list_entries(data.tokens, "state/tokens", report):
        rel = f"state/tokens/{entry}"
        if stray_file(rel, entry, "token files are named <16 hex digits>.json", report):
            continue
        path = data.tokens / entry
        token_id = entry[: -len(".json")]
        if _readable_by(path) is not None:
            exposed.append(token_id)
        if not _ID_RE.match(token_id):
            report.errors.append(
                f"misnamed: {rel}: the registry reads tokens only from "
                f"state/tokens/<16 lowercase hex digits>.json, so this token is refused: "
                f"delete it and {create}"
            )
            continue
        doc, problem = load_json(path)
        problems = _token_problems(doc, token_id, data.tokens) if problem is None else [problem]
        if problems:
            report.errors.append(
                f"corrupt: {rel}: {'; '.join(problems)}. Token {token_id} is refused "
                f"until fixed: restore the file from a backup, or delete it (`rm {path}`) "
                f"and {create}"
            )
            continue
        other = secrets_seen.setdefault(doc["sha256"], token_id)
        if other != token_id:
            report.errors.append(
                f"duplicate: {rel}: token {token_id} has the same secret as token {other} "
                "(a copied file), so revoking one leaves the other working: revoke both "
                f"(`modelpack-registry tokens revoke ID --data {data.root}`) and {create}"
            )
        revoke = f"`modelpack-registry tokens revoke {token_id} --data {data.root}`"
        if doc["model"] not in models:
            report.warn(
                f"{rel}: token {token_id} is for {doc['model']}, which has no file in "
                f"packages/ and no owners file (a first upload to come, or a model that is "
                f"gone: {revoke})"
            )
        if users is not None and doc["user"] not in users:
            report.warn(
                f"{rel}: token {token_id} acts as {doc['user']}, who is not in the "
                f"htpasswd file, so it is refused: {revoke}"
            )
        expires = _expiry(doc)
        if expires is not None and expires <= now:
            report.warn(
                f"{rel}: token {token_id} ({doc['user']} on {doc['model']}) expired at "
                f"{iso_utc(expires)}, so it is refused: {revoke}"
            )
        elif expires is not None and expires - now <= EXPIRY_WARNING:
            report.warn(
                f"{rel}: token {token_id} ({doc['user']} on {doc['model']}) expires at "
                f"{iso_utc(expires)}, in {_days(expires - now)}: {create_for(doc)}, put it "
                f"where CI reads it, then {revoke}"
            )
    if exposed:
        report.warn(
            f"state/tokens/: {len(exposed)} token file(s) readable by group or others "
            f"({some(exposed)}); they hold token hashes and who may publish what: "
            f"`chmod 600 {data.tokens}/*.json`"
        )
