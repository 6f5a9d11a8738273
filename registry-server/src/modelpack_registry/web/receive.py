"""Receiving an upload's multipart body: streamed to a temp file once, memory flat.

The body is fed in 1 MiB blocks to ``multipart.PushMultipartParser``; the ``content``
part goes straight into the store's :meth:`~modelpack_registry.storage.base.Store.new_upload`
(a locked temp file in ``DATA/tmp``, or a multipart upload), so memory stays flat
whatever the size. Other form fields are capped (64 KiB each, the description 1 MiB,
100 fields; :mod:`modelpack_registry.limits` then caps each metadata field). When the body
ends early (the client went away) or is malformed, :class:`ClientGone` or ``BadRequest``
is raised and the caller (:mod:`modelpack_registry.web.upload`) deletes the temp file.
:func:`receive` calls back when the file part's headers arrive, so that the caller can
refuse the upload before its body.

Throughput (profiled with a 1 GiB wheel; see docs/performance.md): the request thread
used to spend about half its time in gunicorn's body reader, which copies every block
through two ``BytesIO`` buffers, and a quarter in sha256. So:

- when ``wsgi.input`` is gunicorn's body of known length over the client socket, the
  blocks are ``recv``'d from that socket directly (:class:`_SocketBody`), keeping
  gunicorn's own count of what is left in step, so keep-alive and draining behave as
  before; any other server or a chunked body goes through ``wsgi.input.read``;
- the sha256 runs in a helper thread (:class:`_Hasher`; ``hashlib`` releases the GIL on
  large blocks) while the request thread receives, parses and writes the next blocks.
  At most ``_HASH_QUEUE`` blocks wait for it, so memory stays bounded.

A client that stalls or trickles must not hold its thread (issue 13): before each read
the socket's timeout is set so that no read waits more than ``body_timeout`` seconds,
and so that the body keeps up ``min_rate`` bytes/s on average once its first
``body_timeout`` seconds are over (Apache's ``mod_reqtimeout`` ``MinRate`` rule).
Either deadline raises :class:`TooSlow`, and the caller deletes the temp file.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from modelpack_registry.errors import BadRequest, PayloadTooLarge
from modelpack_registry.limits import form_field_limit
from modelpack_registry.storage import Upload

__all__ = [
    "DIGEST_FIELDS",
    "READ_BLOCK",
    "ClientGone",
    "Form",
    "TooSlow",
    "UploadLimits",
    "parse_size",
    "receive",
    "too_large",
]

READ_BLOCK = 1 << 20
_HASH_QUEUE = 8  # blocks waiting for the hasher thread (8 MiB at most)
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip


def parse_size(text: str) -> int:
    """Parse ``20GiB``, ``500MiB``, ``1.5GB`` or a plain number of bytes.

    :raises ValueError: if ``text`` is not such a size.
    """
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :]
    if unit not in _UNITS or not number:
        raise ValueError(f"invalid size {text!r}: use e.g. 20GiB, 500MiB or a number of bytes")
    value = int(float(number) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be positive")
    return value


@dataclass(frozen=True)
class UploadLimits:
    """Caps on an upload request."""

    max_body: int = 20 * 1024**3
    max_field: int = 64 * 1024
    max_fields: int = 100
    body_timeout: float = 60.0
    """Longest wait for the next bytes of the body, seconds (``--body-timeout``)."""
    min_rate: int = 10 * 1024
    """Bytes/s the body must average after its first ``body_timeout`` s; 0: no minimum."""


# The digests a client may announce as form fields (twine sends all three), and how to
# compute each. sha256 is always computed. md5 and blake2 are computed only when announced
# without a sha256_digest: a matching sha256 already proves the bytes are the ones the
# client hashed, and computing all three halved twine's upload throughput here
# (benchmarks/upload_digests.py).
DIGEST_FIELDS: dict[str, Callable[[], Any]] = {
    "sha256_digest": hashlib.sha256,
    "md5_digest": lambda: hashlib.md5(usedforsecurity=False),
    "blake2_256_digest": lambda: hashlib.blake2b(digest_size=32),
}


class _Hasher:
    """A digest of the uploaded file, computed by a helper thread once blocks are large.

    Small uploads are hashed inline (no thread). :meth:`close` must always be called: it
    waits for the queued blocks and ends the thread. Each announced digest has its own
    hasher, so each runs on its own thread.
    """

    INLINE_BELOW = 256 * 1024

    def __init__(self, new: Callable[[], Any] = hashlib.sha256) -> None:
        self._digest = new()
        self._queue: queue.Queue[bytes | None] = queue.Queue(_HASH_QUEUE)
        self._thread: threading.Thread | None = None

    def update(self, block: bytes) -> None:
        """Add ``block`` (immutable bytes: the thread may read it later)."""
        if self._thread is None:
            if len(block) < self.INLINE_BELOW:
                self._digest.update(block)
                return
            self._thread = threading.Thread(target=self._run, name="upload-hash", daemon=True)
            self._thread.start()
        self._queue.put(block)

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._digest.update(block)

    def close(self) -> None:
        """Wait until every block is hashed and stop the thread (idempotent)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        """The digest of everything given to :meth:`update`."""
        self.close()
        return str(self._digest.hexdigest())


class _Flusher:
    """Has the kernel write the temp file to disk while the rest is still arriving.

    Every ``EVERY`` bytes written, a helper thread runs ``fdatasync`` on the temp file, so
    the ``fsync`` before publication finds little left to write. It never replaces that
    ``fsync``. :meth:`close` must always be called (before the file is closed).
    """

    EVERY = 64 * 1024 * 1024

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._unsynced = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wrote(self, size: int) -> None:
        """Count ``size`` bytes written; wake the thread every ``EVERY`` bytes."""
        self._unsynced += size
        if self._unsynced < self.EVERY or self._fd is None:
            return
        self._unsynced = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="upload-flush", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                os.fdatasync(self._fd)  # type: ignore[arg-type]  # not None once started
            except OSError:
                return  # the fsync before publication reports real errors

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None


@dataclass
class Form:
    """What has arrived of one upload: its fields, the file's name, size and sha256."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    sha256: _Hasher = field(default_factory=_Hasher)
    # Other digests announced in fields sent before the file (md5_digest, ...).
    digests: dict[str, _Hasher] = field(default_factory=dict)
    received: int = 0  # bytes of the body read so far
    expected: int = -1  # Content-Length, -1 when unknown (chunked)


class ClientGone(Exception):
    """The client closed the connection before the body was complete."""


class TooSlow(Exception):
    """The body stopped arriving for ``body_timeout`` s, or fell below ``min_rate``."""


class _Pace:
    """The deadline of each body read (see the module docstring)."""

    def __init__(self, sock: Any, limits: UploadLimits) -> None:
        self._sock = sock if callable(getattr(sock, "settimeout", None)) else None
        self.limits = limits
        self._start = time.monotonic()
        self._rate_bound = False  # whether the last wait was cut short by the rate

    def before_read(self, received: int) -> None:
        """Set the socket's timeout for the next read; raise if the rate is already missed."""
        idle = self.limits.body_timeout
        wait = idle
        if self.limits.min_rate > 0:
            wait = self._start + idle + received / self.limits.min_rate - time.monotonic()
            if wait <= 0:
                raise TooSlow(self._too_slow(received))
        self._rate_bound = wait < idle
        if self._sock is not None:
            self._sock.settimeout(min(wait, idle))

    def timed_out(self, received: int) -> TooSlow:
        if self._rate_bound:
            return TooSlow(self._too_slow(received))
        return TooSlow(
            f"no data from the client for {self.limits.body_timeout:g} s (--body-timeout)"
        )

    def _too_slow(self, received: int) -> str:
        elapsed = time.monotonic() - self._start
        return (
            f"the body arrived at {received / max(elapsed, 1e-9):.0f} bytes/s ({received} "
            f"bytes in {elapsed:.0f} s), below this registry's minimum of "
            f"{self.limits.min_rate} bytes/s (--min-upload-rate)"
        )


class _SocketBody:
    """gunicorn's request body of known length, read from the client socket directly.

    gunicorn's ``Body.read`` copies each block through two ``BytesIO`` buffers (about 1 s
    per GiB here). This reader takes the bytes gunicorn already buffered behind the
    headers, then ``recv``s the rest itself, decreasing gunicorn's ``LengthReader.length``
    by what it consumed so that gunicorn's view of the body stays exact.
    """

    def __init__(self, stream: Any, reader: Any, sock: Any, pending: bytes) -> None:
        self._stream = stream
        self._reader = reader
        self._sock = sock
        self._pending = pending

    @classmethod
    def attach(cls, stream: Any, sock: Any) -> _SocketBody | None:
        """A direct reader for ``stream``, or None if it is not gunicorn's plain body."""
        reader: Any = getattr(stream, "reader", None)
        unreader: Any = getattr(reader, "unreader", None)
        if (
            sock is None
            or type(reader).__name__ != "LengthReader"
            or not isinstance(getattr(reader, "length", None), int)
            or getattr(unreader, "sock", None) is not sock
            or not isinstance(getattr(stream, "buf", None), io.BytesIO)
            or stream.buf.tell() != 0
            or not isinstance(getattr(unreader, "buf", None), io.BytesIO)
        ):
            return None
        pending = unreader.buf.getvalue()
        unreader.buf = io.BytesIO()
        if len(pending) > reader.length:  # the start of a pipelined next request
            unreader.buf.write(pending[reader.length :])
            pending = pending[: reader.length]
        reader.length -= len(pending)
        return cls(stream, reader, sock, pending)

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body; b"" at its end or when the client is gone."""
        if self._pending:
            head, self._pending = self._pending[:size], self._pending[size:]
            return head
        size = min(size, self._reader.length)
        if size <= 0:
            return b""
        try:
            block: bytes = self._sock.recv(size)
        except BaseException:
            self._stream.failed = True  # gunicorn will not reuse the connection
            raise
        self._reader.length -= len(block)
        return block


def _read(stream: Any, size: int, pace: _Pace, received: int) -> bytes:
    pace.before_read(received)
    try:
        return bytes(stream.read(size))
    except TimeoutError as exc:
        raise pace.timed_out(received) from exc
    except Exception as exc:  # any read error means the body is lost
        raise ClientGone(str(exc)) from exc


def receive(environ: dict[str, Any], temp: Upload, limits: UploadLimits, form: Form,
             on_file: Callable[[Form], None]) -> None:  # fmt: skip
    """Read the body into ``form`` and ``temp``; ``on_file`` runs when the file part starts."""
    ctype, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
    if ctype != "multipart/form-data" or not options.get("boundary"):
        raise BadRequest("expected a multipart/form-data upload (as twine sends)")
    length_header = environ.get("CONTENT_LENGTH") or ""
    try:
        form.expected = int(length_header) if length_header else -1
    except ValueError:
        raise BadRequest("invalid Content-Length") from None
    try:
        parser = PushMultipartParser(
            options["boundary"], max_header_count=16, max_segment_count=limits.max_fields + 1
        )
    except MultipartError as exc:
        raise BadRequest(f"malformed multipart request: {exc}") from exc
    stream = environ["wsgi.input"]
    sock = environ.get("gunicorn.socket")
    if form.expected >= 0:
        stream = _SocketBody.attach(stream, sock) or stream
    file = getattr(temp, "file", None)  # a folder upload's temp file: flushed as it grows
    flusher = _Flusher(file.fileno() if file is not None else None)
    try:
        _parse_body(stream, parser, form, temp, _Pace(sock, limits), flusher, on_file)
    finally:
        for hasher in (form.sha256, *form.digests.values()):
            hasher.close()
        flusher.close()


def _parse_body(stream: Any, parser: PushMultipartParser, form: Form, temp: Upload,
                pace: _Pace, flusher: _Flusher,
                on_file: Callable[[Form], None]) -> None:  # fmt: skip
    limits = pace.limits
    current: MultipartSegment | None = None
    in_file = False  # inside the one 'content' part that carries a filename
    buffer = bytearray()
    expected = form.expected
    chunk = b""
    try:
        while True:
            want = READ_BLOCK if expected < 0 else min(READ_BLOCK, expected - form.received)
            chunk = _read(stream, want, pace, form.received) if want > 0 else b""
            form.received += len(chunk)
            if form.received > limits.max_body:
                raise PayloadTooLarge(too_large(limits))
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    current = event
                    buffer.clear()
                    in_file = event.name == "content"
                    if in_file:
                        _start_file(form, event)
                        on_file(form)
                elif event is None:
                    if current is not None and not in_file:
                        if len(form.fields) >= limits.max_fields:
                            raise BadRequest(f"more than {limits.max_fields} form fields")
                        form.fields[current.name or ""] = buffer.decode("utf-8", "replace")
                    current, in_file = None, False
                elif in_file:
                    temp.write(event)
                    form.sha256.update(event)
                    for hasher in form.digests.values():
                        hasher.update(event)
                    form.size += len(event)
                    flusher.wrote(len(event))
                else:
                    buffer += event
                    name = current.name if current else "?"
                    cap = form_field_limit(name, limits.max_field)
                    if len(buffer) > cap:
                        raise BadRequest(f"form field {name!r} is larger than {cap} bytes")
            if parser.closed or not chunk:
                break
        if expected >= 0 and form.received < expected:
            raise ClientGone(f"body ended after {form.received} of {expected} bytes")
        parser.close()
    except MultipartError as exc:
        if not chunk:
            raise ClientGone(f"incomplete multipart body: {exc}") from exc
        raise BadRequest(f"malformed multipart body: {exc}") from exc


def _start_file(form: Form, segment: MultipartSegment) -> None:
    """Take the one ``content`` part that is the file; start the announced digests."""
    if segment.filename is None:
        # Its bytes must not become part of the file, nor pass for a form field.
        raise BadRequest(
            "the upload has a 'content' part without a filename; send the file as the "
            "only 'content' part, with its filename (as twine does)"
        )
    if form.filename is not None:
        raise BadRequest("more than one file in the upload")
    form.filename = segment.filename
    if form.fields.get("sha256_digest", "").strip():
        return
    for name, new in DIGEST_FIELDS.items():
        if name != "sha256_digest" and form.fields.get(name, "").strip():
            form.digests[name] = _Hasher(new)


def too_large(limits: UploadLimits) -> str:
    return (
        f"the upload is larger than this registry's limit of {limits.max_body} bytes "
        "(--max-upload-size)"
    )
