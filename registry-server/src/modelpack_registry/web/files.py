"""Serving ``/packages/<filename>`` and ``/packages/<filename>.metadata``.

Only files the in-memory index knows are served, and the key is built from the
index's record, never from the request: nothing but ``packages/<file>`` (and the
matching ``meta/<file>.metadata``) can be reached. How, depends on the store:

- a local file (a data folder): through ``wsgi.file_wrapper`` (gunicorn uses
  ``sendfile``);
- else, when the server redirects (``Config.storage_redirect``) and the store gives a
  short-lived download URL (a bucket's presigned GET), a distribution is answered with
  ``302`` to it (``Cache-Control: no-store``: the URL expires). PEP 658 ``.metadata``
  files are always served by the registry;
- else streamed from :meth:`~modelpack_registry.storage.base.Store.open` /
  :meth:`~modelpack_registry.storage.base.Store.read_range`.

Served bodies get single ``Range`` requests (206/416), an ``ETag`` (the sha256),
``Last-Modified`` and ``If-None-Match`` / ``If-Modified-Since`` (304).
"""

from __future__ import annotations

import email.utils
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from modelpack_registry.errors import NotFound, StorageError
from modelpack_registry.index import Snapshot
from modelpack_registry.storage import DataDir, Store
from modelpack_registry.storage.base import keys

__all__ = [
    "SENT_BY_SENDFILE",
    "Response",
    "content_type",
    "serve_file",
    "serve_path",
    "serve_stored",
]

BLOCK = 1 << 20
#: Seconds a redirect's download URL stays valid (``serve --s3-url-ttl``).
REDIRECT_EXPIRES = 300
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


def serve_file(environ: dict[str, Any], snap: Snapshot, name: str, data: DataDir,
               redirect: bool = False, expires: int = REDIRECT_EXPIRES) -> Response:  # fmt: skip
    """Answer a GET/HEAD for ``/packages/<name>`` (see the module docstring);
    ``expires``: seconds a redirect's URL stays valid.

    :raises NotFound: if ``name`` is not a listed distribution or its ``.metadata``.
    """
    record = snap.records.get(name)
    if record is not None:
        key, etag_hex = keys.package(record.filename), record.sha256
    elif name.endswith(".metadata") and name[: -len(".metadata")] in snap.records:
        record = snap.records[name[: -len(".metadata")]]
        if not record.core_metadata_sha256:
            raise NotFound(f"{record.filename} has no core metadata file")
        key, etag_hex = keys.metadata(record.filename), record.core_metadata_sha256
        redirect = False
    else:
        raise NotFound(f"no such file: {name}")
    store = data.store
    path = store.local_path(key)
    if path is not None:
        return serve_path(environ, path, etag_hex, content_type(name), name)
    if redirect:
        url = store.download_url(key, expires)
        if url is not None:
            headers = [("Location", url), ("Cache-Control", "no-store"), ("Content-Length", "0")]
            return "302 Found", headers, []
    return serve_stored(environ, store, key, etag_hex, content_type(name), name)


def serve_stored(environ: dict[str, Any], store: Store, key: str, etag_hex: str, ctype: str,
                 name: str) -> Response:  # fmt: skip
    """Answer a GET/HEAD with the object ``key`` of ``store``, streamed in blocks.

    :raises NotFound: if it does not exist.
    """
    try:
        info = store.stat(key)
    except (StorageError, OSError):
        info = None
    if info is None:
        raise NotFound(f"no such file: {name}")
    status, headers, start, length = _answer(environ, info.size, info.mtime, etag_hex, ctype)
    if length < 0 or environ.get("REQUEST_METHOD") == "HEAD":
        return status, headers, []
    return status, headers, _stream(store, key, start, length, info.size)


def _stream(store: Store, key: str, start: int, length: int, size: int) -> Iterable[bytes]:
    if start == 0 and length == size:
        f = store.open(key)
        yield from _read_slice(f, length)
        return
    end = start + length
    while start < end:
        block = store.read_range(key, start, min(start + BLOCK, end))
        if not block:
            return
        start += len(block)
        yield block


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
        status, headers, start, length = _answer(
            environ, stat.st_size, stat.st_mtime, etag_hex, ctype
        )
        if length < 0 or environ.get("REQUEST_METHOD") == "HEAD":
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


def _answer(environ: dict[str, Any], size: int, mtime: float, etag_hex: str,
            ctype: str) -> tuple[str, list[tuple[str, str]], int, int]:  # fmt: skip
    """Status, headers, first byte and length of the body (-1: no body: 304/416)."""
    etag = f'"{etag_hex}"'
    headers = [
        ("Content-Type", ctype),
        ("ETag", etag),
        ("Last-Modified", email.utils.formatdate(mtime, usegmt=True)),
        ("Accept-Ranges", "bytes"),
        ("Cache-Control", "public, max-age=31536000, immutable"),
    ]
    if _not_modified(environ, etag, mtime):
        return "304 Not Modified", headers, 0, -1
    status, start, length = "200 OK", 0, size
    range_header = environ.get("HTTP_RANGE")
    if range_header and _if_range_ok(environ, etag):
        parsed = _parse_range(range_header, size)
        if parsed is False:
            headers.append(("Content-Range", f"bytes */{size}"))
            headers.append(("Content-Length", "0"))
            return "416 Range Not Satisfiable", headers, 0, -1
        if isinstance(parsed, tuple):
            start, end = parsed
            status, length = "206 Partial Content", end - start + 1
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    headers.append(("Content-Length", str(length)))
    return status, headers, start, length


class _Counted:
    """The file handed to ``wsgi.file_wrapper``, noting how many bytes sendfile sent.

    gunicorn counts only the bytes it writes itself, so its access log said 0 for every
    file it sent with ``socket.sendfile``. That call leaves the file's position after the
    last byte sent, also when the client goes away (documented), through ``seek``: this
    proxy puts the count in ``environ[SENT_BY_SENDFILE]``, which the access logger
    (:mod:`~modelpack_registry.web.accesslog`) adds. Reads (no sendfile: TLS) are counted
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
