"""Closing a connection whose request body was not read to the end, without losing the answer.

An upload refused after its first MiB (see :mod:`modelpack_registry.web.upload`) leaves the
client sending the rest. If the server simply closed the socket with those bytes unread,
Linux would answer them with RST at once and drop whatever of the response the client
had not yet acknowledged: the client would see "connection reset" instead of "403:
model-foo is owned by alice". Servers that answer early *linger* instead (Apache's
lingering close, nginx's ``lingering_close``): send the answer with ``Connection:
close``, shut down the write side, read and discard what still arrives for a bounded
time and byte count, then close.

Under gunicorn (HTTP/1.x, plain TCP), :func:`close_after` does this for a failed write:

- it makes gunicorn close the connection after the answer (``Response.force_close``,
  reached as ``start_response.__self__``: gunicorn drops a ``Connection`` header set by
  the application and would otherwise keep the connection alive, reading and throwing
  away the rest of the old body first: all of it before gunicorn 27, 64 KiB in 27);
- gunicorn calls ``close()`` on the response body once the answer is written, in the
  worker thread; :func:`linger` then shuts the write side (a FIN after the answer) and
  reads and discards, stopping

  - for a rest of at most :data:`LINGER_BYTES`, when it is all read: the client finishes
    sending, reads the answer and closes, and no RST is ever sent;
  - for a larger or unknown rest, once the client's TCP has acknowledged the answer and
    the FIN (``SIOCOUTQ`` is 0; Linux). The close that follows resets the connection, the
    client's ``send`` fails with ECONNRESET or EPIPE, and the answer is already in its
    receive buffer: urllib3 2 (requests, twine, ``modelpack publish``) ignores those two
    errors while sending a body and then reads the response;
  - in any case after :data:`LINGER_SECONDS` or :data:`LINGER_BYTES`, which bound how
    long the worker thread is held;

- finally it shuts the read side too, so that gunicorn's own close (in gunicorn 27 a
  drain of up to 64 KiB or 2 s, on the worker's main thread) finds nothing to wait for.

Any other server, HTTP/2 (one socket carries many requests) and TLS sockets are left as
they are: the response is returned unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["LINGER_BYTES", "LINGER_SECONDS", "close_after", "linger", "unread_body"]

log = logging.getLogger(__name__)
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024
_POLL = 0.05  # how often the acknowledgement is checked while nothing arrives
_BLOCK = 256 * 1024
_SIOCOUTQ = getattr(termios, "TIOCOUTQ", None)  # same request number as SIOCOUTQ on Linux


def unread_body(environ: dict[str, Any]) -> int | None:
    """Bytes of gunicorn's request body not yet received from the socket; None if unknown.

    0 when the body was read to its end (or there was none); None for a chunked body or
    any server other than gunicorn.
    """
    stream = environ.get("wsgi.input")
    reader: Any = getattr(stream, "reader", None)
    length = getattr(reader, "length", None)
    if type(reader).__name__ != "LengthReader" or not isinstance(length, int):
        return None
    buf = getattr(getattr(reader, "unreader", None), "buf", None)
    buffered = len(buf.getvalue()) if isinstance(buf, io.BytesIO) else 0
    return max(0, length - buffered)


def close_after(environ: dict[str, Any], start_response: Callable[..., Any],
                body: Iterable[bytes]) -> Iterable[bytes]:  # fmt: skip
    """``body``, made to close the connection by lingering when the request body is unread.

    Returns ``body`` unchanged when the request body was read to its end, or when the
    server is not gunicorn serving HTTP/1.x over plain TCP.
    """
    sock = environ.get("gunicorn.socket")
    force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
    if (
        not isinstance(sock, socket.socket)
        or isinstance(sock, ssl.SSLSocket)
        or not callable(force_close)
        or environ.get("SERVER_PROTOCOL") not in ("HTTP/1.0", "HTTP/1.1")
    ):
        return body
    rest = unread_body(environ)
    if rest == 0:
        return body
    force_close()
    return _Lingering(body, sock, rest)


class _Lingering:
    """A response body whose ``close()`` lingers on the socket (see :func:`linger`)."""

    def __init__(self, body: Iterable[bytes], sock: socket.socket, rest: int | None) -> None:
        self._body = body
        self._sock = sock
        self._rest = rest

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            drained, why = linger(self._sock, self._rest)
            log.debug("closing after discarding %d more bytes (%s)", drained, why)


def linger(sock: socket.socket, rest: int | None, seconds: float = LINGER_SECONDS,
           max_bytes: int = LINGER_BYTES) -> tuple[int, str]:  # fmt: skip
    """Shut the write side, discard what arrives (bounded), then shut the read side.

    ``rest`` is how much of the body is still to come (None if unknown): at most
    ``max_bytes`` is read to its end; otherwise reading stops once the peer has
    acknowledged everything sent. Returns the bytes discarded and why it stopped.
    """
    whole = rest if rest is not None and rest <= max_bytes else None
    drained = 0
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while True:
            if whole is not None and drained >= whole:
                return drained, "the body was read to its end"
            if whole is None and _unacknowledged(sock) == 0:
                return drained, "the client acknowledged the answer"
            if drained >= max_bytes:
                return drained, "byte limit"
            left = deadline - time.monotonic()
            if left <= 0:
                return drained, "time limit"
            sock.settimeout(left if whole is not None else min(left, _POLL))
            want = _BLOCK if whole is None else min(_BLOCK, whole - drained)
            try:
                block = sock.recv(want)
            except TimeoutError:
                continue
            if not block:
                return drained, "the client closed"
            drained += len(block)
    except OSError as exc:
        return drained, f"the connection is gone ({exc.strerror or exc})"
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)


def _unacknowledged(sock: socket.socket) -> int | None:
    """Bytes sent (a FIN counts as one) that the peer has not acknowledged; None if unknown."""
    if _SIOCOUTQ is None:
        return None
    try:
        raw = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    value: int = struct.unpack("i", raw)[0]
    return value
