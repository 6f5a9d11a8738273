"""Who is asking and what they may do: authentication and per-model authorization.

Rules (enforced only when the registry has credentials, i.e. ``--htpasswd``)::

    read (GET/HEAD)     anyone; with --protect-reads valid credentials (not /health)
    upload a new name   any authenticated user; they become its only owner
    upload, yank,       owners and maintainers of the model, and admins
      promote
    change owners       owners of the model and admins (not with an API token)
    ownerless model     (files but no owners file) admins only, until someone is
                        made an owner (``owners add`` or the owners API)

Admins are the ``--admin USER`` names. An API token (Basic user ``__token__``) acts as
its user, on its model only. Without ``--htpasswd`` nobody is authenticated and nothing
is checked (the server refuses to listen beyond loopback that way unless ``--insecure``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from modelpack_registry.access.auth import Htpasswd, basic_credentials, challenge
from modelpack_registry.access.owners import (
    Owners,
    has_distributions,
    read_owners,
    role_change,
)
from modelpack_registry.access.tokens import TOKEN_USER, record_use, verify_token
from modelpack_registry.errors import Forbidden, Unauthorized
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import NEW, AlreadyExists, keys

__all__ = ["Access", "Principal", "UploadGuard"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    user: str
    admin: bool = False
    token_model: str | None = None  # set when authenticated by an API token
    token_id: str | None = None


class Access:
    """The access policy of one server process."""

    def __init__(self, data: DataDir, htpasswd: Htpasswd | None = None,
                 admins: Iterable[str] = (), protect_reads: bool = False) -> None:  # fmt: skip
        self.data = data
        self.htpasswd = htpasswd
        self.admins = frozenset(admins)
        self.protect_reads = protect_reads

    @property
    def enforced(self) -> bool:
        """True when the registry has credentials (and so ownership is checked)."""
        return self.htpasswd is not None

    def authenticate(self, environ: dict[str, Any], purpose: str) -> Principal | None:
        """The caller, or None when the registry has no credentials.

        :raises Unauthorized: no (or malformed) Basic credentials.
        :raises Forbidden: wrong password, or an invalid, revoked, expired or orphaned token.
        """
        if self.htpasswd is None:
            return None
        credentials = basic_credentials(environ)
        if credentials is None:
            raise Unauthorized(
                f"this registry needs credentials {purpose}: send HTTP Basic auth "
                "(modelpack reads MODELPACK_USERNAME / MODELPACK_PASSWORD; twine "
                "TWINE_USERNAME / TWINE_PASSWORD; pip https://USER:PASSWORD@host/simple/)",
                challenge(),
            )
        user, password = credentials
        if user == TOKEN_USER:
            token = verify_token(self.data, password)
            if token is None:
                raise Forbidden("invalid or revoked API token")
            if token.expired():
                raise Forbidden(
                    f"API token {token.id} ({token.user} on {token.model}) expired at "
                    f"{token.expires}: make a new one with your password (`modelpack token "
                    f"create {token.model}`), or ask a registry admin (`modelpack-registry "
                    f"tokens create --model {token.model} --user {token.user}`)"
                )
            if not self.htpasswd.has_user(token.user):
                raise Forbidden(f"API token {token.id}: its user {token.user!r} no longer exists")
            record_use(self.data, token)
            return Principal(token.user, token.user in self.admins, token.model, token.id)
        if not self.htpasswd.verify(user, password):
            raise Forbidden(f"wrong user name or password for user {user!r}")
        return Principal(user, user in self.admins)

    def check_read(self, environ: dict[str, Any]) -> None:
        """With ``--protect-reads``, require valid credentials.

        :raises Unauthorized: see :meth:`authenticate`.
        :raises Forbidden: see :meth:`authenticate`.
        """
        if self.protect_reads:
            self.authenticate(environ, "to read")

    def authorize(self, who: Principal | None, name: str, action: str) -> None:
        """Allow ``who`` to ``action`` (e.g. "promote") model ``name``, or raise.

        :raises Forbidden: with who to ask.
        """
        if who is None:
            return
        _check_scope(who, name, action)
        if who.admin:
            return
        owners = read_owners(self.data, name)
        if owners is not None and owners.role(who.user) is not None:
            return
        if owners is None or not owners.owners:
            raise Forbidden(_ownerless(name, who.user, action))
        raise Forbidden(_not_yours(name, owners, who.user, action))

    def authorize_owners_change(self, who: Principal | None, name: str) -> None:
        """Allow ``who`` to change the owners of ``name``, or raise.

        :raises Forbidden: tokens, maintainers and everyone but owners and admins.
        """
        if who is None:
            return
        if who.token_model is not None:
            raise Forbidden("API tokens cannot change owners; use your user name and password")
        if who.admin:
            return
        owners = read_owners(self.data, name)
        if owners is None or not owners.owners:
            raise Forbidden(_ownerless(name, who.user, "change the owners of"))
        if owners.role(who.user) != "owner":
            raise Forbidden(
                f"{owners.describe(name)}; only its owners or an admin may change its "
                "owners and maintainers"
            )

    def upload_data(self, who: Principal | None) -> DataDir:
        """The data folder an upload by ``who`` publishes into."""
        return self.data if who is None else self.data.guarded(UploadGuard(who))


class UploadGuard:
    """:class:`~modelpack_registry.storage.PublishGuard` for one authenticated upload."""

    def __init__(self, who: Principal) -> None:
        self.who = who

    def authorize_publish(self, data: DataDir, name: str) -> Callable[[], str | None] | None:
        """Refuse, allow, or (for a new name) return the action that claims it.

        The action creates ``state/owners/<name>.json`` only if absent: of two first
        uploads of one name through two servers, one creates it and the other, finding
        it, is judged again against it (refused unless an admin). It returns the
        version of the document it created, so that a failed publish can remove it.

        :raises Forbidden: not an owner/maintainer/admin, wrong token, ownerless model.
        """
        if not self._may_publish(data, name):
            return None
        user = self.who.user

        def claim() -> str | None:
            first = role_change(user, None, "owner", user)  # the first upload
            doc = {**Owners(owners=(user,)).as_dict(), "history": [first]}
            body = json.dumps(doc, indent=1).encode() + b"\n"  # as owners.write_owners
            try:
                return data.store.write_doc(keys.owners(name), body, expect=NEW)
            except AlreadyExists:
                self._may_publish(data, name)  # another first uploader won: 403 unless allowed
                return None

        return claim

    def check_publish(self, data: DataDir, name: str) -> None:
        """Refuse now what :meth:`authorize_publish` would refuse, claiming nothing.

        Read-only: it lets an upload be refused before its body arrives. The decision
        that counts is still :meth:`authorize_publish`'s, when publishing.

        :raises Forbidden: as :meth:`authorize_publish`.
        """
        self._may_publish(data, name)

    def _may_publish(self, data: DataDir, name: str) -> bool:
        """The rules of both: allow (True when ``name`` is new: the uploader claims it).

        :raises Forbidden: not an owner/maintainer/admin, wrong token, ownerless model.
        """
        who = self.who
        _check_scope(who, name, "upload")
        owners = read_owners(data, name)
        if owners is None:
            if has_distributions(data, name):
                if who.admin:
                    return False  # an admin may publish; ownership stays unassigned
                raise Forbidden(_ownerless(name, who.user, "upload"))
            return True
        if who.admin or owners.role(who.user) is not None:
            return False
        if not owners.owners:
            raise Forbidden(_ownerless(name, who.user, "upload"))
        raise Forbidden(_not_yours(name, owners, who.user, "upload"))


def _check_scope(who: Principal, name: str, action: str) -> None:
    if who.token_model is not None and who.token_model != name:
        raise Forbidden(
            f"this API token ({who.token_id}) is for {who.token_model} only; it cannot "
            f"{action} {name}"
        )


def _not_yours(name: str, owners: Owners, user: str, action: str) -> str:
    return (
        f"{owners.describe(name)}; {user} may not {action} it. Ask an owner to run "
        f"`modelpack-registry owners add {name} {user} --maintainer` or use the API "
        f'(PUT /api/v1/models/{name}/owners/{user} with {{"role": "maintainer"}})'
    )


def _ownerless(name: str, user: str, action: str) -> str:
    return (
        f"{name} has no owners (it was published before ownership was recorded, or "
        f"anonymously), so only an admin may {action} it. Ask an admin to run "
        f"`modelpack-registry owners add {name} {user}` or use the API "
        f"(PUT /api/v1/models/{name}/owners/{user})"
    )
