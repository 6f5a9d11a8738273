"""API tokens for CI: one model, one user, stored hashed (``state/tokens/<id>.json``).

A token reads ``mpk_<id>_<secret>``: ``id`` is 16 hex digits (not secret; it names the
file), ``secret`` is ``secrets.token_urlsafe(32)`` (256 bits). Only the sha256 of the
secret is stored::

    state/tokens/<id>.json  {"id": "...", "model": "model-foo", "user": "alice",
                             "created": "2024-05-01T12:00:00Z", "sha256": "<hex>",
                             "expires": "2025-05-01T12:00:00Z",
                             "last_used": "2024-06-01T09:00:00Z"}

so the store holds nothing that can be replayed, and a plain sha256 is enough (the
secret has full entropy: nothing to brute-force, unlike a password). Token documents
are still written private (in a folder: 0600, in a 0700 folder when this creates it),
and ``modelpack-registry verify`` warns about a token file that its group or others can
read. A client sends it as HTTP Basic user ``__token__`` and the token as password (what
twine sends for PyPI tokens). The document is read on every request that presents the
token, so ``tokens revoke`` (a conditional delete) holds on the next request in every
process. Digests are compared with :func:`hmac.compare_digest`. A token is created only
if its id is new, and changed only by conditional writes
(:func:`~modelpack_registry.storage.base.update_doc`), so no lock is needed: the same
holds on a bucket as on a folder.

A token expires (``tokens create --expires``, a year by default; ``never`` on purpose):
past ``expires`` the server refuses it, saying so, and ``verify`` warns two weeks ahead.
A file without ``expires`` (written before tokens expired) never expires; one whose
``expires`` does not parse is refused, like any damaged token file.

``last_used`` is when the token last authenticated a request, to the hour: a request
rewrites the document (a conditional write) only when the stored time is an hour old or more, so
a busy CI token costs one write an hour, not one per request. null: never used; absent:
a file from before this was recorded. A failed write is logged and never fails the
request. It is what ``tokens list`` and ``verify`` use to point at tokens nobody uses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any

from modelpack_registry.access.owners import check_user, model_name
from modelpack_registry.errors import BadRequest, NotFound, StorageError
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import NEW, AlreadyExists, keys, update_doc
from modelpack_registry.verify.maintenance import iso_utc, utc_now

__all__ = [
    "DEFAULT_EXPIRY",
    "FIELDS",
    "ID_RE",
    "TOKEN_USER",
    "Token",
    "create_token",
    "get_token",
    "list_tokens",
    "parse_expiry",
    "parse_time",
    "parse_token",
    "record_use",
    "revoke_token",
    "verify_token",
]

TOKEN_USER = "__token__"  # noqa: S105 (the Basic user name twine sends with a token)
ID_RE = re.compile(r"^[0-9a-f]{16}$")  # a token id, and its file name
FIELDS = ("id", "model", "user", "created", "sha256")  # what every token file has
_TOKEN_RE = re.compile(r"^mpk_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})$")
DEFAULT_EXPIRY = "365d"
_DURATION_RE = re.compile(r"^([1-9][0-9]{0,5})([dh])$")
_MAX_LIFETIME = dt.timedelta(days=3660)  # ten years; longer is `never`, said on purpose
USE_RESOLUTION = dt.timedelta(hours=1)  # last_used is rewritten at most this often
_NEVER = "never"  # in memory only: the file says null (never used) vs no key (unknown)

log = logging.getLogger(__name__)
_failed: dict[str, dt.datetime] = {}  # token id -> when recording its use last failed
_failed_lock = threading.Lock()


@dataclass(frozen=True)
class Token:
    """A stored token (never its secret)."""

    id: str
    model: str
    user: str
    created: str
    sha256: str
    expires: str | None = None  # ISO 8601 UTC; None: never
    last_used: str | None = None  # ISO 8601 UTC; "never"; None: not recorded (older file)

    @property
    def last_used_at(self) -> str | None:
        """When it was last used; None if never, or not recorded (an older file)."""
        return None if self.last_used == _NEVER else self.last_used

    def expired(self, now: dt.datetime | None = None) -> bool:
        """True once ``expires`` has passed."""
        if self.expires is None:
            return False
        return (now or dt.datetime.now(dt.timezone.utc)) >= parse_time(self.expires)


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time with a zone (``...Z``) as an aware datetime.

    :raises ValueError: not such a time.
    """
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """When a token made ``now`` with ``--expires text`` expires; None for ``never``.

    ``text`` is a lifetime (``90d``, ``12h``), a UTC date (``2027-06-30``: the start of
    that day) or ``never``.

    :raises BadRequest: anything else, a time already past, or beyond ten years.
    """
    now = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    value = text.strip().lower()
    if value == "never":
        return None
    usage = (
        f"invalid --expires {text!r}: give a lifetime such as 90d or 12h, a UTC date such "
        "as 2027-06-30, or never"
    )
    match = _DURATION_RE.match(value)
    if match:
        count, unit = int(match.group(1)), match.group(2)
        try:
            when = now + (dt.timedelta(days=count) if unit == "d" else dt.timedelta(hours=count))
        except OverflowError:
            raise BadRequest(usage) from None
    else:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise BadRequest(usage) from None
        when = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        if when <= now:
            raise BadRequest(
                f"--expires {text}: that day has begun already (UTC); give a later one"
            )
    if when - now > _MAX_LIFETIME:
        raise BadRequest(
            f"--expires {text}: more than ten years; say --expires never for a token that "
            "does not expire"
        )
    return when


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    data: DataDir, model: str, user: str, expires: str = DEFAULT_EXPIRY
) -> tuple[Token, str]:
    """Create a token for ``user`` on ``model``; return it and the full token text.

    The text is shown once: only its hash is kept. ``expires``: see :func:`parse_expiry`.

    :raises BadRequest: invalid model or user name, or ``expires``.
    """
    name = model_name(model)
    check_user(user)
    when = parse_expiry(expires)
    secret = secrets.token_urlsafe(32)
    for _ in range(5):  # a repeated random id: 1 in 2**64, but never overwrite a token
        token_id = secrets.token_hex(8)
        token = Token(
            token_id,
            name,
            user,
            utc_now(),
            _digest(secret),
            None if when is None else iso_utc(when),
            _NEVER,
        )
        try:
            data.store.write_doc(keys.token(token_id), _body(token), expect=NEW, private=True)
        except AlreadyExists:
            continue
        data.bump_generation()
        return token, f"mpk_{token_id}_{secret}"
    raise StorageError("could not find an unused token id; try again")


def _body(token: Token) -> bytes:
    """A token's document (owner-only when written: the hash cannot be replayed, but
    ``verify`` holds token files to the rule for files with hashes in them)."""
    doc: dict[str, Any] = asdict(token)
    if token.last_used is None:
        del doc["last_used"]  # not recorded: keep it absent
    elif token.last_used == _NEVER:
        doc["last_used"] = None
    return json.dumps(doc, indent=1).encode() + b"\n"


def parse_token(raw: bytes, token_id: str) -> Token | None:
    """The token a stored document holds; None if it is damaged or not ``token_id``'s."""
    try:
        doc: Any = json.loads(raw)
        token = Token(*(str(doc[k]) for k in FIELDS))
        expires = doc.get("expires")
        if expires is not None:
            # a damaged expiry refuses the token rather than letting it live forever
            token = replace(token, expires=iso_utc(parse_time(expires)))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if "last_used" in doc:  # a damaged one is only a lost date: never refuses the token
        used = doc["last_used"]
        try:
            last = _NEVER if used is None else iso_utc(parse_time(used))
        except (ValueError, TypeError, AttributeError):
            last = None
        token = replace(token, last_used=last)
    return token if token.id == token_id else None


def get_token(data: DataDir, token_id: str) -> Token | None:
    """The stored token ``token_id``; None when there is none (or its document is damaged)."""
    if not ID_RE.match(token_id):
        return None
    try:
        found = data.store.read_doc(keys.token(token_id))
    except OSError:
        return None
    return None if found is None else parse_token(found[0], token_id)


def list_tokens(data: DataDir, model: str | None = None) -> list[Token]:
    """Every stored token (of ``model`` only, when given), oldest first."""
    try:
        entries = [key[len(keys.TOKENS) :] for key in data.store.iter_keys(keys.TOKENS)]
    except OSError:
        return []
    found = [get_token(data, e[: -len(".json")]) for e in entries if e.endswith(".json")]
    return sorted(
        (t for t in found if t is not None and model in (None, t.model)),
        key=lambda t: (t.created, t.id),
    )


def revoke_token(data: DataDir, token_id: str) -> Token:
    """Delete token ``token_id`` (a conditional delete); return what it was.

    :raises NotFound: no such token.
    """
    if not ID_RE.match(token_id):
        raise NotFound(_no_token(token_id))
    revoked: list[Token] = []

    def mutate(raw: bytes | None) -> None:
        token = None if raw is None else parse_token(raw, token_id)
        if token is None:
            raise NotFound(_no_token(token_id))
        revoked[:] = [token]  # the last run is the one that counted
        return None

    update_doc(data.store, keys.token(token_id), mutate)
    data.bump_generation()
    return revoked[0]


def _no_token(token_id: str) -> str:
    return f"no token with id {token_id!r} (`modelpack-registry tokens list`)"


def record_use(data: DataDir, token: Token, now: dt.datetime | None = None) -> None:
    """Note that ``token`` authenticated a request now (at most one write an hour)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    used = token.last_used_at
    if used is not None and now - parse_time(used) < USE_RESOLUTION:
        return
    with _failed_lock:
        failed = _failed.get(token.id)
    if failed is not None and now - failed < USE_RESOLUTION:
        return  # it failed within the hour: do not retry (and warn) on every request
    stamp = iso_utc(now.replace(microsecond=0))

    def mutate(raw: bytes | None) -> bytes | None:
        current = None if raw is None else parse_token(raw, token.id)
        if current is None or current.sha256 != token.sha256:
            return raw  # revoked (or replaced) meanwhile: write nothing back
        return _body(replace(current, last_used=stamp))

    try:
        update_doc(data.store, keys.token(token.id), mutate, private=True)
    except (OSError, StorageError) as exc:
        # a read-only or full volume: say so once an hour per token, not on every request
        with _failed_lock:
            _failed[token.id] = now
        log.warning(
            "cannot record the use of API token %s (retried in an hour; the request is served): %s",
            token.id,
            exc,
        )


def verify_token(data: DataDir, text: str) -> Token | None:
    """The stored token that ``text`` is, or None (malformed, unknown, revoked, wrong).

    An expired token is returned too (see :meth:`Token.expired`): only the holder of its
    secret learns that it expired.
    """
    match = _TOKEN_RE.match(text.strip())
    if match is None:
        return None
    token = get_token(data, match.group(1))
    if token is None:
        return None
    if not hmac.compare_digest(_digest(match.group(2)).encode(), token.sha256.encode()):
        return None
    return token
