"""The one exception tree of modelpack-registry.

Every error a user can cause or fix derives from :class:`RegistryError`; the CLI maps it
to one line on stderr and exit status 1, and the HTTP layer maps :class:`HTTPFailure`
subclasses to a status code and a plain-text message::

    RegistryError
    ├── ConfigError        bad option, missing htpasswd file, refusing an unsafe bind
    ├── StorageError       data folder missing, not writable, or a port already in use
    └── HTTPFailure        an HTTP answer other than success (carries ``status``)
        ├── BadRequest           400: the request or the uploaded file is invalid
        ├── Unauthorized         401: credentials needed
        ├── Forbidden            403: credentials wrong, or not allowed on this model
        ├── NotFound             404
        ├── MethodNotAllowed     405
        ├── RequestTimeout       408: an upload body stalled or trickled (--body-timeout)
        ├── Conflict             409: the file exists (immutable), or the last owner
        ├── PayloadTooLarge      413: the body is over ``--max-upload-size``
        ├── InsufficientStorage  507: the data folder is out of space or inodes
        └── BadGateway           502: the upstream index failed, or sent bytes that do
                                 not match its own hash (``--upstream``)
"""

from __future__ import annotations

import errno

__all__ = [
    "BadGateway",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "HTTPFailure",
    "InsufficientStorage",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RegistryError",
    "RequestTimeout",
    "StorageError",
    "Unauthorized",
    "disk_full",
    "full_disk_error",
]


class RegistryError(Exception):
    """Base of every error the registry reports to a user."""


class ConfigError(RegistryError):
    """A command-line option or configuration file is wrong."""


class StorageError(RegistryError):
    """The data folder (or the network port) cannot be used."""


class HTTPFailure(RegistryError):
    """An error answered over HTTP with ``status`` and the message as body."""

    status = 500
    reason = "Internal Server Error"

    def __init__(self, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or []


class BadRequest(HTTPFailure):
    """400: the request, a form field or the uploaded file is invalid."""

    status, reason = 400, "Bad Request"


class Unauthorized(HTTPFailure):
    """401: this action needs credentials."""

    status, reason = 401, "Unauthorized"


class Forbidden(HTTPFailure):
    """403: the credentials are wrong, or the user may not change this model."""

    status, reason = 403, "Forbidden"


class NotFound(HTTPFailure):
    """404: no such project or file."""

    status, reason = 404, "Not Found"


class MethodNotAllowed(HTTPFailure):
    """405: the method or ``:action`` is not supported."""

    status, reason = 405, "Method Not Allowed"


class RequestTimeout(HTTPFailure):
    """408: the body stopped arriving, or arrived slower than the minimum rate."""

    status, reason = 408, "Request Timeout"


class Conflict(HTTPFailure):
    """409: the file already exists; published versions are immutable."""

    status, reason = 409, "Conflict"


class PayloadTooLarge(HTTPFailure):
    """413: the request body is larger than the configured limit."""

    status, reason = 413, "Payload Too Large"


class InsufficientStorage(HTTPFailure):
    """507: the data folder is out of space or inodes; nothing was published."""

    status, reason = 507, "Insufficient Storage"


def disk_full(exc: BaseException) -> bool:
    """True if ``exc`` says the filesystem is out of blocks or inodes (or over quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def full_disk_error(exc: BaseException) -> InsufficientStorage:
    """The 507 answer for a full data folder (nothing was changed)."""
    why = getattr(exc, "strerror", None) or exc
    return InsufficientStorage(
        f"the registry's data folder is full ({why}); nothing was changed. "
        "Free disk space or inodes on the registry's server (or ask its operator), then "
        "try again"
    )


class BadGateway(HTTPFailure):
    """502: the upstream index (``--upstream``) cannot answer, or answered wrongly."""

    status, reason = 502, "Bad Gateway"
