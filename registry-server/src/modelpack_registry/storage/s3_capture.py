"""What a wheel's validation reads, kept while the wheel streams past (the bucket's fast path).

A wheel uploaded to a bucket goes straight into a multipart upload at its final key
(:meth:`.s3_upload.S3Upload.aim`), and the parts of an incomplete multipart upload cannot
be read back. So :class:`WheelCapture` keeps, while the bytes stream by:

- the last :data:`TAIL` bytes (the zip's end-of-central-directory record and its central
  directory: what ``zipfile`` reads to open the archive), and the central directory from
  its first entry when the local entries lead up to it (up to :data:`DIRECTORY_CAP`:
  half a million members);
- every member whose name validation reads (``*.dist-info/METADATA`` and
  ``*.dist-info/modelpack.json``, :data:`WANTED`), local file header and compressed bytes,
  found by parsing the local file headers as they go by, each capped in size.

:class:`CapturedReader` is then a seekable view over those ranges. It never guesses: a read
of any byte outside them raises :class:`NotCaptured` (a 400 naming the problem, not an
``OSError``, so that neither ``zipfile`` nor a "never raises" reader turns it into a wrong
answer), and the upload is aborted. The parse only chooses what to keep; every kept byte is
the upload's own byte at its own offset, so a lying or malformed archive can at worst make
validation ask for a byte that was not kept.
"""

from __future__ import annotations

import io
import re
import struct
from collections import deque
from typing import Any

from modelpack_registry.errors import BadRequest
from modelpack_registry.validate import MAX_MANIFEST_SIZE, MAX_METADATA_SIZE

__all__ = ["TAIL", "WANTED", "CapturedReader", "NotCaptured", "WheelCapture"]

#: bytes kept from the end (the central directory of 50,000 members fits)
TAIL = 8 * 1024 * 1024
#: slack over a member's size cap for its header and a deflate that did not shrink it
_SLACK = 128 * 1024
#: member name -> largest uncompressed size validation reads (what validate.py reads)
WANTED: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"^[^/]+\.dist-info/METADATA$"), MAX_METADATA_SIZE),
    (re.compile(r"^[^/]+\.dist-info/modelpack\.json$"), MAX_MANIFEST_SIZE),
)
#: all captures together (a wheel has one of each; more only from a malformed archive)
_TOTAL_CAP = 2 * (MAX_METADATA_SIZE + MAX_MANIFEST_SIZE + 2 * _SLACK)
_MAX_RANGES = 8
_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
#: the central directory, kept from its first entry when the entries lead up to it
DIRECTORY_CAP = 64 * 1024 * 1024
_HEADER = struct.Struct("<4s5H3L2H")  # signature .. extra length: 30 bytes


class NotCaptured(BadRequest):
    """Validation asked for a byte of a streamed wheel that was not kept (400)."""


class WheelCapture:
    """Fed every byte of a wheel in order; keeps the tail and the wanted members."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.size = 0
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self._ranges: list[tuple[int, bytearray, int]] = []  # start, bytes, wanted length
        self._captured = 0
        self._buf = bytearray()  # unparsed bytes, starting at self._buf_start
        self._buf_start = 0
        self._next = 0  # where the next local header (or the scan) starts
        self._scanning = False  # after a member of unknown size: look for the next header
        self._done = False  # past the last local header

    def feed(self, data: bytes | memoryview) -> None:
        block = bytes(data)
        start = self.size
        self.size += len(block)
        self._keep_tail(block)
        for first, kept, want in self._ranges:
            have = first + len(kept)
            if len(kept) < want and start <= have < self.size:
                kept += block[have - start : have - start + want - len(kept)]
        if self._done or self._next >= self.size:
            return
        if not self._buf:
            self._buf_start = max(start, self._next)
        self._buf += block[self._buf_start + len(self._buf) - start :]
        self._parse()

    def _keep_tail(self, block: bytes) -> None:
        self._tail.append(block)
        self._tail_len += len(block)
        while self._tail_len - len(self._tail[0]) >= TAIL:
            self._tail_len -= len(self._tail.popleft())

    def _parse(self) -> None:
        while not self._done:
            at = self._next - self._buf_start
            if self._scanning:
                found = self._buf.find(_LOCAL, at)
                if found < 0:  # keep 3 bytes: a signature may straddle two blocks
                    self._drop(max(at, len(self._buf) - 3))
                    self._next = self._buf_start
                    return
                self._next, self._scanning = self._buf_start + found, False
                continue
            if len(self._buf) - at < _HEADER.size:
                self._drop(at)
                return
            sig, _, flags, _, _, _, _, csize, usize, nlen, elen = _HEADER.unpack_from(self._buf, at)
            if sig != _LOCAL:
                if sig == _CENTRAL:  # kept whole, also when longer than the tail
                    at_start = self._buf_start + at
                    self._ranges.append((at_start, bytearray(self._buf[at:]), DIRECTORY_CAP))
                self._done = True  # the tail covers what follows (or junk)
                self._buf = bytearray()
                return
            data_at = at + _HEADER.size + nlen + elen
            if len(self._buf) < data_at:
                self._drop(at)
                return
            name = bytes(self._buf[at + _HEADER.size : at + _HEADER.size + nlen])
            extra = bytes(self._buf[at + _HEADER.size + nlen : data_at])
            if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF:
                csize = _zip64_size(extra, usize, csize)
            unknown = (bool(flags & 0x08) and csize == 0) or csize < 0
            cap = _cap(name)
            header_start = self._buf_start + at
            if cap is not None and (unknown or csize <= cap + _SLACK):
                self._capture(header_start, data_at - at + (cap + _SLACK if unknown else csize))
            if unknown:
                self._next, self._scanning = self._buf_start + data_at, True
            else:
                self._next = self._buf_start + data_at + csize
            if self._next >= self._buf_start + len(self._buf):
                self._buf = bytearray()
                return

    def _drop(self, upto: int) -> None:
        """Forget the parsed bytes before buffer index ``upto``."""
        del self._buf[:upto]
        self._buf_start += upto

    def _capture(self, start: int, length: int) -> None:
        if self._captured + length > _TOTAL_CAP or len(self._ranges) >= _MAX_RANGES:
            return  # a malformed archive: what validation needs and lacks is refused
        self._captured += length
        at = start - self._buf_start
        self._ranges.append((start, bytearray(self._buf[at : at + length]), length))

    def reader(self) -> CapturedReader:
        """A seekable view over what was kept (after the last :meth:`feed`)."""
        tail = b"".join(self._tail)
        segments = [(first, bytes(kept)) for first, kept, _ in self._ranges]
        segments.append((self.size - len(tail), tail))
        return CapturedReader(self.filename, self.size, segments)


def _cap(name: bytes) -> int | None:
    text = name.decode("utf-8", "replace")
    return next((cap for pattern, cap in WANTED if pattern.match(text)), None)


def _zip64_size(extra: bytes, usize: int, csize: int) -> int:
    """The compressed size from a zip64 extra field; -1 if it has none (unknown)."""
    at = 0
    while at + 4 <= len(extra):
        tag, size = struct.unpack_from("<2H", extra, at)
        if tag == 0x0001:
            fields = extra[at + 4 : at + 4 + size]
            values = [struct.unpack_from("<Q", fields, i)[0] for i in range(0, len(fields) - 7, 8)]
            index = 1 if usize == 0xFFFFFFFF else 0
            return int(values[index]) if csize == 0xFFFFFFFF and len(values) > index else csize
        at += 4 + size
    return -1


class SeekableReader(io.RawIOBase):
    """A read-only file of ``size`` bytes whose subclass only says how to :meth:`read`
    from ``_pos`` (zipfile seeks, tells and reads into buffers)."""

    size: int
    _pos: int

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class CapturedReader(SeekableReader):
    """A seekable read-only file over the kept ranges of a streamed wheel."""

    def __init__(self, filename: str, size: int, segments: list[tuple[int, bytes]]) -> None:
        super().__init__()
        self.filename = filename
        self.size = size
        self._segments = segments
        self._pos = 0

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed file")
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        parts: list[bytes] = []
        pos = self._pos
        while pos < end:
            piece = next(
                (kept[pos - first : end - first] for first, kept in self._segments
                 if first <= pos < first + len(kept)),
                None,
            )  # fmt: skip
            if piece is None:
                raise NotCaptured(
                    f"{self.filename}: its zip directory points at byte {pos}, outside its "
                    "end and its *.dist-info/METADATA and modelpack.json members as they "
                    "streamed in; the wheel is truncated or malformed (rebuild it, e.g. "
                    "with `python -m build`, and upload again)"
                )
            parts.append(piece)
            pos += len(piece)
        self._pos = pos
        return b"".join(parts)
