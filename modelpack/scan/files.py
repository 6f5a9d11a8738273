"""Find every pickle in a weight file by its content, whatever the file is called.

A file is taken apart by its first bytes, the way the loaders that could open it
decide: ``.npy`` (``\\x93NUMPY``; an object array's data is a pickle), zip (``.npz``,
``torch.save``: every member, by content), tar (the oldest ``torch.save`` layout),
each compression joblib writes (zlib, gzip, bz2, lzma, xz, lz4; the old ``ZF``
files), and otherwise pickles, any number in a row. A file that starts with
``PROTO`` must be a readable pickle to its end; any other file that is not one
(safetensors, ONNX, text...) is data, unless the part that parsed already imported or
called something.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import lzma
import re
import struct
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelpack.scan.machine import TORCH_MAGIC, Machine, Ref, Unparseable
from modelpack.scan.stream import Stream

__all__ = ["FileScan", "scan_file", "scan_stream"]

_MAX_DEPTH = 4
_PICKLE_NAME = re.compile(r".*\.(pkl|pickle|joblib|pck|pcl|sav)$", re.IGNORECASE)
# torch.save zips: raw tensor storages and small text records, read by torch, never unpickled
_TORCH_RAW = re.compile(r"(^|.*/)(data/\d+|\.data/.*|version|byteorder|\.format_version|"
                        r"\.storage_alignment)$")  # fmt: skip

_COMPRESSED = ("zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zfile")
_HEAD = 5 << 20  # a whole first block of any of them (bz2: 900 kB, lz4: 4 MiB)
_DECOMPRESS_ERRORS = (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error, RuntimeError)
_READ_ERRORS = (*_DECOMPRESS_ERRORS, zipfile.BadZipFile, tarfile.TarError, NotImplementedError,
                struct.error, KeyError, IndexError, UnicodeDecodeError, OverflowError)  # fmt: skip


@dataclass
class FileScan:
    path: Path
    kinds: list[str] = field(default_factory=list)
    """What was found, outermost first: ``pickle``, ``zlib``, ``npy``, ``zip``, ``tar``..."""
    refs: list[tuple[str, Ref]] = field(default_factory=list)
    """Every global imported, with where (``member NAME, offset N``)."""
    errors: list[str] = field(default_factory=list)
    """What could not be read; each one makes the file fail the check."""

    @property
    def pickles(self) -> int:
        return sum(k.endswith("pickle") for k in self.kinds)


def scan_file(path: Path) -> FileScan:
    """Scan the file at *path*; nothing in it is ever imported or unpickled."""
    with path.open("rb") as f:
        return scan_stream(f, path)


def scan_stream(f: IO[bytes], path: Path) -> FileScan:
    """Scan the open binary file *f* (a file on disk, or a member of a wheel) from its
    start; *path* only names it."""
    scan = FileScan(path)
    try:
        _scan(Stream(f, seekable=isinstance(f, (io.BufferedReader, io.FileIO))), "", scan, 0,
              strict=False, raw=f)  # fmt: skip
    except _READ_ERRORS as exc:  # a corrupt container or stream: refused, never a traceback
        scan.errors.append(f"unreadable ({type(exc).__name__}: {exc})")
    return scan


def _kind(head: bytes) -> str:
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:  # PROTO 0-5
        return "pickle"
    for name, magic in (("zlib", b"x"), ("gzip", b"\x1f\x8b"), ("bz2", b"BZh"),
                        ("lzma", b"]\x00"), ("xz", b"\xfd7zXZ"), ("lz4", b'\x04"M\x18'),
                        ("zfile", b"ZF")):  # fmt: skip
        if head.startswith(magic):
            return name
    return "maybe-pickle"


def _scan(stream: Stream, where: str, scan: FileScan, depth: int, *, strict: bool,
          raw: IO[bytes] | None = None) -> None:  # fmt: skip
    """Scan *stream* from where it stands; *raw* is a seekable file with the same bytes."""
    if depth > _MAX_DEPTH:
        scan.errors.append(f"{where}containers nested more than {_MAX_DEPTH} deep")
        return
    head = stream.peek(512)
    if not head:
        return
    kind = _kind(head)
    if kind == "maybe-pickle" and len(head) >= 262 and head[257:262] == b"ustar":
        kind = "tar"
    if kind == "npy":
        scan.kinds.append("npy")
        _npy(stream, where, scan)
    elif kind == "zip":
        scan.kinds.append(kind)
        with _seekable(stream, raw) as f:
            _zip(f, where, scan, depth)
    elif kind == "tar":
        scan.kinds.append(kind)
        with _seekable(stream, raw) as f:
            # a tar header starts with a member's name: pickle.load reads that as opcodes
            _pickles(Stream(f, seekable=True), where, scan, strict=False)
            f.seek(0)
            _tar(f, where, scan, depth)
    elif kind in _COMPRESSED and _decompresses(kind, stream.peek(_HEAD)):
        _compressed(kind, stream, where, scan, depth)
    else:  # a pickle, or not (a compression magic that does not decompress is an opcode too)
        _pickles(stream, where, scan, strict=strict or kind == "pickle")


def _pickles(stream: Stream, where: str, scan: FileScan, *, strict: bool) -> None:
    """Read pickles in a row to the end of *stream* (legacy torch: 5, then raw storages)."""
    count, first = 0, None
    while stream.peek(1):
        machine = Machine(stream)
        start = stream.tell()
        try:
            value = machine.load()
        except Unparseable as exc:
            if count == 0 and not strict and not exc.effects:
                return  # not a pickle: no unpickler gets past this point either
            scan.refs += [(where, r) for r in machine.refs]
            after = f" (pickle {count + 1}, which starts at offset {start})" if count else ""
            scan.errors.append(f"{where}{exc}{after}")
            scan.kinds.append("pickle")
            return
        scan.refs += [(where, r) for r in machine.refs]
        scan.kinds.append("pickle")
        count += 1
        first = value if count == 1 else first
        if count == 5 and isinstance(first, int) and first == TORCH_MAGIC:
            return


def _npy(stream: Stream, where: str, scan: FileScan) -> None:
    magic = stream.read(8)
    size_len = 2 if magic[6:7] == b"\x01" else 4
    header_len = int.from_bytes(stream.read(size_len), "little")
    try:
        header = ast.literal_eval(stream.read(header_len).decode("latin-1"))
        descr = header["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError) as exc:
        scan.errors.append(f"{where}an .npy header numpy cannot read ({exc})")
        return
    if "O" in repr(descr):  # np.load(allow_pickle=True) unpickles the data
        scan.kinds.append("npy/object")
        machine = Machine(stream)
        try:
            machine.load()
        except Unparseable as exc:
            scan.errors.append(f"{where}object array data: {exc}")
        scan.refs += [(where, r) for r in machine.refs]


def _zip(f: IO[bytes], where: str, scan: FileScan, depth: int) -> None:
    try:
        zf = zipfile.ZipFile(f)
    except _READ_ERRORS as exc:
        scan.errors.append(f"{where}an unreadable zip archive ({exc})")
        return
    with zf:
        torch = any(n.endswith("data.pkl") for n in zf.namelist())
        for info in zf.infolist():
            if info.is_dir() or (torch and _TORCH_RAW.match(info.filename)):
                continue
            label = f"{where}member {info.filename}: "
            try:
                with zf.open(info) as member:
                    _scan(Stream(member, seekable=False), label, scan, depth + 1,
                          strict=bool(_PICKLE_NAME.match(info.filename)))  # fmt: skip
            except _READ_ERRORS as exc:
                scan.errors.append(f"{label}unreadable ({type(exc).__name__}: {exc})")


def _tar(f: IO[bytes], where: str, scan: FileScan, depth: int) -> None:
    try:
        tf = tarfile.open(fileobj=f, mode="r:")
    except _READ_ERRORS as exc:
        scan.errors.append(f"{where}an unreadable tar archive ({exc})")
        return
    with tf:
        for info in tf:
            member = tf.extractfile(info) if info.isfile() else None
            if member is not None:
                label = f"{where}member {info.name}: "
                _scan(Stream(member, seekable=False), label, scan, depth + 1,
                      strict=bool(_PICKLE_NAME.match(info.name)))  # fmt: skip


class _Spool:
    """A seekable copy of the rest of a stream (a zip or tar inside another container)."""

    def __init__(self, stream: Stream, raw: IO[bytes] | None) -> None:
        self._stream, self._raw = stream, raw
        self._tmp: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if self._raw is not None and self._stream.tell() == 0:
            self._raw.seek(0)
            return self._raw
        tmp = tempfile.SpooledTemporaryFile(max_size=64 << 20)
        while chunk := self._stream.read(1 << 20):
            tmp.write(chunk)
        tmp.seek(0)
        self._tmp = tmp
        return tmp

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.close()


def _seekable(stream: Stream, raw: IO[bytes] | None) -> _Spool:
    return _Spool(stream, raw)


class _Adapter(io.RawIOBase):
    """A file object over a :class:`Stream`, for the decompressors to read from."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._stream.read(min(len(b), 1 << 20))
        b[: len(data)] = data
        return len(data)


class _ZlibReader(io.RawIOBase):
    """A zlib stream (joblib's ``compress=('zlib', n)``) decompressed as it is read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw, self._d, self._buf = raw, zlib.decompressobj(), b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            if self._d.unconsumed_tail:
                self._buf = self._d.decompress(self._d.unconsumed_tail, 1 << 20)
                continue
            if self._d.eof:
                return 0
            chunk = self._raw.read(1 << 16)
            if not chunk:
                raise EOFError("the compressed stream ends early")
            self._buf = self._d.decompress(chunk, 1 << 20)
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def _decompresses(kind: str, head: bytes) -> bool:
    """Whether the first bytes really start a *kind* stream (else they are read as opcodes:
    ``BZh`` is BINBYTES with a 3 MB length to ``pickle.load``)."""
    if kind == "zfile":
        head = head[max(head.find(b"x", 2), 2) :]
    try:
        if kind in ("zlib", "zfile", "gzip"):
            return bool(zlib.decompressobj(31 if kind == "gzip" else 15).decompress(head, 1))
        if kind == "bz2":
            return bool(bz2.BZ2Decompressor().decompress(head, 1))
        if kind in ("lzma", "xz"):
            fmt = lzma.FORMAT_ALONE if kind == "lzma" else lzma.FORMAT_XZ
            return bool(lzma.LZMADecompressor(fmt).decompress(head, 1))
        import lz4.frame  # type: ignore[import-not-found,import-untyped,unused-ignore]

        return bool(lz4.frame.LZ4FrameDecompressor().decompress(head, max_length=1))
    except ImportError:
        return True  # reported by _compressed, with what to install
    except _DECOMPRESS_ERRORS:  # (lz4 raises RuntimeError)
        return False


def _open_compressed(kind: str, raw: IO[bytes]) -> IO[bytes]:
    if kind in ("zlib", "zfile"):
        return io.BufferedReader(_ZlibReader(raw), 1 << 20)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.BZ2File(raw, "rb")
    if kind in ("lzma", "xz"):
        return lzma.LZMAFile(
            raw, "rb", format=lzma.FORMAT_ALONE if kind == "lzma" else lzma.FORMAT_XZ
        )
    import lz4.frame  # type: ignore[import-not-found,import-untyped,unused-ignore]

    return lz4.frame.LZ4FrameFile(raw, "rb")  # type: ignore[no-any-return]


def _compressed(kind: str, stream: Stream, where: str, scan: FileScan, depth: int) -> None:
    if kind == "zfile":  # joblib < 0.10: "ZF", the length in hex, then zlib
        head = stream.peek(64)
        stream.skip(head.find(b"x", 2) if head.find(b"x", 2) > 0 else 2)
    raw = io.BufferedReader(_Adapter(stream), 1 << 20)
    try:
        inner = _open_compressed(kind, raw)
    except ImportError:
        scan.errors.append(f"{where}{kind}-compressed, and the {kind} module that joblib "
                           f"would decompress it with is not installed here; install {kind}")  # fmt: skip
        return
    try:
        first = inner.read(1)
    except _DECOMPRESS_ERRORS:
        return  # not really compressed: no loader gets past the first bytes either
    if not first:
        return
    label = f"{where}{kind}-compressed: "
    scan.kinds.append(kind)
    inner_stream = Stream(io.BufferedReader(_Prefixed(first, inner), 1 << 20), seekable=False)
    try:
        _scan(inner_stream, label, scan, depth + 1, strict=False)
    except _DECOMPRESS_ERRORS as exc:
        scan.errors.append(f"{label}the data cannot be decompressed to its end ({exc})")


class _Prefixed(io.RawIOBase):
    def __init__(self, first: bytes, rest: IO[bytes]) -> None:
        self._first, self._rest = first, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._first:
            n = len(self._first)
            b[:n], self._first = self._first, b""
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)
