"""Serving ``/packages/<filename>`` and ``/packages/<filename>.metadata``.

Only files the in-memory index knows are served, and the path is built from the
index's record, never from the request: nothing outside ``DATA/packages`` (and the
matching ``DATA/meta/<file>.metadata``) can be reached. Bodies go through
``wsgi.file_wrapper`` (gunicorn uses ``sendfile``), with single ``Range`` requests
(206/416), an ``ETag`` (the sha256), ``Last-Modified`` and ``If-None-Match`` /
``If-Modified-Since`` (304).
"""

from __future__ import annotations

import email.utils
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from modelpack_registry.errors import NotFound
from modelpack_registry.index import Snapshot

__all__ = ["SENT_BY_SENDFILE", "Response", "content_type", "serve_file", "serve_path"]

BLOCK = 1 << 20
#: ``environ`` key: bytes of the body the server sent with sendfile (see :class:`_Counted`)
SENT_BY_SENDFILE = "modelpack.sent_by_sendfile"
Response = tuple[str, list[tuple[str, str]], Iterable[bytes]]


def _parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """(start, end inclusive) for one satisfiable range; None to ignore; False if 416."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # multiple ranges: answer with the whole file (allowed by RFC 9110)
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            length = int(last)
            if length <= 0:
                return False
            return (max(size - length, 0), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return False
    return (start, min(end, size - 1))


def serve_file(environ: dict[str, Any], snap: Snapshot, name: str, data_meta: Path,
               packages: Path) -> Response:  # fmt: skip
    """Answer a GET/HEAD for ``/packages/<name>``.

    :raises NotFound: if ``name`` is not a listed distribution or its ``.metadata``.
    """
    record = snap.records.get(name)
    if record is not None:
        path, etag_hex = packages / record.filename, record.sha256
        ctype = "application/zip" if name.endswith((".whl", ".zip")) else "application/gzip"
    elif name.endswith(".metadata") and name[: -len(".metadata")] in snap.records:
        record = snap.records[name[: -len(".metadata")]]
        if not record.core_metadata_sha256:
            raise NotFound(f"{record.filename} has no core metadata file")
        path, etag_hex = data_meta / f"{record.filename}.metadata", record.core_metadata_sha256
        ctype = "text/plain; charset=utf-8"
    else:
        raise NotFound(f"no such file: {name}")
    return serve_path(environ, path, etag_hex, ctype, name)


def content_type(filename: str) -> str:
    """The ``Content-Type`` of a distribution or ``.metadata`` file."""
    if filename.endswith(".metadata"):
        return "text/plain; charset=utf-8"
    return "application/zip" if filename.endswith((".whl", ".zip")) else "application/gzip"


def serve_path(environ: dict[str, Any], path: Path, etag_hex: str, ctype: str,
               name: str) -> Response:  # fmt: skip
    """Answer a GET/HEAD with the file at ``path`` (a path the caller built safely).

    :raises NotFound: if it cannot be opened.
    """
    try:
        f = open(path, "rb")  # closed by the WSGI server via file_wrapper
    except OSError:
        raise NotFound(f"no such file: {name}") from None
    try:
        stat = os.fstat(f.fileno())
        size = stat.st_size
        etag = f'"{etag_hex}"'
        last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        headers = [
            ("Content-Type", ctype),
            ("ETag", etag),
            ("Last-Modified", last_modified),
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", "public, max-age=31536000, immutable"),
        ]
        if _not_modified(environ, etag, stat.st_mtime):
            f.close()
            return "304 Not Modified", headers, []
        status, start, length = "200 OK", 0, size
        range_header = environ.get("HTTP_RANGE")
        if range_header and _if_range_ok(environ, etag):
            parsed = _parse_range(range_header, size)
            if parsed is False:
                f.close()
                headers.append(("Content-Range", f"bytes */{size}"))
                headers.append(("Content-Length", "0"))
                return "416 Range Not Satisfiable", headers, []
            if isinstance(parsed, tuple):
                start, end = parsed
                status, length = "206 Partial Content", end - start + 1
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        headers.append(("Content-Length", str(length)))
        if environ.get("REQUEST_METHOD") == "HEAD":
            f.close()
            return status, headers, []
        f.seek(start)
        if "wsgi.file_wrapper" in environ:
            # gunicorn's sendfile sends Content-Length bytes from the current offset.
            return status, headers, environ["wsgi.file_wrapper"](_Counted(f, environ), BLOCK)
        return status, headers, _read_slice(f, length)
    except BaseException:
        f.close()
        raise


class _Counted:
    """The file handed to ``wsgi.file_wrapper``, noting how many bytes sendfile sent.

    gunicorn counts only the bytes it writes itself, so its access log said 0 for every
    file it sent with ``socket.sendfile``. That call leaves the file's position after the
    last byte sent, also when the client goes away (documented), through ``seek``: this
    proxy puts the count in ``environ[SENT_BY_SENDFILE]``, which the access logger
    (:mod:`~modelpack_registry.accesslog`) adds. Reads (no sendfile: TLS) are counted
    by the server as usual.
    """

    def __init__(self, f: BinaryIO, environ: dict[str, Any]) -> None:
        self._f = f
        self._start = f.tell()
        self._environ = environ

    def fileno(self) -> int:
        return self._f.fileno()

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._f.seek(offset, whence)
        self._environ[SENT_BY_SENDFILE] = max(position - self._start, 0)
        return position

    def close(self) -> None:
        self._f.close()


def _read_slice(f: Any, length: int) -> Iterable[bytes]:
    try:
        while length > 0:
            block = f.read(min(BLOCK, length))
            if not block:
                break
            length -= len(block)
            yield block
    finally:
        f.close()


def _not_modified(environ: dict[str, Any], etag: str, mtime: float) -> bool:
    inm = environ.get("HTTP_IF_NONE_MATCH")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = environ.get("HTTP_IF_MODIFIED_SINCE")
    if ims:
        try:
            since = email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
        return int(mtime) <= since
    return False


def _if_range_ok(environ: dict[str, Any], etag: str) -> bool:
    if_range = environ.get("HTTP_IF_RANGE")
    return if_range is None or if_range.strip() == etag
