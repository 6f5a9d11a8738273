"""A forward-only byte stream for the scanner: reads, skips and peeks, never holds a payload.

A pickle of a big array carries its bytes as one opcode argument (``BINBYTES8``,
``BYTEARRAY8``...) and joblib writes arrays inline. The scanner skips anything over
:attr:`Stream.BIG` bytes (a seek on a file, a read-and-discard in a decompressing or
zip member stream) instead of reading it, so scanning a multi-GB file stays flat in
memory; a read over that size is refused.
"""

from __future__ import annotations

import io
from typing import IO

__all__ = ["Stream"]

_CHUNK = 1 << 20


class Stream:
    BIG = 16 << 20
    _FILL = 1 << 16

    def __init__(self, raw: IO[bytes], seekable: bool | None = None) -> None:
        self._raw = raw
        self._buf = b""  # read ahead from raw; the stream stands at self._off in it
        self._off = 0
        self._pos = 0
        try:
            self._seekable = raw.seekable() if seekable is None else seekable
        except (AttributeError, OSError):
            self._seekable = False

    def tell(self) -> int:
        return self._pos

    def _fill(self, n: int) -> int:
        """Buffer at least *n* bytes ahead (fewer at the end); return how many are."""
        avail = len(self._buf) - self._off
        while avail < n:
            chunk = self._raw.read(max(n - avail, self._FILL))
            if not chunk:
                break
            self._buf = self._buf[self._off :] + chunk
            self._off = 0
            avail = len(self._buf)
        return avail

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("unbounded read")
        if n > self.BIG:  # payloads are skipped by the caller; this is a hostile length
            raise ValueError(f"an argument of {n} bytes")
        off = self._off
        if len(self._buf) - off < n:
            self._fill(n)
            off = self._off
        out = self._buf[off : off + n]
        self._off = off + len(out)
        self._pos += len(out)
        return out

    def readline(self) -> bytes:
        """One line, at most 1 MiB (a longer one comes back cut, and fails to parse)."""
        limit = 1 << 20
        while True:
            idx = self._buf.find(b"\n", self._off, self._off + limit)
            if idx >= 0:
                n = idx + 1 - self._off
                break
            have = len(self._buf) - self._off
            if have >= limit or self._fill(have + self._FILL) == have:
                n = min(have, limit)
                break
        return self.read(n)

    def peek(self, n: int) -> bytes:
        """Up to *n* next bytes, left in the stream."""
        self._fill(n)
        return self._buf[self._off : self._off + n]

    def skip(self, n: int) -> None:
        """Move *n* bytes forward; :class:`EOFError` when the stream is shorter."""
        take = min(n, len(self._buf) - self._off)
        self._off += take
        self._pos += take
        left = n - take
        if not left:
            return
        self._buf, self._off = b"", 0
        if self._seekable:
            here = self._raw.tell()
            end = self._raw.seek(0, io.SEEK_END)
            if here + left > end:
                self._raw.seek(end)
                self._pos += end - here
                raise EOFError(f"a payload of {n} bytes runs past the end of the data")
            self._raw.seek(here + left)
            self._pos += left
            return
        while left:
            got = len(self._raw.read(min(left, _CHUNK)))
            if not got:
                raise EOFError(f"a payload of {n} bytes runs past the end of the data")
            left -= got
            self._pos += got
