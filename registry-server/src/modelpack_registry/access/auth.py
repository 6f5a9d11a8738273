"""HTTP Basic authentication of writes against an htpasswd file.

Hashes are checked with ``bcrypt`` directly (``$2y$``/``$2b$``/``$2a$``, as
``htpasswd -B`` writes them); ``{SHA}`` and Apache MD5 (``$apr1$``, ``htpasswd -m``, the
old default; checked with :func:`apr1`, a stdlib implementation verified against
``openssl passwd -apr1``) are accepted too. Other schemes (crypt, plain text) are refused
at start-up with a message saying how to rewrite the file. A verified user+password pair
is remembered in memory, keyed by a sha256 of both (never the password itself), so a
repeated request does not pay bcrypt again (about 100 ms at the default cost); the cache
is dropped when the file changes (mtime, size or inode), so a changed password or a
removed user takes effect on the next request.

An unknown user name is checked against a decoy hash of the same kind as the file's
entries (for bcrypt, the cost most of them use), so it is answered in the time a wrong
password for a real user takes: a decoy at cost 12 beside ``htpasswd -B`` entries
(cost 5) made unknown names about 80 times slower, which told which names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import bcrypt

from modelpack_registry.errors import ConfigError, Forbidden, Unauthorized

__all__ = ["REALM", "Htpasswd", "apr1", "basic_credentials", "challenge", "decoy_for"]

REALM = "modelpack"
_CHALLENGE = [("WWW-Authenticate", f'Basic realm="{REALM}"')]


def _load(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"htpasswd file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read htpasswd file {path}: {exc}") from exc
    users: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise ConfigError(f"{path}:{lineno}: expected 'user:hash'")
        if not hashed.startswith(("$2y$", "$2b$", "$2a$", "{SHA}", "$apr1$")):
            raise ConfigError(
                f"{path}:{lineno}: unsupported hash for user {user!r} (crypt or plain "
                "text); write the file with `htpasswd -B` (bcrypt)"
            )
        users[user] = hashed
    return users


_APR1_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def apr1(password: str, salt: str) -> str:
    """Apache's MD5-crypt (``$apr1$<salt>$<hash>``), as ``htpasswd -m`` writes it."""
    pw, magic = password.encode(), b"$apr1$"
    salt_b = salt.encode()[:8]
    alt = hashlib.md5(pw + salt_b + pw).digest()  # noqa: S324
    ctx = hashlib.md5(pw + magic + salt_b)  # noqa: S324
    for i in range(len(pw), 0, -16):
        ctx.update(alt[: min(16, i)])
    i = len(pw)
    while i:
        ctx.update(b"\x00" if i & 1 else pw[:1])
        i >>= 1
    final = ctx.digest()
    for i in range(1000):
        step = hashlib.md5(pw if i & 1 else final)  # noqa: S324
        if i % 3:
            step.update(salt_b)
        if i % 7:
            step.update(pw)
        step.update(final if i & 1 else pw)
        final = step.digest()
    out: list[str] = []
    for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)):
        value = (final[a] << 16) | (final[b] << 8) | final[c]
        out.extend(_APR1_ALPHABET[(value >> (6 * k)) & 0x3F] for k in range(4))
    value = final[11]
    out.extend(_APR1_ALPHABET[(value >> (6 * k)) & 0x3F] for k in range(2))
    return f"$apr1${salt_b.decode()}${''.join(out)}"


def _bcrypt_cost(hashed: str) -> int | None:
    """The cost of a ``$2?$NN$...`` hash; None for another scheme or a malformed cost."""
    if not hashed.startswith(("$2y$", "$2b$", "$2a$")):
        return None
    try:
        cost = int(hashed[4:6])
    except ValueError:
        return None
    return cost if 4 <= cost <= 31 else None


def _kind(hashed: str) -> tuple[str, int]:
    cost = _bcrypt_cost(hashed)
    if cost is not None:
        return "bcrypt", cost
    return ("apr1" if hashed.startswith("$apr1$") else "sha"), 0


def decoy_for(hashes: list[str]) -> str:
    """A hash of ``"decoy"`` that costs what checking most of ``hashes`` costs: bcrypt at
    their most common cost, else apr1 or ``{SHA}``, whichever is most common."""
    kinds = Counter(_kind(h) for h in hashes)
    kind, cost = kinds.most_common(1)[0][0] if kinds else ("apr1", 0)
    if kind == "bcrypt":
        return bcrypt.hashpw(b"decoy", bcrypt.gensalt(rounds=cost)).decode()
    if kind == "sha":
        return "{SHA}" + base64.b64encode(hashlib.sha1(b"decoy").digest()).decode()  # noqa: S324
    return apr1("decoy", "decoysal")


def _check_hash(password: str, hashed: str) -> bool:
    if hashed.startswith("$apr1$"):
        salt = hashed[len("$apr1$") :].split("$", 1)[0]
        return hmac.compare_digest(apr1(password, salt).encode(), hashed.encode())
    if hashed.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()  # noqa: S324
        return hmac.compare_digest(digest, hashed[5:])
    try:
        return bcrypt.checkpw(password.encode()[:72], hashed.encode())
    except ValueError:
        return False


def basic_credentials(environ: dict[str, Any]) -> tuple[str, str] | None:
    """The (user, password) of a Basic ``Authorization`` header; None if there is none.

    :raises Unauthorized: if the header is Basic but cannot be decoded.
    """
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials", _CHALLENGE) from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("malformed Basic credentials", _CHALLENGE)
    return user, password


def challenge() -> list[tuple[str, str]]:
    """The ``WWW-Authenticate`` header of a 401."""
    return list(_CHALLENGE)


class Htpasswd:
    """The users of the registry, read from an htpasswd file."""

    def __init__(self, path: Path) -> None:
        """:raises ConfigError: if the file is missing, unreadable or malformed."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._users = _load(self.path)
        self._verified: set[bytes] = set()
        self._decoy_hash: str | None = None

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (-1, -1, -1)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload_if_changed(self) -> None:
        stamp = self._stat()
        if stamp != self._stamp:
            with self._lock:
                try:
                    self._users = _load(self.path)
                except ConfigError:
                    self._users = {}
                self._verified = set()
                self._decoy_hash = None
                self._stamp = stamp

    def decoy(self) -> str:
        """The hash an unknown user name is checked against (see :func:`decoy_for`)."""
        self._reload_if_changed()
        with self._lock:
            if self._decoy_hash is None:
                self._decoy_hash = decoy_for(list(self._users.values()))
            return self._decoy_hash

    def users(self) -> frozenset[str]:
        """The user names in the file (as it is now)."""
        self._reload_if_changed()
        return frozenset(self._users)

    def has_user(self, user: str) -> bool:
        """True if ``user`` has an entry in the file (as it is now)."""
        self._reload_if_changed()
        return user in self._users

    def verify(self, user: str, password: str) -> bool:
        """True if the password is right; cached per process once verified."""
        self._reload_if_changed()
        key = hashlib.sha256(f"{user}\x00{password}".encode()).digest()
        if key in self._verified:
            return True
        hashed = self._users.get(user)
        if hashed is None:
            # Spend what a real check costs, so the answer time does not tell which
            # user names exist.
            _check_hash(password, self.decoy())
            return False
        if not _check_hash(password, hashed):
            return False
        with self._lock:
            self._verified.add(key)
        return True

    def check(self, environ: dict[str, Any]) -> str:
        """Return the authenticated user of a request.

        :raises Unauthorized: no (or unparsable) Basic credentials.
        :raises Forbidden: wrong user or password.
        """
        credentials = basic_credentials(environ)
        if credentials is None:
            raise Unauthorized("this registry needs credentials to upload", _CHALLENGE)
        user, password = credentials
        if not self.verify(user, password):
            raise Forbidden(f"wrong user name or password for user {user!r}")
        return user
