"""Who may publish what: each model's owners and maintainers (``state/owners/<name>.json``).

::

    state/owners/<canonical-name>.json
        {"owners": ["alice"], "maintainers": ["bob"],
         "history": [{"user": "alice", "from": null, "to": "owner", "by": "alice",
                      "at": "2024-05-01T12:00:00Z"},
                     {"user": "bob", "from": null, "to": "maintainer", "by": "alice", ...}]}

``history`` says who changed whose role, and when: ``from``/``to`` are ``"owner"``,
``"maintainer"`` or null (none), ``by`` is the user who made the change through the API
or an upload, ``cli:<system user>`` for ``modelpack-registry owners`` (a name no
htpasswd user can have), or null for an anonymous registry. Files written before the
history existed start it at their next change.

The document is created by :meth:`DataDir.publish` for the first authenticated upload
of a name (its uploader becomes the only owner: :func:`owners_body`, written only if
absent, so of two first uploads through two replicas exactly one claims the name), or by
``modelpack-registry owners add`` and ``PUT /api/v1/models/<name>/owners/<user>``. Like
every ``state/`` document it changes by a conditional read-modify-write
(:func:`~modelpack_registry.storage.base.update_doc`: the write names the version it
read and is retried if another writer got in between), which needs no lock, so it holds
on a bucket as on a folder; each change bumps the generation. It is read fresh on every
write request, so a change made through one replica or the CLI holds on the next request
everywhere.

A model with distributions but no owners file (uploaded before ownership was recorded,
or anonymously) is *ownerless*: only admins may change it until someone is made its
owner. An unreadable or corrupt owners file counts as "no owners" (fail closed).
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from modelpack_registry.errors import BadRequest, Conflict, NotFound
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import keys, update_doc
from modelpack_registry.verify.maintenance import utc_now

__all__ = [
    "ROLES",
    "Owners",
    "check_user",
    "cli_actor",
    "has_distributions",
    "model_name",
    "owners_body",
    "parse_owners",
    "read_owners",
    "read_owners_file",
    "remove_user",
    "role_change",
    "set_role",
    "write_owners",
]

ROLES = ("owner", "maintainer")
_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_USER_RE = re.compile(r"^[^\s:/\\\x00-\x1f\x7f]{1,100}$")


def model_name(raw: str) -> str:
    """The canonical (PEP 503) form of a model name.

    :raises BadRequest: if it is not a valid distribution name.
    """
    name = canonicalize_name(raw.strip())
    if not _NAME_RE.match(name) or len(name) > 200:
        raise BadRequest(f"invalid model name {raw!r}: use letters, digits, '-', '_' and '.'")
    return name


def check_user(user: str) -> str:
    """Return ``user`` if it can be a user name (htpasswd's rules, plus no '/').

    :raises BadRequest: if it is empty, too long, or has a colon, space or control char.
    """
    if not _USER_RE.match(user) or user == "__token__":
        raise BadRequest(
            f"invalid user name {user!r}: 1 to 100 characters, no ':', '/', spaces or "
            "control characters"
        )
    return user


@dataclass(frozen=True)
class Owners:
    """The people who may change one model."""

    owners: tuple[str, ...] = ()
    maintainers: tuple[str, ...] = ()

    def role(self, user: str) -> str | None:
        """``"owner"``, ``"maintainer"`` or None."""
        if user in self.owners:
            return "owner"
        if user in self.maintainers:
            return "maintainer"
        return None

    def as_dict(self) -> dict[str, list[str]]:
        """The stored (and API) form."""
        return {"owners": list(self.owners), "maintainers": list(self.maintainers)}

    def describe(self, name: str) -> str:
        """``"model-foo is owned by alice and bob"`` for messages."""
        if not self.owners:
            return f"{name} has no owners"
        return f"{name} is owned by {_join(self.owners)}"


def _join(users: tuple[str, ...]) -> str:
    return users[0] if len(users) == 1 else ", ".join(users[:-1]) + " and " + users[-1]


def _users(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(str(v) for v in value if isinstance(v, str) and v))


def parse_owners(raw: bytes | None) -> tuple[Owners | None, list[dict[str, Any]]]:
    """An owners document's owners and role changes (oldest first).

    None (no document) gives ``(None, [])``; one that cannot be parsed gives
    ``(Owners(), [])`` (nobody but admins: fail closed).
    """
    if raw is None:
        return None, []
    try:
        doc: Any = json.loads(raw)
    except ValueError:
        return Owners(), []
    if not isinstance(doc, dict):
        return Owners(), []
    owners = _users(doc.get("owners"))
    maintainers = tuple(u for u in _users(doc.get("maintainers")) if u not in owners)
    history = doc.get("history")
    changes = [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []
    return Owners(owners, maintainers), changes


def read_owners_file(data: DataDir, name: str) -> tuple[Owners | None, list[dict[str, Any]]]:
    """The owners of ``name`` and its role changes (oldest first), in one read.

    No document gives ``(None, [])``; one that cannot be read or parsed gives
    ``(Owners(), [])`` (nobody but admins).
    """
    try:
        found = data.store.read_doc(keys.owners(name))
    except OSError:  # a folder's unreadable file; a bucket's errors are StorageErrors
        return Owners(), []
    return parse_owners(None if found is None else found[0])


def read_owners(data: DataDir, name: str) -> Owners | None:
    """The owners of ``name``; see :func:`read_owners_file`."""
    return read_owners_file(data, name)[0]


def cli_actor() -> str:
    """``by`` for a change made with ``modelpack-registry owners``: ``cli:<system user>``."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # a container uid with no passwd entry
        who = f"uid-{os.getuid()}"
    return f"cli:{who}"


def role_change(user: str, before: str | None, after: str | None, by: str | None,
                at: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One ``history`` entry (``at``: now, unless given)."""
    return {"user": user, "from": before, "to": after, "by": by, "at": at or utc_now()}


def owners_body(owners: Owners, history: list[dict[str, Any]]) -> bytes:
    """The owners document of ``owners`` with its whole ``history`` (the stored form).

    The first upload of a name writes ``owners_body(Owners(owners=(user,)),
    [role_change(user, None, "owner", user)])`` only if the document is absent.
    """
    return json.dumps({**owners.as_dict(), "history": history}, indent=1).encode() + b"\n"


def write_owners(data: DataDir, name: str, owners: Owners, history: list[dict[str, Any]]) -> None:
    """Write the owners document of ``name`` whatever it holds (no condition).

    Only for a writer that decided under a lock or knows the document is absent; every
    change of an existing document goes through :func:`set_role` or :func:`remove_user`.
    """
    data.store.write_doc(keys.owners(name), owners_body(owners, history))


def has_distributions(data: DataDir, name: str) -> bool:
    """True if ``packages/`` holds a file of project ``name``."""
    return any(found == name for _, found, _ in data.distributions())


def set_role(data: DataDir, name: str, user: str, role: str,
             by: str | None = None) -> tuple[Owners, list[dict[str, Any]]]:  # fmt: skip
    """Make ``user`` an owner or a maintainer of ``name`` (a conditional write, retried).

    ``by`` (who asked) goes into the file's history with the change. Returns the owners
    and the whole history as written (what ``GET .../owners`` would read right after).

    :raises BadRequest: unknown role or invalid user name.
    :raises Conflict: it would demote the last owner.
    """
    if role not in ROLES:
        raise BadRequest(f"invalid role {role!r}: use 'owner' or 'maintainer'")
    check_user(user)
    at = utc_now()

    def mutate(raw: bytes | None) -> bytes:
        found, history = parse_owners(raw)
        current = found or Owners()
        owners = [u for u in current.owners if u != user]
        maintainers = [u for u in current.maintainers if u != user]
        if role == "owner":
            owners.append(user)
        else:
            if current.owners and not owners:
                raise Conflict(_last_owner(name, user, "make them a maintainer"))
            maintainers.append(user)
        change = role_change(user, current.role(user), role, by, at)
        return owners_body(Owners(tuple(owners), tuple(maintainers)), [*history, change])

    return _update(data, name, mutate)


def remove_user(data: DataDir, name: str, user: str,
                by: str | None = None) -> tuple[Owners, list[dict[str, Any]]]:  # fmt: skip
    """Remove ``user`` from the owners and maintainers of ``name``.

    ``by`` (who asked) goes into the file's history with the change. Returns the owners
    and the whole history as written, like :func:`set_role`.

    :raises NotFound: ``user`` is neither.
    :raises Conflict: ``user`` is the last owner.
    """
    at = utc_now()

    def mutate(raw: bytes | None) -> bytes:
        current, history = parse_owners(raw)
        if current is None or current.role(user) is None:
            who = current.describe(name) if current else f"{name} has no owners file"
            raise NotFound(f"{user} is not an owner or maintainer of {name} ({who})")
        owners = tuple(u for u in current.owners if u != user)
        if current.owners and not owners:
            raise Conflict(_last_owner(name, user, "remove them"))
        result = Owners(owners, tuple(u for u in current.maintainers if u != user))
        change = role_change(user, current.role(user), None, by, at)
        return owners_body(result, [*history, change])

    return _update(data, name, mutate)


def _update(data: DataDir, name: str,
            mutate: Callable[[bytes | None], bytes]) -> tuple[Owners, list[dict[str, Any]]]:  # fmt: skip
    """Apply ``mutate`` to the owners document (retried if another writer got in between),
    bump the generation, and return what was written."""
    written = update_doc(data.store, keys.owners(name), mutate)
    data.bump_generation()
    owners, history = parse_owners(written)
    return owners or Owners(), history


def _last_owner(name: str, user: str, action: str) -> str:
    return (
        f"{user} is the last owner of {name}; add another owner first "
        f"(`modelpack-registry owners add {name} OTHER`), then {action}"
    )
