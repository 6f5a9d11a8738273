"""HTTP Basic authentication of writes against an htpasswd file.

Hashes are checked with ``bcrypt`` directly (``$2y$``/``$2b$``/``$2a$``, as
``htpasswd -B`` writes them); ``{SHA}`` entries are accepted too. Other schemes (MD5
``$apr1$``, crypt, plain text) are refused at start-up with a message saying how to
rewrite the file. A verified user+password pair is remembered in memory, keyed by a
sha256 of both (never the password itself), so a repeated request does not pay bcrypt
again; the cache is dropped when the file changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from pathlib import Path
from typing import Any

import bcrypt

from modelpack_registry.errors import ConfigError, Forbidden, Unauthorized

__all__ = ["REALM", "Htpasswd"]

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
        if not hashed.startswith(("$2y$", "$2b$", "$2a$", "{SHA}")):
            raise ConfigError(
                f"{path}:{lineno}: unsupported hash for user {user!r}; "
                "write the file with `htpasswd -B` (bcrypt)"
            )
        users[user] = hashed
    return users


def _check_hash(password: str, hashed: str) -> bool:
    if hashed.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()  # noqa: S324
        return hmac.compare_digest(digest, hashed[5:])
    try:
        return bcrypt.checkpw(password.encode()[:72], hashed.encode())
    except ValueError:
        return False


class Htpasswd:
    """The users allowed to write, read from an htpasswd file."""

    def __init__(self, path: Path) -> None:
        """:raises ConfigError: if the file is missing, unreadable or malformed."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self._users = _load(self.path)
        self._verified: set[bytes] = set()

    def _stat(self) -> float:
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return -1.0

    def _reload_if_changed(self) -> None:
        mtime = self._stat()
        if mtime != self._mtime:
            with self._lock:
                try:
                    self._users = _load(self.path)
                except ConfigError:
                    self._users = {}
                self._verified = set()
                self._mtime = mtime

    def check(self, environ: dict[str, Any]) -> str:
        """Return the authenticated user of a write request.

        :raises Unauthorized: no (or unparsable) Basic credentials.
        :raises Forbidden: wrong user or password.
        """
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            raise Unauthorized("this registry needs credentials to upload", _CHALLENGE)
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials", _CHALLENGE) from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise Unauthorized("malformed Basic credentials", _CHALLENGE)
        self._reload_if_changed()
        key = hashlib.sha256(f"{user}\x00{password}".encode()).digest()
        if key in self._verified:
            return user
        hashed = self._users.get(user)
        if hashed is None or not _check_hash(password, hashed):
            raise Forbidden(f"wrong user name or password for user {user!r}")
        with self._lock:
            self._verified.add(key)
        return user
