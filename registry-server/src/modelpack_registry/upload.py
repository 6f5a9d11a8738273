"""``POST /`` with ``:action=file_upload``: twine's legacy upload, streamed to disk once.

The body is read from ``wsgi.input`` in 1 MiB blocks and fed to
``multipart.PushMultipartParser``; the ``content`` part goes straight into a locked temp
file in ``DATA/tmp`` while its sha256 is computed, so memory stays flat whatever the
size. Other form fields are capped (64 KiB each, 100 fields). When the body ends early
(the client went away) or is malformed, the temp file is deleted and nothing is listed.
A complete upload is fsynced, validated (:mod:`modelpack_registry.validate`) and then
published atomically by :meth:`DataDir.publish` (409 if the filename exists).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header
from packaging.utils import canonicalize_name

from modelpack_registry.errors import BadRequest, Conflict, MethodNotAllowed, PayloadTooLarge
from modelpack_registry.index import Index
from modelpack_registry.maintenance import utc_now
from modelpack_registry.storage import DataDir, Record, TempUpload
from modelpack_registry.validate import (
    check_filename,
    inspect_distribution,
    versions_equal,
    wheel_key,
)

__all__ = ["UploadLimits", "handle_upload", "parse_size"]

log = logging.getLogger(__name__)
READ_BLOCK = 1 << 20
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


@dataclass
class _Form:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)


class ClientGone(Exception):
    """The client closed the connection before the body was complete."""


def _read(stream: Any, size: int) -> bytes:
    try:
        return bytes(stream.read(size))
    except Exception as exc:  # any read error means the body is lost
        raise ClientGone(str(exc)) from exc


def _receive(environ: dict[str, Any], temp: TempUpload, limits: UploadLimits) -> _Form:
    ctype, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
    if ctype != "multipart/form-data" or not options.get("boundary"):
        raise BadRequest("expected a multipart/form-data upload (as twine sends)")
    length_header = environ.get("CONTENT_LENGTH") or ""
    try:
        expected = int(length_header) if length_header else -1
    except ValueError:
        raise BadRequest("invalid Content-Length") from None
    stream = environ["wsgi.input"]
    form = _Form()
    current: MultipartSegment | None = None
    buffer = bytearray()
    received = 0
    try:
        parser = PushMultipartParser(
            options["boundary"], max_header_count=16, max_segment_count=limits.max_fields + 1
        )
    except MultipartError as exc:
        raise BadRequest(f"malformed multipart request: {exc}") from exc
    chunk = b""
    try:
        while True:
            want = READ_BLOCK if expected < 0 else min(READ_BLOCK, expected - received)
            chunk = _read(stream, want) if want > 0 else b""
            received += len(chunk)
            if received > limits.max_body:
                raise PayloadTooLarge(_too_large(limits))
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    current = event
                    buffer.clear()
                    if event.name == "content" and event.filename is not None:
                        if form.filename is not None:
                            raise BadRequest("more than one file in the upload")
                        form.filename = event.filename
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
                else:
                    buffer += event
                    if len(buffer) > limits.max_field:
                        name = current.name if current else "?"
                        raise BadRequest(f"form field {name!r} is larger than 64 KiB")
            if parser.closed or not chunk:
                break
        if expected >= 0 and received < expected:
            raise ClientGone(f"body ended after {received} of {expected} bytes")
        parser.close()
    except MultipartError as exc:
        if not chunk:
            raise ClientGone(f"incomplete multipart body: {exc}") from exc
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    return form


def _too_large(limits: UploadLimits) -> str:
    return (
        f"the upload is larger than this registry's limit of {limits.max_body} bytes "
        "(--max-upload-size)"
    )


def handle_upload(environ: dict[str, Any], data: DataDir, index: Index,
                  limits: UploadLimits) -> str:  # fmt: skip
    """Receive, validate and publish one upload; return a success message.

    :raises BadRequest: malformed request, invalid file, or a digest/name/version mismatch.
    :raises PayloadTooLarge: the body is over the limit.
    :raises Conflict: the file (or the same file under another spelling) exists.
    :raises MethodNotAllowed: an ``:action`` other than ``file_upload``.
    """
    try:
        declared = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limits.max_body:
        raise PayloadTooLarge(_too_large(limits))
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        # A client that stalls mid-body must not hold a worker thread forever.
        sock.settimeout(IDLE_TIMEOUT)
    temp = data.new_temp()
    try:
        try:
            form = _receive(environ, temp, limits)
        except ClientGone as exc:
            log.warning("upload aborted by the client: %s", exc)
            raise BadRequest("the upload was incomplete (connection closed)") from exc
        action = form.fields.get(":action", "file_upload")
        if action != "file_upload":
            raise MethodNotAllowed(
                f":action={action} is not supported; this registry accepts only file_upload"
            )
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
        snap = index.snapshot()
        if filename in snap.records:
            raise Conflict(
                f"{filename} already exists; published versions are immutable: bump the version"
            )
        key = wheel_key(filename)
        for other in snap.projects.get(info.name, []):
            if wheel_key(other.filename) == key:
                raise Conflict(
                    f"{filename} already exists as {other.filename}; published versions "
                    "are immutable: bump the version"
                )
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
        )
        data.publish(temp, record, info.metadata)
        index.invalidate()
        log.info("published %s (%d bytes, sha256 %s)", filename, form.size, digest)
        return f"OK: {filename} published\n"
    finally:
        temp.discard()


def _check_form_matches(fields: dict[str, str], name: str, version: str, filename: str) -> None:
    form_name = fields.get("name", "").strip()
    if form_name and canonicalize_name(form_name) != name:
        raise BadRequest(f"form field name={form_name!r} does not match {filename}")
    form_version = fields.get("version", "").strip()
    if form_version and not versions_equal(form_version, version):
        raise BadRequest(f"form field version={form_version!r} does not match {filename}")
