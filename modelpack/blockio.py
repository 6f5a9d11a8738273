"""Weight files read and copied in blocks, by offset: the hashing passes and the copy
that :mod:`modelpack.assemble` runs on separate threads (each ``preadv``s the page cache
itself, so none waits for another).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import sys
import threading
import zlib
from collections.abc import Iterator
from typing import Any

from modelpack.errors import BuildError

__all__ = ["CHUNK", "blocks", "copy_at", "crc32_of", "sha256_of"]

CHUNK = 4 << 20
_WRITE = 1 << 20


def blocks(fd: int, size: int, stop: threading.Event | None = None) -> Iterator[memoryview]:
    """*fd*'s first *size* bytes in blocks of one reused buffer (``preadv``: no position),
    until *stop* is set."""
    view = memoryview(bytearray(CHUNK))
    offset = 0
    while offset < size and not (stop and stop.is_set()):
        n = os.preadv(fd, [view[: min(CHUNK, size - offset)]], offset)
        if n == 0:
            return
        yield view[:n]
        offset += n


def sha256_of(fd: int, size: int, stop: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    for block in blocks(fd, size, stop):
        digest.update(block)
    return digest.hexdigest()


def crc32_of(fd: int, size: int, stop: threading.Event | None = None) -> int:
    crc = 0
    for block in blocks(fd, size, stop):
        crc = zlib.crc32(block, crc)
    return crc


def copy_at(src: int, dst: int, dst_offset: int, size: int) -> None:
    """Copy *src*'s first *size* bytes to *dst* at *dst_offset*: preallocated, in writes
    of 1 MiB.

    Measured (Linux 6.18, ext4, 512 MiB, warm cache): 1 or 2 MiB writes copy in 0.12 s
    every time (``cp``: 0.13 s), and in 0.085 s into preallocated space. 4 MiB writes
    take 0.12 s, or 0.5-0.7 s of kernel time when the memory they land in has been free
    for a few seconds (large page-cache folios, on a VM whose balloon hands free memory
    back to the host); 256 KiB writes take 0.14 s and 16 KiB ones 0.30 s.

    :raises BuildError: the disk is full, or *src* ended early (it shrank meanwhile).
    """
    done = 0
    try:
        _preallocate(dst, dst_offset, size)
        for block in blocks(src, size):
            while block:
                n = os.pwrite(dst, block[:_WRITE], dst_offset + done)
                block, done = block[n:], done + n
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise BuildError(
            f"the disk of dist/ is full after {done} of {size} bytes of weights; "
            "free some space and build again"
        ) from exc
    if done != size:
        raise BuildError(f"a weight file ended after {done} of {size} bytes; build again")


def _preallocate(fd: int, offset: int, size: int) -> None:
    """Reserve *size* bytes at *offset* in one go (Linux ``fallocate``), where the
    filesystem can; elsewhere nothing. Not ``os.posix_fallocate``: where the filesystem
    cannot, glibc emulates it by writing every block, which would double the work.

    :raises OSError: ENOSPC or EDQUOT, the disk is full.
    """
    fallocate = _fallocate()
    if fallocate is None or size == 0:
        return
    if fallocate(fd, 0, offset, size) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(err, os.strerror(err))


@functools.cache
def _fallocate() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func
