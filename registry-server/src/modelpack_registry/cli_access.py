"""``modelpack-registry owners ...`` and ``tokens ...``: access control on the data folder.

These work on the store directly (the server need not run, and replicas see the change
at their next request): every change is a conditional write of a ``state/`` document
(retried if a server changed it meanwhile) and bumps the generation, exactly as the
HTTP API does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack_registry.errors import RegistryError

__all__ = ["ACCESS_COMMANDS", "add_access_commands", "check_data", "open_data"]

if TYPE_CHECKING:
    from modelpack_registry.storage import DataDir


def check_data(path: Path) -> None:
    """:raises RegistryError: if ``path`` is not a data folder."""
    if not (path / "packages").is_dir():
        raise RegistryError(f"{path} is not a registry data folder (no packages/ in it)")


def open_data(args: argparse.Namespace) -> DataDir:
    """The registry data a command's ``--data`` (checked to be one) or ``--storage`` names
    (``args.location``, resolved by :mod:`modelpack_registry.cli`)."""
    from modelpack_registry.storage import DataDir

    location = getattr(args, "location", None)
    if location is not None and location.folder is None:
        from modelpack_registry.storage.location import open_data as open_location

        return open_location(location)
    check_data(args.data)
    return DataDir(args.data)


def add_access_commands(sub: Any, data_help: str) -> None:
    """Add ``owners`` and ``tokens`` to the ``modelpack-registry`` sub-parsers."""
    from modelpack_registry.access.tokens import DEFAULT_EXPIRY

    def data_option(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data", type=Path, default=Path("registry-data"), help=data_help)
        return p

    owners = sub.add_parser("owners", help="who may publish, yank and promote a model")
    osub = owners.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = data_option(osub.add_parser("list", help="show a model's owners and maintainers"))
    listing.add_argument("--history", action="store_true",
                         help="also who changed whose role, and when")  # fmt: skip
    add = data_option(osub.add_parser("add", help="make USER an owner (or a maintainer)"))
    add.add_argument("--maintainer", action="store_true",
                     help="upload, yank and promote only; cannot change owners")  # fmt: skip
    data_option(osub.add_parser("remove", help="remove USER (never the last owner)"))
    for name, p in osub.choices.items():
        p.add_argument("name", metavar="NAME", help="the model (distribution) name")
        if name != "list":
            p.add_argument("user", metavar="USER", help="a user of the htpasswd file")

    tokens = sub.add_parser("tokens", help="API tokens for CI, each for one model")
    tsub = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = data_option(tsub.add_parser("create", help="create a token; prints it once"))
    create.add_argument("--model", required=True, help="the only model it may change")
    create.add_argument("--user", required=True, help="the user it acts as")
    create.add_argument(
        "--expires",
        default=DEFAULT_EXPIRY,
        metavar="WHEN",
        help="a lifetime (90d, 12h), a UTC date (2027-06-30) or never (default: %(default)s)",
    )
    data_option(tsub.add_parser("list", help="list tokens (never their secrets)"))
    revoke = data_option(tsub.add_parser("revoke", help="delete a token (next request fails)"))
    revoke.add_argument("id", metavar="ID", help="the token id (tokens list)")


def _owners(args: argparse.Namespace) -> int:
    from modelpack_registry.access.owners import (
        cli_actor,
        model_name,
        read_owners_file,
        remove_user,
        set_role,
    )

    data = open_data(args)
    name = model_name(args.name)
    if args.action == "add":
        role = "maintainer" if args.maintainer else "owner"
        set_role(data, name, args.user, role, cli_actor())
        print(f"{args.user} is now {'a maintainer' if args.maintainer else 'an owner'} of {name}")
    elif args.action == "remove":
        remove_user(data, name, args.user, cli_actor())
        print(f"{args.user} removed from {name}")
    owners, history = read_owners_file(data, name)
    if owners is None:
        print(
            f"{name} has no owners: only admins may change it "
            f"(`modelpack-registry owners add {name} USER`)"
        )
        return 0
    if args.action == "list":
        print(name)
        for user in owners.owners:
            print(f"  owner       {user}")
        for user in owners.maintainers:
            print(f"  maintainer  {user}")
        if args.history:
            print("history")
            for change in history:
                print(
                    f"  {change.get('at')}  {change.get('user')}: {change.get('from') or 'none'}"
                    f" -> {change.get('to') or 'none'}  by {change.get('by') or 'anonymous'}"
                )
    return 0


def _tokens(args: argparse.Namespace) -> int:
    from modelpack_registry.access.tokens import create_token, list_tokens, revoke_token

    data = open_data(args)
    if args.action == "create":
        token, text = create_token(data, args.model, args.user, args.expires)
        print(text)
        print(
            f"token {token.id}: acts as {token.user} on {token.model} only, "
            f"{'never expires' if token.expires is None else 'expires at ' + token.expires}. "
            "It is shown once: store it as a CI secret and send it as user __token__ "
            "(TWINE_USERNAME=__token__ / MODELPACK_USERNAME=__token__).",
            file=sys.stderr,
        )
    elif args.action == "list":
        found = list_tokens(data)
        if not found:
            print("no tokens")
        for t in found:
            expires = "never" if t.expires is None else t.expires
            used = "-" if t.last_used is None else t.last_used  # "-": not recorded
            print(
                f"{t.id}  {t.model}  {t.user}  {t.created}  expires {expires}  "
                f"last used {used}" + ("  (expired)" if t.expired() else "")
            )
    else:
        token = revoke_token(data, args.id)
        print(f"revoked token {token.id} ({token.user} on {token.model})")
    return 0


ACCESS_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "owners": _owners,
    "tokens": _tokens,
}
