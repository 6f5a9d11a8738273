"""Streaming a blob into a bucket, reading it back while unlisted, and publishing it.

:class:`S3Upload` holds one part in memory (16 MiB by default) and sends each full part
with ``UploadPart`` to a multipart upload at a staging key
``tmp/upload-<unix time>-<pid>-<random>.part``;
:meth:`~S3Upload.finish` completes it there. :meth:`~S3Upload.reader` reads the staged
object with ranged GETs (:class:`S3Reader`), so a wheel's zip directory and ``METADATA``
are checked without downloading it. :meth:`~S3Upload.commit` publishes it with a server-side
multipart copy (``UploadPartCopy``, no byte passes through the registry) completed with
``If-None-Match: *``: if the key exists the copy is aborted and nothing changes.
(``CopyObject`` also takes ``If-None-Match`` on AWS, but moto ignores it, and it stops at
5 GiB; the multipart copy works on both and for every size.)

The fast path for wheels (:meth:`S3Upload.aim`, called once the file name is known and
before the first byte of the file): the parts go straight to a multipart upload at the
final key ``packages/<file>``, which stays unlisted (an incomplete multipart upload is not
an object) until :meth:`~S3Upload.commit` completes it with ``If-None-Match: *``. No
staged object and no copy: a 1 GiB upload costs what ``boto3`` ``upload_file`` costs. As
those parts cannot be read back, validation reads what :class:`.s3_capture.WheelCapture`
kept as they streamed by (the end of the zip and its ``.dist-info`` members); a read
outside that is a 400 and the multipart upload is aborted.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from modelpack_registry.errors import StorageError
from modelpack_registry.storage.base import AlreadyExists
from modelpack_registry.storage.s3_capture import SeekableReader, WheelCapture

if TYPE_CHECKING:
    from pathlib import Path

    from modelpack_registry.storage.s3 import S3Store

__all__ = ["S3Reader", "S3Upload"]

#: a part of the server-side copy (S3 allows 5 MiB to 5 GiB)
COPY_PART = 512 * 1024 * 1024
COPY_THREADS = 4


class S3Upload:
    """A blob streamed into a multipart upload (see the module docstring)."""

    def __init__(self, store: S3Store, part_size: int) -> None:
        self.store = store
        # the start time in the name: the sweep's clock (moto reports a fixed Initiated)
        self.key = f"tmp/upload-{int(time.time())}-{os.getpid()}-{secrets.token_hex(8)}.part"
        self.full = store.full(self.key)
        self._part_size = part_size
        self._buf: bytearray | None = bytearray()  # grows to one part, no more
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._finished = False
        self._gone = False
        self._aimed: str | None = None  # the fast path's final key
        self._capture: WheelCapture | None = None
        self._whole: bytes | None = None  # the fast path's bytes when under one part

    def aim(self, key: str, filename: str) -> None:
        """Stream straight to ``key`` and validate from what streams by (a wheel; see the
        module docstring). Only before the first byte; :meth:`commit` must then name ``key``."""
        if self._size or self._upload_id is not None or self._finished:
            raise ValueError("aim() after the first write")
        self.store.full(key)  # checks the key
        self.key, self.full, self._aimed = key, self.store.full(key), key
        self._capture = WheelCapture(filename)

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | memoryview) -> None:
        if self._buf is None:
            raise ValueError("write() after finish() or abort()")
        view = memoryview(data).cast("B")
        if self._capture is not None:
            self._capture.feed(view)
        while view:
            n = min(len(view), self._part_size - len(self._buf))
            self._buf += view[:n]
            self._size += n
            view = view[n:]
            if len(self._buf) == self._part_size:
                self._send_part(self._buf)
                self._buf = bytearray()

    def _send_part(self, body: bytes | bytearray) -> None:
        client, bucket = self.store.client, self.store.bucket
        if self._upload_id is None:
            answer = self.store.call(
                "starting an upload",
                lambda: client.create_multipart_upload(Bucket=bucket, Key=self.full),
            )
            self._upload_id = str(answer["UploadId"])
        number = len(self._parts) + 1
        answer = self.store.call(
            "uploading a part",
            lambda: client.upload_part(Bucket=bucket, Key=self.full, UploadId=self._upload_id,
                                       PartNumber=number, Body=body),
        )  # fmt: skip
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def finish(self) -> None:
        if self._finished:
            return
        buf, client, bucket = self._buf, self.store.client, self.store.bucket
        assert buf is not None, "finish() after abort()"
        rest = bytes(buf)
        self._buf = None  # the part buffer is not needed any more
        if self._aimed is not None:  # the fast path: completed by commit() only
            if self._upload_id is None:
                self._whole = rest
            elif rest:
                self._send_part(rest)
        elif self._upload_id is None:
            self.store.call(
                "storing an upload",
                lambda: client.put_object(Bucket=bucket, Key=self.full, Body=rest),
            )
        else:
            if rest:
                self._send_part(rest)
            parts = {"Parts": self._parts}
            self.store.call(
                "completing an upload",
                lambda: client.complete_multipart_upload(Bucket=bucket, Key=self.full,
                                                         UploadId=self._upload_id,
                                                         MultipartUpload=parts),
            )  # fmt: skip
            self._upload_id = None
        self._finished = True

    def reader(self) -> BinaryIO:
        if not self._finished:
            raise ValueError("reader() before finish()")
        if self._whole is not None:
            return io.BytesIO(self._whole)
        if self._capture is not None:
            return cast(BinaryIO, self._capture.reader())
        return cast(BinaryIO, S3Reader(self.store, self.full, self._size))

    def local_path(self) -> Path | None:
        return None

    def commit(self, key: str) -> None:
        """Copy the staged object to ``key`` server side, only if ``key`` is absent."""
        if not self._finished:
            raise ValueError("commit() before finish()")
        store, client, bucket = self.store, self.store.client, self.store.bucket
        target = store.full(key)
        if store.head(target) is not None:  # cheap early answer; the copy checks again
            raise AlreadyExists(f"{key} exists")
        if self._aimed is not None:
            self._complete_aimed(key)
            return  # nothing staged: self.full is the published object
        if self._size == 0:
            store.put_new(key, b"")
        else:
            answer = store.call(
                f"publishing {key}",
                lambda: client.create_multipart_upload(Bucket=bucket, Key=target),
            )
            upload_id = str(answer["UploadId"])
            try:
                parts = self._copy_parts(target, upload_id)
                store.conditional(
                    f"publishing {key}", key,
                    lambda: client.complete_multipart_upload(
                        Bucket=bucket, Key=target, UploadId=upload_id,
                        MultipartUpload={"Parts": parts}, IfNoneMatch="*"),
                    new=True,
                )  # fmt: skip
            except BaseException:
                self._abort_multipart(target, upload_id)
                raise
        self._delete_staged()

    def _complete_aimed(self, key: str) -> None:
        """The fast path's commit: complete the multipart upload at ``key`` if absent."""
        if key != self._aimed:
            raise ValueError(f"commit({key!r}) of an upload aimed at {self._aimed!r}")
        if self._whole is not None:
            self.store.put_new(key, self._whole)
        else:
            client, bucket, parts = self.store.client, self.store.bucket, self._parts
            self.store.conditional(
                f"publishing {key}", key,
                lambda: client.complete_multipart_upload(
                    Bucket=bucket, Key=self.full, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts}, IfNoneMatch="*"),
                new=True,
            )  # fmt: skip
            self._upload_id = None  # done: nothing left to abort
        self._gone = True  # never delete the published object

    def _copy_parts(self, target: str, upload_id: str) -> list[dict[str, Any]]:
        client, bucket = self.store.client, self.store.bucket
        ranges = [(start, min(start + COPY_PART, self._size))
                  for start in range(0, self._size, COPY_PART)]  # fmt: skip

        def copy(number: int) -> dict[str, Any]:
            start, end = ranges[number - 1]
            answer = self.store.call(
                "copying a part",
                lambda: client.upload_part_copy(
                    Bucket=bucket, Key=target, UploadId=upload_id, PartNumber=number,
                    CopySource={"Bucket": bucket, "Key": self.full},
                    CopySourceRange=f"bytes={start}-{end - 1}"),
            )  # fmt: skip
            return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

        if len(ranges) == 1:
            return [copy(1)]
        with ThreadPoolExecutor(min(COPY_THREADS, len(ranges))) as pool:
            return list(pool.map(copy, range(1, len(ranges) + 1)))

    def _abort_multipart(self, full: str, upload_id: str) -> None:
        client, bucket = self.store.client, self.store.bucket
        # on failure, sweep_uploads and the bucket's lifecycle rule clean it up
        with contextlib.suppress(StorageError):
            self.store.call(
                "aborting an upload",
                lambda: client.abort_multipart_upload(Bucket=bucket, Key=full, UploadId=upload_id),
            )

    def _delete_staged(self) -> None:
        if self._aimed is not None:  # never: self.full is the final key
            raise AssertionError("the fast path has no staged object")
        with contextlib.suppress(StorageError):  # else sweep_uploads removes it later
            self.store.call(
                "removing a staged upload",
                lambda: self.store.client.delete_object(Bucket=self.store.bucket, Key=self.full),
            )
        self._gone = True

    def abort(self) -> None:
        """Forget the bytes: abort the multipart upload or delete the staged object."""
        self._buf = None
        if self._upload_id is not None:
            self._abort_multipart(self.full, self._upload_id)
            self._upload_id = None
        if self._finished and not self._gone and self._aimed is None:
            self._delete_staged()
        self._gone = True


class S3Reader(SeekableReader):
    """A seekable read-only file over one object, with ranged GETs and a read-ahead buffer.

    Sequential reads fetch growing ranges (256 KiB, doubling up to 8 MiB), then switch to
    one open-ended GET streamed as it is read (a download through the registry: one
    request, not one per 8 MiB). The first read in the last MiB fetches that whole MiB,
    where a zip keeps its directory (and a wheel its ``.dist-info``), so ``zipfile``
    opens a wheel and reads ``METADATA`` in one or two requests.
    """

    TAIL = 1024 * 1024
    FIRST = 256 * 1024
    MAX = 8 * 1024 * 1024

    def __init__(self, store: S3Store, full_key: str, size: int) -> None:
        super().__init__()
        self.store = store
        self.full_key = full_key
        self.size = size
        self.requests = 0
        self._pos = 0
        self._buf = b""
        self._buf_start = 0
        self._chunk = self.FIRST
        self._stream: Any = None
        self._stream_pos = 0

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed file")
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if end <= self._pos:
            return b""
        start = self._pos
        if self._buf_start <= start and end <= self._buf_start + len(self._buf):
            data = self._buf[start - self._buf_start : end - self._buf_start]
        elif self._stream is not None and self._stream_pos == start:
            data = self._read_stream(end - start)
        else:
            self._close_stream()
            sequential = start == self._buf_start + len(self._buf) and start > 0
            if sequential and self._chunk >= self.MAX and end - start <= self.MAX:
                self._open_stream(start)
                data = self._read_stream(end - start)
            else:
                self._fill(start, end, sequential)
                data = self._buf[start - self._buf_start : end - self._buf_start]
        self._pos = start + len(data)
        return data

    def _fill(self, start: int, end: int, sequential: bool) -> None:
        if start >= self.size - self.TAIL and end - start <= self.TAIL:
            lo, hi = max(0, self.size - self.TAIL), self.size
        else:
            self._chunk = min(self._chunk * 2, self.MAX) if sequential else self.FIRST
            lo, hi = start, min(self.size, max(end, start + self._chunk))
        self.requests += 1
        self._buf = self.store.get_range(self.full_key, lo, hi)
        self._buf_start = lo
        if len(self._buf) < min(end, self.size) - lo:
            raise OSError(f"{self.full_key}: the object is shorter than {self.size} bytes")

    def _open_stream(self, start: int) -> None:
        client, bucket = self.store.client, self.store.bucket
        self.requests += 1
        answer = self.store.call(
            f"reading {self.full_key}",
            lambda: client.get_object(Bucket=bucket, Key=self.full_key, Range=f"bytes={start}-"),
        )
        self._stream, self._stream_pos = answer["Body"], start
        self._buf, self._buf_start = b"", start

    def _read_stream(self, n: int) -> bytes:
        parts: list[bytes] = []
        want = n
        while want > 0:
            chunk = self.store.call(f"reading {self.full_key}", partial(self._stream.read, want))
            if not chunk:
                raise OSError(f"{self.full_key}: the object is shorter than {self.size} bytes")
            parts.append(chunk)
            want -= len(chunk)
        self._stream_pos += n
        return b"".join(parts)

    def _close_stream(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._close_stream()
        super().close()
