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

    def __init__(self, raw: IO[bytes], seekable: bool | None = None) -> None:
        self._raw = raw
        self._pending = b""
        self._pos = 0
        try:
            self._seekable = raw.seekable() if seekable is None else seekable
        except (AttributeError, OSError):
            self._seekable = False

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise ValueError("unbounded read")
        if n > self.BIG:  # payloads are skipped by the caller; this is a hostile length
            raise ValueError(f"an argument of {n} bytes")
        out = b""
        if self._pending:
            out, self._pending = self._pending[:n], self._pending[n:]
        if len(out) < n:
            out += self._raw.read(n - len(out))
        self._pos += len(out)
        return out

    def readline(self) -> bytes:
        line = b""
        if self._pending:
            idx = self._pending.find(b"\n")
            if idx >= 0:
                line, self._pending = self._pending[: idx + 1], self._pending[idx + 1 :]
                self._pos += len(line)
                return line
            line, self._pending = self._pending, b""
        line += self._raw.readline(1 << 20)
        self._pos += len(line)
        return line

    def peek(self, n: int) -> bytes:
        """Up to *n* next bytes, left in the stream."""
        if len(self._pending) < n:
            self._pending += self._raw.read(n - len(self._pending))
        return self._pending[:n]

    def skip(self, n: int) -> None:
        """Move *n* bytes forward; :class:`EOFError` when the stream is shorter."""
        take = min(n, len(self._pending))
        self._pending = self._pending[take:]
        self._pos += take
        left = n - take
        if left and self._seekable:
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
