"""Where the registry is and who we are to it.

Registry URL, first match wins: ``--registry URL``, ``$MODELPACK_REGISTRY``,
``[tool.modelpack] registry`` in the project's ``pyproject.toml``, then
:data:`DEFAULT_REGISTRY`.

Credentials, first match wins: ``$MODELPACK_USERNAME`` / ``$MODELPACK_PASSWORD``; a
``~/.pypirc`` section whose ``repository`` is the registry URL (as twine reads it); the
system keyring (service = registry URL), when the ``keyring`` package has a backend.
Credentials are never taken from the command line, where ``ps`` would show them.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from modelpack.errors import UsageError

__all__ = [
    "DEFAULT_REGISTRY",
    "Credentials",
    "keyring_credentials",
    "missing_credentials",
    "redact",
    "resolve_credentials",
    "resolve_registry",
]

DEFAULT_REGISTRY = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str

    def __repr__(self) -> str:  # never print a password by accident
        return f"Credentials(username={self.username!r}, source={self.source!r})"


def _normalize(url: str, origin: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"invalid registry URL {redact(url)!r} (from {origin}): "
            "give an http:// or https:// URL such as http://127.0.0.1:8080"
        )
    path = parts.path.rstrip("/")
    for suffix in ("/simple", "/+simple"):  # a pasted index URL (devpi: /+simple)
        if path.endswith(suffix):  # the registry is its parent
            path = path[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def resolve_registry(
    cli_value: str | None = None, project_config: dict[str, object] | None = None
) -> str:
    """Return the registry base URL (no trailing slash) from the documented sources.

    :raises UsageError: the chosen value is not an http(s) URL.
    """
    if cli_value:
        return _normalize(cli_value, "--registry")
    env = os.environ.get("MODELPACK_REGISTRY")
    if env:
        return _normalize(env, "MODELPACK_REGISTRY")
    if project_config and project_config.get("registry"):
        return _normalize(str(project_config["registry"]), "[tool.modelpack] registry")
    return DEFAULT_REGISTRY


def redact(url: str) -> str:
    """Strip any ``user:password@`` from *url* so it can be printed."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _same_registry(a: str, b: str) -> bool:
    try:
        return _normalize(a, "") == _normalize(b, "")
    except UsageError:
        return False


def _from_pypirc(registry: str) -> Credentials | None:
    path = Path(os.environ.get("PYPIRC", Path.home() / ".pypirc"))
    if not path.is_file():
        return None
    parser = configparser.RawConfigParser()
    parser.read(path)
    for section in parser.sections():
        repo = parser.get(section, "repository", fallback="")
        if repo and _same_registry(repo, registry):
            user = parser.get(section, "username", fallback="")
            password = parser.get(section, "password", fallback="")
            if user and password:
                return Credentials(user, password, f"{path} [{section}]")
    return None


def _from_keyring(registry: str, username: str | None) -> Credentials | None:
    try:
        import keyring
        import keyring.errors
    except ImportError:
        return None
    try:
        cred = keyring.get_credential(registry, username)
    except Exception:  # noqa: BLE001 - no usable keyring backend is not an error
        return None
    if cred is None or not cred.password:
        return None
    return Credentials(cred.username or (username or ""), cred.password, "keyring")


def missing_credentials(registry: str) -> str:
    """What to say when *registry* wants credentials and none were found."""
    shown = redact(registry)
    return (
        f"no credentials for {shown} were found; give them as MODELPACK_USERNAME and "
        f"MODELPACK_PASSWORD, or store them with `keyring set {shown} USER`, or in a "
        f"~/.pypirc section with repository = {shown}, username and password"
    )


def resolve_credentials(registry: str, *, keyring: bool = True) -> Credentials | None:
    """Return credentials for *registry*, or ``None`` to try the registry anonymously.

    *keyring* False stops before the keyring, for a caller that asks it
    (:func:`keyring_credentials`) only once the registry wants credentials: finding the
    keyring's backend costs about 50 ms.
    """
    user = os.environ.get("MODELPACK_USERNAME")
    password = os.environ.get("MODELPACK_PASSWORD")
    if user and password:
        return Credentials(user, password, "MODELPACK_USERNAME/MODELPACK_PASSWORD")
    found = _from_pypirc(registry)
    if found:
        return found
    return keyring_credentials(registry) if keyring else None


def keyring_credentials(registry: str) -> Credentials | None:
    """The keyring's credentials for *registry* (and ``$MODELPACK_USERNAME``, if set)."""
    return _from_keyring(registry, os.environ.get("MODELPACK_USERNAME"))
