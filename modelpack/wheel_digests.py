"""The wheel's own sha256 and blake2b-256, computed while ``build`` writes it, recorded
beside it, so that ``publish`` need not read a multi-GB wheel once more before sending it.

twine sends both digests in its upload form (twine 7 no longer sends md5), and computes
them by reading the whole file before it sends a byte: about 0.85 s per GiB. ``build``
writes every byte of the wheel anyway, so :class:`HashingFile` sits between
:mod:`zipfile` and the file and hands the bytes to :class:`WheelHasher` (sha256 and
blake2b on two threads) in file order. Nothing is read back from the wheel: the zip's
headers and small members are hashed from the bytes written, and a weight file's data,
copied with ``pwrite`` beside :mod:`zipfile`, from the weight file (in the page cache:
the copy has just read it), checked unchanged afterwards.

zipfile rewrites a member's local header once its CRC is known, so bytes are hashed only
once final: :meth:`HashingFile.settle` is called after each member. A member whose bytes
would have to be held in memory beyond :data:`MAX_PENDING` makes the hasher give up:
there is then no record and ``publish`` hashes as before.

**The record** (``dist/.<wheel>.digests.json``, hidden so that ``twine upload dist/*``
does not take it for a distribution) holds the digests and the wheel's identity: size,
mtime and ctime in nanoseconds, inode and device, as :mod:`modelpack.digests` keys the
weights. Any write to the wheel changes its mtime, but a write in the same clock tick as
the last one of ``build`` could leave it as it was ("racy git"); so ``build`` sets the
wheel's mtime back by :data:`~modelpack.digests.RACY_NS` once it is written, and a record
is trusted only if the wheel's mtime is that much older than the record. A later write
then always moves the mtime forward, and the record no longer matches.

A record that is stale or wrong in spite of this (edited by hand, or a clock set back)
can only cost speed: the registry compares the sha256 it receives with the one announced
and refuses the upload, and ``publish`` then says that the wheel changed since it was
built.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from modelpack.digests import RACY_NS, identity

__all__ = [
    "MAX_PENDING",
    "HashingFile",
    "WheelDigests",
    "WheelHasher",
    "drop_record",
    "read_record",
    "record_path",
    "write_record",
]

MAX_PENDING = 64 << 20  # bytes of a member held back until its header is final
_BLOCK = 1 << 20
_QUEUE = 64  # segments waiting for each hashing thread
_VERSION = 1


class WheelDigests(NamedTuple):
    sha256: str  # hex, as twine sends them
    blake2b_256: str


@dataclass(frozen=True)
class _FileRange:
    """*size* bytes of *path* from its start, which must still be as it was at *ident*."""

    path: Path
    size: int
    ident: tuple[int, ...]


_Segment = bytes | _FileRange


class WheelHasher:
    """sha256 and blake2b-256 of the bytes given in order, each on its own thread.

    :meth:`add` takes final bytes or a range of a weight file; :meth:`result` waits and
    returns the digests, or None if a weight file changed or could not be read meanwhile
    (or :meth:`give_up` was called).
    """

    def __init__(self) -> None:
        self._failed = threading.Event()
        self._queues: list[queue.Queue[_Segment | None]] = []
        self._threads: list[threading.Thread] = []
        self._hashers: list[Any] = [hashlib.sha256(), hashlib.blake2b(digest_size=32)]
        for hasher in self._hashers:
            q: queue.Queue[_Segment | None] = queue.Queue(_QUEUE)
            thread = threading.Thread(target=self._run, args=(hasher, q), daemon=True,
                                      name="wheel-hash")  # fmt: skip
            thread.start()
            self._queues.append(q)
            self._threads.append(thread)

    def add(self, segment: _Segment) -> None:
        for q in self._queues:
            q.put(segment)

    def give_up(self) -> None:
        self._failed.set()

    def _run(self, hasher: Any, q: queue.Queue[_Segment | None]) -> None:
        while (segment := q.get()) is not None:
            if self._failed.is_set():
                continue
            if isinstance(segment, bytes):
                hasher.update(segment)
                continue
            try:
                _hash_range(hasher, segment, self._failed)
            except OSError:
                self._failed.set()

    def result(self) -> WheelDigests | None:
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()
        if self._failed.is_set():
            return None
        sha, blake = (str(h.hexdigest()) for h in self._hashers)
        return WheelDigests(sha, blake)


def _hash_range(hasher: Any, part: _FileRange, failed: threading.Event) -> None:
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with part.path.open("rb", buffering=0) as f:
        fd = f.fileno()
        if identity(os.fstat(fd)) != part.ident:
            failed.set()
            return
        offset = 0
        while offset < part.size and not failed.is_set():
            n = os.preadv(fd, [view[: min(_BLOCK, part.size - offset)]], offset)
            if n == 0:
                break
            hasher.update(view[:n])
            offset += n
        if offset != part.size or identity(os.fstat(fd)) != part.ident:
            failed.set()


class HashingFile:
    """The wheel being written, as :mod:`zipfile` sees it: every write also goes to a
    :class:`WheelHasher` once the bytes it wrote are final (see :meth:`settle`)."""

    def __init__(self, raw: IO[bytes], hasher: WheelHasher) -> None:
        self._raw = raw
        self.hasher = hasher
        self.name = getattr(raw, "name", None)
        self._done = 0  # bytes before this offset were given to the hasher
        self._pending: list[tuple[int, bytearray | _FileRange]] = []
        self._end = 0
        self._held = 0
        self.broken = False

    # -- the file API zipfile uses --------------------------------------------------
    def write(self, data: Any) -> int:
        pos = self._raw.tell()
        n = self._raw.write(data)
        if not self.broken:
            self._note(pos, bytes(memoryview(data)[:n]))
        return n

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()

    # -- hashing --------------------------------------------------------------------
    def _note(self, pos: int, data: bytes) -> None:
        if pos == self._end:
            last = self._pending[-1][1] if self._pending else None
            if isinstance(last, bytearray):
                last += data
            else:
                self._pending.append((pos, bytearray(data)))
            self._end += len(data)
            self._held += len(data)
            if self._held > MAX_PENDING:
                self._break()
            return
        for start, chunk in self._pending:  # a header rewritten in place
            if (
                isinstance(chunk, bytearray)
                and start <= pos
                and pos + len(data) <= start + len(chunk)
            ):
                chunk[pos - start : pos - start + len(data)] = data
                return
        self._break()  # a write zipfile is not known to make: hash nothing

    def copied(self, pos: int, path: Path, size: int, st: os.stat_result) -> None:
        """*size* bytes of *path* (as it was at *st*) were written at *pos* with ``pwrite``."""
        if self.broken:
            return
        if pos != self._end:
            self._break()
            return
        self._pending.append((pos, _FileRange(path, size, identity(st))))
        self._end += size

    def settle(self) -> None:
        """Everything written so far is final: hand it to the hasher."""
        if self.broken:
            return
        for _, chunk in self._pending:
            self.hasher.add(bytes(chunk) if isinstance(chunk, bytearray) else chunk)
        self._done = self._end
        self._pending.clear()
        self._held = 0

    def _break(self) -> None:
        self.broken = True
        self._pending.clear()
        self.hasher.give_up()

    def digests(self) -> WheelDigests | None:
        """The wheel's digests once it is closed; None if they could not be computed."""
        self.settle()
        result = self.hasher.result()
        return None if self.broken else result


# -- the record beside the wheel -----------------------------------------------------
def record_path(wheel: Path) -> Path:
    return wheel.with_name(f".{wheel.name}.digests.json")


def write_record(wheel: Path, digests: WheelDigests) -> None:
    """Set *wheel*'s mtime back by ``RACY_NS``, then record *digests* under its identity.

    A failure to write is not an error: without a record, ``publish`` hashes the wheel.
    """
    now = time.time_ns()
    record = record_path(wheel)
    try:
        st = os.stat(wheel)
        os.utime(wheel, ns=(st.st_atime_ns, min(st.st_mtime_ns, now - RACY_NS - 1)))
        st = os.stat(wheel)
        data = {
            "version": _VERSION, "wheel": wheel.name, "id": list(identity(st)),
            "recorded_ns": time.time_ns(), "sha256": digests.sha256,
            "blake2b_256": digests.blake2b_256,
        }  # fmt: skip
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
        os.replace(tmp, record)
    except OSError:
        drop_record(wheel)


def drop_record(wheel: Path) -> None:
    try:
        record_path(wheel).unlink()
    except OSError:
        pass


def read_record(wheel: Path) -> WheelDigests | None:
    """The digests recorded for *wheel* as it is now; None when there is no record, or
    the wheel is not the file it describes (rewritten, touched, moved to another disk)."""
    try:
        data = json.loads(record_path(wheel).read_text(encoding="utf-8"))
        st = os.stat(wheel)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        return None
    sha, blake, recorded = data.get("sha256"), data.get("blake2b_256"), data.get("recorded_ns")
    if (
        data.get("wheel") != wheel.name
        or data.get("id") != list(identity(st))
        or not isinstance(recorded, int)
        or st.st_mtime_ns > recorded - RACY_NS
        or not (isinstance(sha, str) and len(sha) == 64 and _is_hex(sha))
        or not (isinstance(blake, str) and len(blake) == 64 and _is_hex(blake))
    ):
        return None
    return WheelDigests(sha.lower(), blake.lower())


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
