"""Self-service API tokens over HTTP, for the people who own a model::

    POST   /api/v1/models/<name>/tokens        {"expires": "90d", "user": "bob"} -> 201
    GET    /api/v1/models/<name>/tokens        the tokens the caller may see
    DELETE /api/v1/models/<name>/tokens/<id>   revoke one

Who may (on top of :mod:`modelpack_registry.access.policy`)::

    create    owners, maintainers and admins of the model, for themselves;
              for another user ("user"): admins only
    list      owners and admins: every token of the model; anyone else: their own
    revoke    owners and admins: any token of the model; anyone else: their own

Every request here must be authenticated by a password, except one: a token may revoke
itself (a CI job retiring its token, or whoever finds a leaked one killing it). A token
can neither create a token (a leaked token must not mint more that outlive its
revocation) nor see or revoke others. As for owners, the model must be known (files or
an owners file) unless the caller is an admin, who may make a token for a first upload.
An id of another model's token is answered like an unknown one (404).

A registry without ``--htpasswd`` refuses all three with 409: nobody is authenticated
there, so a token would act as nobody and nothing would ever check it. (Owners, which
are stored for later, may be changed there by anyone, like everything else.)

Tokens are made, listed and revoked by :mod:`modelpack_registry.access.tokens`, like the server
CLI does, and never shown again after the creation's answer: no secret, no sha256.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from modelpack_registry.access.owners import check_user, read_owners
from modelpack_registry.access.policy import Access, Principal
from modelpack_registry.access.tokens import (
    DEFAULT_EXPIRY,
    Token,
    create_token,
    get_token,
    list_tokens,
    revoke_token,
)
from modelpack_registry.errors import BadRequest, Conflict, Forbidden, NotFound

__all__ = ["caller", "create", "listing", "revoke"]

log = logging.getLogger(__name__)

_SIGN_IN = "use your user name and password, not __token__ and a token"


def caller(environ: dict[str, Any], access: Access) -> Principal:
    """Who asks to manage tokens.

    :raises Conflict: the registry has no credentials (no tokens there).
    :raises Unauthorized: no credentials sent.
    :raises Forbidden: wrong credentials.
    """
    who = access.authenticate(environ, "to manage API tokens")
    if who is None:
        raise Conflict(
            "API tokens need a registry with credentials: this one runs without "
            "--htpasswd, so every request is anonymous and no token would ever be checked. "
            "Serve it with --htpasswd FILE to use tokens"
        )
    return who


def create(access: Access, who: Principal, name: str, known: bool,
           body: Callable[[], dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """Make a token for ``name``, acting as the caller (or as ``user``, admins only).

    ``known``: the model has files or an owners file. ``body`` reads the request's JSON
    object; it is read only once the caller may create tokens.

    :raises Forbidden: an API token, not an owner/maintainer/admin, another user.
    :raises NotFound: an unknown model (for anyone but an admin).
    :raises BadRequest: a bad ``expires`` (the CLI's message) or ``user``.
    """
    if who.token_id is not None:
        raise Forbidden(
            "an API token cannot create API tokens (a leaked one must not be able to make "
            f"more); {_SIGN_IN}"
        )
    if not known and not who.admin:
        raise NotFound(
            f"no model named {name!r} in this registry; publish it first (its first upload "
            "makes you its owner), or ask an admin to make a token for a first upload"
        )
    access.authorize(who, name, "create API tokens for")
    doc = body()
    expires = DEFAULT_EXPIRY if doc.get("expires") is None else doc["expires"]
    if not isinstance(expires, str):
        raise BadRequest('send the expiry as a string: {"expires": "90d"}, "2027-06-30" or "never"')
    user = who.user if doc.get("user") is None else doc["user"]
    if not isinstance(user, str):
        raise BadRequest('send the user as a string: {"user": "bob"}')
    if user != who.user:
        if not who.admin:
            raise Forbidden(
                f"only an admin may create a token for another user ({user}); leave out "
                f'"user" to create one acting as yourself ({who.user})'
            )
        check_user(user)
        if access.htpasswd is not None and not access.htpasswd.has_user(user):
            raise BadRequest(f"no user {user!r} in this registry's htpasswd file")
    token, text = create_token(access.data, name, user, expires)
    log.info("API token %s created for %s on %s by %s", token.id, user, name, who.user)
    return {"token": text, "id": token.id, "model": token.model, "user": token.user,
            "created": token.created, "expires": token.expires}  # fmt: skip


def listing(access: Access, who: Principal, name: str, known: bool) -> dict[str, Any]:
    """The tokens of ``name`` that ``who`` may see: all for owners and admins, else theirs.

    :raises Forbidden: an API token.
    :raises NotFound: an unknown model with no tokens.
    """
    if who.token_id is not None:
        raise Forbidden(f"an API token cannot list API tokens; {_SIGN_IN}")
    tokens = list_tokens(access.data, name)
    if not known and not tokens:
        raise NotFound(f"no model named {name!r} in this registry, and no token for it")
    if not _manages(access, who, name):
        tokens = [t for t in tokens if t.user == who.user]
    return {"tokens": [_public(t) for t in tokens]}


def revoke(access: Access, who: Principal, name: str, token_id: str) -> dict[str, Any]:
    """Delete token ``token_id`` of ``name``.

    :raises Forbidden: a token revoking another; someone else's token, unless an owner
        or admin asks.
    :raises NotFound: no such token, or it is another model's.
    """
    if who.token_id is not None and who.token_id != token_id:
        raise Forbidden(f"an API token may revoke only itself; to revoke another, {_SIGN_IN}")
    unknown = NotFound(
        f"{name} has no API token with id {token_id!r}; `modelpack token list {name}` "
        "shows the ones you may revoke"
    )
    token = get_token(access.data, token_id)
    if token is None or token.model != name:
        raise unknown
    if token.user != who.user and not _manages(access, who, name):
        raise Forbidden(
            f"token {token_id} acts as {token.user}; only {token.user}, an owner of {name} "
            "or an admin may revoke it"
        )
    try:
        revoke_token(access.data, token_id)
    except NotFound:  # revoked meanwhile
        raise unknown from None
    log.info("API token %s (%s on %s) revoked by %s", token_id, token.user, name, who.user)
    return {"id": token.id, "model": token.model, "user": token.user, "revoked": True}


def _manages(access: Access, who: Principal, name: str) -> bool:
    """True when ``who`` may see and revoke every token of ``name``: owners and admins."""
    if who.admin:
        return True
    owners = read_owners(access.data, name)
    return owners is not None and owners.role(who.user) == "owner"


def _public(token: Token) -> dict[str, Any]:
    """What the API shows of a token: never its secret or sha256."""
    return {"id": token.id, "user": token.user, "created": token.created,
            "expires": token.expires, "last_used": token.last_used_at,
            "expired": token.expired()}  # fmt: skip
