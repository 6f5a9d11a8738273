"""Make, list and revoke a model's API tokens for CI (``modelpack token``).

Only modelpack-registry has them, through its JSON API::

    POST   /api/v1/models/<name>/tokens        {"expires": "90d"}: the token, shown once
    GET    /api/v1/models/<name>/tokens        the ones you may see (never a secret)
    DELETE /api/v1/models/<name>/tokens/<id>

The registry decides who may: a model's owners and maintainers make tokens, with their
own user name and password (a token cannot make one); owners see and revoke all of the
model's tokens, everyone else their own; a token may revoke itself. A CI job then sends
a token as user ``__token__`` (``MODELPACK_USERNAME=__token__``).
"""

from __future__ import annotations

import re
from typing import Any

from packaging.utils import canonicalize_name

from modelpack.errors import ModelNotFoundError, RegistryError, UsageError
from modelpack.registry import api_call

__all__ = ["check_token_id", "create_token", "list_tokens", "revoke_token"]

_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_TOKEN_RE = re.compile(r"^mpk_([0-9a-f]{16})_")


def check_token_id(token_id: str) -> str:
    """Return ``token_id`` if it is a token's id (16 hex digits).

    :raises UsageError: anything else; a whole token is refused without repeating its secret.
    """
    value = token_id.strip()
    if _ID_RE.match(value):
        return value
    whole = _TOKEN_RE.match(value)
    if whole:
        raise UsageError(
            f"give the token's id ({whole.group(1)}), not the whole token: a command line is "
            "visible to every user through ps"
        )
    raise UsageError(
        f"{value[:40]!r} is not a token id: 16 hex digits, as `modelpack token list NAME` shows"
    )


_NEEDS = "API tokens need modelpack-registry. On another index, make tokens the way it does"


def _call(method: str, name: str, registry: str | None, path: str = "",
          body: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    # an unknown token id is a RegistryError; an unknown model is ModelNotFoundError
    return api_call(registry, method, f"models/{canonicalize_name(name)}/tokens{path}", body,
                    needs=_NEEDS, not_found=RegistryError if path else ModelNotFoundError)  # fmt: skip


def create_token(name: str, *, expires: str | None = None, user: str | None = None,
                 registry: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Make an API token for model *name*, acting as you (or as *user*: admins only).

    *expires*: a lifetime (``90d``, ``12h``), a UTC date (``2027-06-30``) or ``never``;
    the registry's default (a year) when None. The answer holds ``token``, the only
    copy of the secret, and ``id``, ``model``, ``user``, ``created``, ``expires``.

    :raises AuthenticationError: no or wrong credentials, an API token, or not an owner,
        maintainer or admin of the model (the message says who to ask).
    :raises ModelNotFoundError: the registry has no such model.
    :raises RegistryError: a bad *expires* or *user*, or a registry without tokens.
    """
    body = {k: v for k, v in (("expires", expires), ("user", user)) if v is not None}
    return _call("POST", name, registry, body=body)


def list_tokens(name: str, registry: str | None = None) -> list[dict[str, Any]]:
    """The tokens of model *name* that you may see (all of them if you own it), oldest
    first: ``id``, ``user``, ``created``, ``expires``, ``last_used``, ``expired``.

    :raises AuthenticationError: no or wrong credentials, or an API token.
    :raises ModelNotFoundError: the registry has no such model.
    """
    return list(_call("GET", name, registry)["tokens"])


def revoke_token(name: str, token_id: str, registry: str | None = None) -> dict[str, Any]:
    """Revoke token *token_id* of model *name*; its next request fails.

    :raises UsageError: *token_id* is not a token id.
    :raises AuthenticationError: someone else's token, and you are not an owner.
    :raises RegistryError: the model has no such token.
    """
    return _call("DELETE", name, registry, f"/{check_token_id(token_id)}")
