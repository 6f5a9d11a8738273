"""``verify``'s checks of the access files: owners, API tokens and (if given) htpasswd.

:func:`verify_access` reads ``state/owners/``, ``state/tokens/`` and the htpasswd file
the way :mod:`~modelpack_registry.access.owners`, :mod:`~modelpack_registry.access.tokens` and
:mod:`~modelpack_registry.access.auth` read them, and reports, one line each::

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
             a token that has expired, expires within two weeks, or nobody used for
             90 days
             with --htpasswd: owners or tokens naming a user who is not in it; models
             with files but no owners file (admins only); an htpasswd file with no users
             a user listed twice in one owners file, or its history unreadable; a
             leftover temp file or a stray file in state/owners/ or state/tokens/
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
malformed entries of a file are named by position, never quoted. The token checks are in
:mod:`~modelpack_registry.verify.tokens`, what they share in
:mod:`~modelpack_registry.verify.common`.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from modelpack_registry.access.auth import Htpasswd
from modelpack_registry.access.owners import check_user
from modelpack_registry.errors import BadRequest, ConfigError
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import keys
from modelpack_registry.verify.common import (
    Report,
    are,
    data_option,
    file_readable_by,
    load_json,
    model_files,
    published_names,
    some,
)
from modelpack_registry.verify.tokens import check_tokens

__all__ = ["verify_access"]

_OWNER_KEYS = ("owners", "maintainers")


def verify_access(data: DataDir, htpasswd: Path | None = None) -> Report:
    """Check the owners and token files of ``data`` and, if given, the htpasswd file.

    With ``htpasswd``, owners and tokens are also checked against its users. Nothing is
    changed.
    """
    report = Report()
    users = _check_htpasswd(Path(htpasswd), report) if htpasswd is not None else None
    published = published_names(data)
    owned = _check_owners(data, published, users, report)
    check_tokens(data, published | owned, users, report)
    if users is not None:
        ownerless = sorted(published - owned)
        if ownerless:
            report.warn(
                f"{len(ownerless)} model(s) have files but no owners file, so only admins "
                f"may upload, yank or promote them ({some(ownerless)}): if state/owners/ "
                "was lost, restore it from a backup; else run `modelpack-registry owners "
                f"add NAME USER {data_option(data.store)}`"
            )
    return report


# -- htpasswd ----------------------------------------------------------------------------
def _check_htpasswd(path: Path, report: Report) -> frozenset[str] | None:
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
    who = file_readable_by(path)
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
        '"owners" and "maintainers", and keeps "history")'
        for key in doc
        if key not in (*_OWNER_KEYS, "history")
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
    data: DataDir, published: set[str], users: frozenset[str] | None, report: Report
) -> set[str]:
    """Check ``state/owners/``; return the model names that have an owners file."""
    named: set[str] = set()
    where = data_option(data.store)
    for rel, name in model_files(
        data.store,
        keys.OWNERS,
        report,
        kind="owners files",
        what="owners",
        effect="this file has no effect",
        also=" (or merge it into that file if it exists)",
    ):
        named.add(name)
        fix = (
            f"restore it from a backup, or delete it and run `modelpack-registry owners "
            f"add {name} USER {where}` for each owner"
        )
        doc, problem = load_json(data.store, rel)
        lists, problems = _owner_lists(doc) if problem is None else ({}, [problem])
        if problems:
            report.errors.append(
                f"corrupt: {rel}: {'; '.join(problems)}. The registry reads it as "
                f"'no owners' (only admins may change {name}): {fix}"
            )
            continue
        history = doc.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            report.warn(
                f'{rel}: "history" is not a list of changes, so who changed the owners of '
                f"{name}, and when, is lost (access is not affected); the next change "
                "starts a new history: restore the file from a backup to keep the old one"
            )
        owners, maintainers = lists.get("owners", []), lists.get("maintainers", [])
        twice = sorted({u for u in owners if owners.count(u) > 1}
                       | {u for u in maintainers if maintainers.count(u) > 1 or u in owners})  # fmt: skip
        if twice:
            report.warn(
                f"{rel}: {are(twice)} listed more than once (the registry keeps the "
                f"first, an owner before a maintainer); `modelpack-registry owners add {name} "
                f"USER [--maintainer] {where}` for any user of it rewrites the file "
                "without repeats"
            )
        if users is not None:
            unknown = sorted({*owners, *maintainers} - users)
            if unknown:
                report.warn(
                    f"{rel}: {are(unknown)} not in the htpasswd file, so cannot sign "
                    f"in: `modelpack-registry owners remove {name} USER {where}`"
                )
        if name not in published:
            report.warn(
                f"{rel}: {name} has no file in packages/. Fine for a name reserved with "
                "`owners add` before its first upload; otherwise its distributions are "
                "missing from this copy (restore packages/ from a backup) or the name is "
                "gone (delete the file)"
            )
    return named
