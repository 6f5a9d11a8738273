"""``POST /`` with ``:action=file_upload``: twine's legacy upload, streamed to disk once.

The body is fed in 1 MiB blocks to ``multipart.PushMultipartParser``; the ``content``
part goes straight into a locked temp file in ``DATA/tmp``, so memory stays flat
whatever the size. Other form fields are capped (64 KiB each, 100 fields). When the body
ends early (the client went away) or is malformed, the temp file is deleted and nothing
is listed. A complete upload is fsynced, validated (:mod:`modelpack_registry.validate`)
and then published atomically by :meth:`DataDir.publish` (409 if the filename exists).

Refusing before the body arrives: twine sends every form field (``name``, ``version``,
``:action``, ...) before the ``content`` part, and that part's headers carry the file
name. As soon as they are parsed, the checks that need only those run: ``:action``, the
file name, the form's name and version against it, "already published" (409) and
:meth:`DataDir.check_publish`, which asks the data folder's guard whether this uploader
could publish that name (403), reading without the lock. Each raises what the same check
would raise after the whole body, so a refused 6 GiB upload is told after the first
block read (at most 1 MiB) instead of after 25 s. They are an optimisation only: everything is checked again after
the body, and :meth:`DataDir.publish` decides under the lock. The server logs how much of
the body it had read when it refused; :mod:`modelpack_registry.linger` then closes the
connection without the answer being lost.

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
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header
from packaging.utils import canonicalize_name

from modelpack_registry.errors import (
    BadRequest,
    Conflict,
    HTTPFailure,
    MethodNotAllowed,
    PayloadTooLarge,
)
from modelpack_registry.index import Index, Snapshot
from modelpack_registry.maintenance import utc_now
from modelpack_registry.storage import DataDir, Record, TempUpload
from modelpack_registry.validate import (
    check_filename,
    inspect_distribution,
    name_and_version,
    versions_equal,
    wheel_key,
)

__all__ = ["UploadLimits", "handle_upload", "parse_size"]

log = logging.getLogger(__name__)
READ_BLOCK = 1 << 20
_HASH_QUEUE = 8  # blocks waiting for the hasher thread (8 MiB at most)
IDLE_TIMEOUT = 120.0  # seconds without a byte from the client before an upload is dropped
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


class _Hasher:
    """sha256 of the uploaded file, computed by a helper thread once blocks are large.

    Small uploads are hashed inline (no thread). :meth:`close` must always be called: it
    waits for the queued blocks and ends the thread.
    """

    INLINE_BELOW = 256 * 1024

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(_HASH_QUEUE)
        self._thread: threading.Thread | None = None

    def update(self, block: bytes) -> None:
        """Add ``block`` (immutable bytes: the thread may read it later)."""
        if self._thread is None:
            if len(block) < self.INLINE_BELOW:
                self._digest.update(block)
                return
            self._thread = threading.Thread(target=self._run, name="upload-sha256", daemon=True)
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
        return self._digest.hexdigest()


class _Flusher:
    """Has the kernel write the temp file to disk while the rest is still arriving.

    Every ``EVERY`` bytes written, a helper thread runs ``fdatasync`` on the temp file, so
    the ``fsync`` before publication finds little left to write. It never replaces that
    ``fsync``. :meth:`close` must always be called (before the file is closed).
    """

    EVERY = 64 * 1024 * 1024

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._unsynced = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wrote(self, size: int) -> None:
        """Count ``size`` bytes written; wake the thread every ``EVERY`` bytes."""
        self._unsynced += size
        if self._unsynced < self.EVERY:
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
                os.fdatasync(self._fd)
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
class _Form:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    sha256: _Hasher = field(default_factory=_Hasher)
    received: int = 0  # bytes of the body read so far
    expected: int = -1  # Content-Length, -1 when unknown (chunked)


class ClientGone(Exception):
    """The client closed the connection before the body was complete."""


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


def _read(stream: Any, size: int) -> bytes:
    try:
        return bytes(stream.read(size))
    except Exception as exc:  # any read error means the body is lost
        raise ClientGone(str(exc)) from exc


def _receive(environ: dict[str, Any], temp: TempUpload, limits: UploadLimits, form: _Form,
             on_file: Callable[[_Form], None]) -> None:  # fmt: skip
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
    if form.expected >= 0:
        stream = _SocketBody.attach(stream, environ.get("gunicorn.socket")) or stream
    flusher = _Flusher(temp.file.fileno())
    try:
        _parse_body(stream, parser, form, temp, limits, flusher, on_file)
    finally:
        form.sha256.close()
        flusher.close()


def _parse_body(stream: Any, parser: PushMultipartParser, form: _Form, temp: TempUpload,
                limits: UploadLimits, flusher: _Flusher,
                on_file: Callable[[_Form], None]) -> None:  # fmt: skip
    current: MultipartSegment | None = None
    buffer = bytearray()
    expected = form.expected
    chunk = b""
    try:
        while True:
            want = READ_BLOCK if expected < 0 else min(READ_BLOCK, expected - form.received)
            chunk = _read(stream, want) if want > 0 else b""
            form.received += len(chunk)
            if form.received > limits.max_body:
                raise PayloadTooLarge(_too_large(limits))
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    current = event
                    buffer.clear()
                    if event.name == "content" and event.filename is not None:
                        if form.filename is not None:
                            raise BadRequest("more than one file in the upload")
                        form.filename = event.filename
                        on_file(form)
                elif event is None:
                    if current is not None and current.name != "content":
                        if len(form.fields) >= limits.max_fields:
                            raise BadRequest(f"more than {limits.max_fields} form fields")
                        form.fields[current.name or ""] = buffer.decode("utf-8", "replace")
                    current = None
                elif current is not None and current.name == "content":
                    temp.file.write(event)
                    form.sha256.update(event)
                    form.size += len(event)
                    flusher.wrote(len(event))
                else:
                    buffer += event
                    if len(buffer) > limits.max_field:
                        name = current.name if current else "?"
                        raise BadRequest(f"form field {name!r} is larger than 64 KiB")
            if parser.closed or not chunk:
                break
        if expected >= 0 and form.received < expected:
            raise ClientGone(f"body ended after {form.received} of {expected} bytes")
        parser.close()
    except MultipartError as exc:
        if not chunk:
            raise ClientGone(f"incomplete multipart body: {exc}") from exc
        raise BadRequest(f"malformed multipart body: {exc}") from exc


def _too_large(limits: UploadLimits) -> str:
    return (
        f"the upload is larger than this registry's limit of {limits.max_body} bytes "
        "(--max-upload-size)"
    )


def handle_upload(environ: dict[str, Any], data: DataDir, index: Index, limits: UploadLimits,
                  uploader: tuple[str, str | None] | None = None) -> str:  # fmt: skip
    """Receive, validate and publish one upload; return a success message.

    ``uploader``: the authenticated user and the id of the API token used (or None),
    recorded with the file; None on an anonymous registry.

    What can be refused from the form fields and the file name alone is refused as soon
    as those arrive, before the rest of the body is read (see the module docstring).

    :raises BadRequest: malformed request, invalid file, or a digest/name/version mismatch.
    :raises PayloadTooLarge: the body is over the limit.
    :raises Conflict: the file (or the same file under another spelling) exists.
    :raises Forbidden: the uploader may not publish this name (see :meth:`DataDir.publish`).
    :raises MethodNotAllowed: an ``:action`` other than ``file_upload``.
    """
    form = _Form()
    temp: TempUpload | None = None
    try:
        try:
            declared = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            declared = -1  # _receive refuses it
        form.expected = declared
        if declared > limits.max_body:
            raise PayloadTooLarge(_too_large(limits))
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            # A client that stalls mid-body must not hold a worker thread forever.
            sock.settimeout(IDLE_TIMEOUT)
        temp = data.new_temp()
        return _receive_and_publish(environ, data, index, limits, form, temp, uploader)
    except ClientGone as exc:
        log.warning("upload aborted by the client: %s", exc)
        raise BadRequest("the upload was incomplete (connection closed)") from exc
    except HTTPFailure as exc:
        total = str(form.expected) if form.expected >= 0 else "?"
        log.info("refused %s after %d of %s bytes: %d %s", form.filename or "an upload",
                 form.received, total, exc.status, exc.message)  # fmt: skip
        raise
    finally:
        if temp is not None:
            temp.discard()


def _receive_and_publish(environ: dict[str, Any], data: DataDir, index: Index,
                         limits: UploadLimits, form: _Form, temp: TempUpload,
                         uploader: tuple[str, str | None] | None) -> str:  # fmt: skip
    def refuse_early(got: _Form) -> None:
        """The checks below that need only the fields sent so far and the file name."""
        filename = got.filename
        assert filename is not None
        _check_action(got.fields)
        check_filename(filename)
        name, version = name_and_version(filename)
        _check_form_matches(got.fields, name, version, filename)
        _check_unpublished(index.snapshot(), filename, name)
        data.check_publish(filename, name)

    _receive(environ, temp, limits, form, refuse_early)
    _check_action(form.fields)
    if form.filename is None:
        raise BadRequest("the upload has no 'content' file part")
    filename = form.filename
    check_filename(filename)
    if form.size == 0:
        raise BadRequest(f"{filename} is empty")
    digest = form.sha256.hexdigest()
    claimed = form.fields.get("sha256_digest", "").strip().lower()
    if claimed and claimed != digest:
        raise BadRequest(
            f"sha256_digest {claimed} does not match the received file ({digest}); "
            "the upload was corrupted in transit"
        )
    temp.file.flush()
    os.fsync(temp.file.fileno())
    info = inspect_distribution(temp.path, filename)
    _check_form_matches(form.fields, info.name, info.version, filename)
    _check_unpublished(index.snapshot(), filename, info.name)
    record = Record(
        filename=filename,
        name=info.name,
        version=info.version,
        sha256=digest,
        size=form.size,
        upload_time=utc_now(),
        requires_python=info.requires_python,
        summary=info.summary,
        core_metadata_sha256=(
            hashlib.sha256(info.metadata).hexdigest() if info.metadata is not None else None
        ),
        uploaded_by=uploader[0] if uploader else None,
        upload_token=uploader[1] if uploader else None,
    )
    data.publish(temp, record, info.metadata)
    index.invalidate()
    by = (
        f" by {uploader[0]}" + (f" (token {uploader[1]})" if uploader[1] else "")
        if uploader
        else ""
    )
    log.info("published %s (%d bytes, sha256 %s)%s", filename, form.size, digest, by)
    return f"OK: {filename} published\n"


def _check_action(fields: dict[str, str]) -> None:
    action = fields.get(":action", "file_upload")
    if action != "file_upload":
        raise MethodNotAllowed(
            f":action={action} is not supported; this registry accepts only file_upload"
        )


def _check_unpublished(snap: Snapshot, filename: str, name: str) -> None:
    if filename in snap.records:
        raise Conflict(
            f"{filename} already exists; published versions are immutable: bump the version"
        )
    key = wheel_key(filename)
    for other in snap.projects.get(name, []):
        if wheel_key(other.filename) == key:
            raise Conflict(
                f"{filename} already exists as {other.filename}; published versions "
                "are immutable: bump the version"
            )


def _check_form_matches(fields: dict[str, str], name: str, version: str, filename: str) -> None:
    form_name = fields.get("name", "").strip()
    if form_name and canonicalize_name(form_name) != name:
        raise BadRequest(f"form field name={form_name!r} does not match {filename}")
    form_version = fields.get("version", "").strip()
    if form_version and not versions_equal(form_version, version):
        raise BadRequest(f"form field version={form_version!r} does not match {filename}")
