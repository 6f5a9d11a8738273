"""``verify``'s checks of ``state/tokens/`` (see :mod:`~modelpack_registry.access.tokens`).

A token file is an error when the server refuses the token for a reason other than its
being revoked: it does not parse, misses a field, has an id, model, user, sha256 or
expiry that can never match, or shares its secret with another file (a copy: revoking
one leaves the other working). A token for a model with no file, for a user not in the
htpasswd file, one that expired or expires within two weeks, one nobody has used for
90 days, and a token file others can read are warnings. No line holds a secret or a
stored sha256.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from modelpack_registry.access.owners import check_user, model_name
from modelpack_registry.access.tokens import FIELDS, ID_RE, parse_time
from modelpack_registry.errors import BadRequest
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import Store, keys
from modelpack_registry.verify.common import (
    Report,
    data_option,
    delete_command,
    list_entries,
    load_json,
    local_readable_by,
    some,
    stray_file,
)
from modelpack_registry.verify.maintenance import iso_utc

__all__ = ["EXPIRY_WARNING", "UNUSED_WARNING", "check_tokens"]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


EXPIRY_WARNING = dt.timedelta(days=14)
UNUSED_WARNING = dt.timedelta(days=90)


def _days(left: dt.timedelta) -> str:
    if left < dt.timedelta(days=1):
        hours = max(1, round(left.total_seconds() / 3600))
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{left.days} day{'s' if left.days != 1 else ''}"


def _token_problems(doc: Any, token_id: str, store: Store) -> list[str]:
    """What makes tokens.py refuse this token (never quoting a value)."""
    if not isinstance(doc, dict):
        return ["is not a JSON object"]
    missing = [f'"{k}"' for k in FIELDS if not isinstance(doc.get(k), str)]
    if missing:
        return [f"has no string field {', '.join(missing)}"]
    problems = []
    if doc["id"] != token_id:
        if ID_RE.match(doc["id"]) and store.stat(keys.token(doc["id"])) is not None:
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


def check_tokens(
    data: DataDir, models: set[str], users: frozenset[str] | None, report: Report
) -> None:
    where = data_option(data.store)
    create = (
        "create a new one with `modelpack-registry tokens create --model MODEL --user USER "
        f"{where}`"
    )
    secrets_seen: dict[str, str] = {}  # sha256 -> token id; never printed
    now = dt.datetime.now(dt.timezone.utc)

    def create_for(doc: dict[str, Any]) -> str:
        return (
            f"create its successor with `modelpack-registry tokens create --model "
            f"{doc['model']} --user {doc['user']} {where}` (or {doc['user']} "
            f"with `modelpack token create {doc['model']}`)"
        )

    exposed: list[str] = []
    for entry in list_entries(data.store, keys.TOKENS, report):
        rel = f"{keys.TOKENS}{entry}"
        if stray_file(rel, entry, "token files are named <16 hex digits>.json", report):
            continue
        token_id = entry[: -len(".json")]
        if local_readable_by(data.store, rel) is not None:
            exposed.append(token_id)
        if not ID_RE.match(token_id):
            report.errors.append(
                f"misnamed: {rel}: the registry reads tokens only from "
                f"state/tokens/<16 lowercase hex digits>.json, so this token is refused: "
                f"delete it and {create}"
            )
            continue
        doc, problem = load_json(data.store, rel)
        problems = _token_problems(doc, token_id, data.store) if problem is None else [problem]
        if problems:
            report.errors.append(
                f"corrupt: {rel}: {'; '.join(problems)}. Token {token_id} is refused "
                f"until fixed: restore the file from a backup, or delete it "
                f"(`{delete_command(data.store, rel)}`) "
                f"and {create}"
            )
            continue
        other = secrets_seen.setdefault(doc["sha256"], token_id)
        if other != token_id:
            report.errors.append(
                f"duplicate: {rel}: token {token_id} has the same secret as token {other} "
                "(a copied file), so revoking one leaves the other working: revoke both "
                f"(`modelpack-registry tokens revoke ID {where}`) and {create}"
            )
        revoke = f"`modelpack-registry tokens revoke {token_id} {where}`"
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
        else:
            _check_use(doc, rel, now, revoke, report)
    folder = data.store.local_path(keys.TOKENS.rstrip("/"))
    if exposed and folder is not None:
        report.warn(
            f"state/tokens/: {len(exposed)} token file(s) readable by group or others "
            f"({some(exposed)}); they hold token hashes and who may publish what: "
            f"`chmod 600 {folder}/*.json`"
        )


def _check_use(doc: dict[str, Any], rel: str, now: dt.datetime, revoke: str,
               report: Report) -> None:  # fmt: skip
    """Warn about a token nobody has used for ``UNUSED_WARNING``, or an unreadable date."""
    if "last_used" not in doc:
        return  # written before uses were recorded: unknown
    who = f"token {doc['id']} ({doc['user']} on {doc['model']})"
    used = doc["last_used"]
    if used is None:
        try:
            created = parse_time(doc["created"])
        except (ValueError, TypeError, AttributeError):
            return
        if now - created >= UNUSED_WARNING:
            report.warn(
                f"{rel}: {who} has never been used since it was made "
                f"{_days(now - created)} ago: if nothing needs it, {revoke}"
            )
        return
    try:
        last = parse_time(used)
    except (ValueError, TypeError, AttributeError):
        report.warn(
            f'{rel}: {who}: "last_used" is not a time, so when it was last used is lost '
            "(the token still works; its next use writes the date again)"
        )
        return
    if now - last >= UNUSED_WARNING:
        report.warn(
            f"{rel}: {who} was last used at {iso_utc(last)}, {_days(now - last)} ago: if "
            f"nothing needs it any more, {revoke}"
        )
