"""List the globals a pickle references, statically: nothing is ever unpickled.

A pickle names every class and function it needs as ``module`` + ``qualname`` (the
GLOBAL / STACK_GLOBAL opcodes); the unpickler imports them. Reading those names with
:mod:`pickletools` tells us, without running anything, which modules a consumer needs
and whether the file would call something dangerous such as ``os.system``.
"""

from __future__ import annotations

import io
import mmap
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

__all__ = ["DANGEROUS", "PICKLE_SUFFIXES", "PickleScan", "is_dangerous", "scan_pickle"]

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pck", ".pcl", ".sav")

# Modules whose every global is a way out of the sandbox, and single callables elsewhere.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy",
    "pty", "webbrowser", "ctypes", "marshal", "code", "commands", "multiprocessing",
    "signal", "urllib", "http", "ftplib", "telnetlib",
})  # fmt: skip
DANGEROUS = frozenset({
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.open",
    "builtins.__import__", "builtins.getattr", "builtins.setattr", "builtins.delattr",
    "builtins.globals", "builtins.locals", "builtins.vars", "builtins.input",
    "builtins.breakpoint", "builtins.exit", "builtins.quit", "__builtin__.eval",
    "__builtin__.exec", "__builtin__.open", "__builtin__.getattr", "pickle.loads",
    "pickle.load", "_pickle.loads", "functools.partial", "operator.attrgetter",
    "operator.methodcaller",
})  # fmt: skip

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
               "BINSTRING", "SHORT_BINSTRING"}  # fmt: skip


@dataclass(frozen=True)
class PickleScan:
    path: Path
    globals: tuple[str, ...]
    """``module.qualname`` for every global the pickle references, in order."""
    complete: bool
    """False when the stream could not be read to its end (the globals found are kept)."""
    note: str = ""


def is_dangerous(name: str) -> bool:
    module = name.rsplit(".", 1)[0] if "." in name else name
    return name in DANGEROUS or module.split(".", 1)[0] in DANGEROUS_MODULES


class _SkippingReader:
    """A read-only stream for pickletools that never holds a large argument in memory.

    A pickle of a big array carries its bytes as one opcode argument (BINBYTES8,
    BYTEARRAY8...). pickletools reads each argument whole; for anything over
    ``BIG`` bytes this reader seeks past it and hands back an untouched anonymous
    mapping of the same length (virtual memory the scan never reads), so scanning a
    multi-GB pickle stays flat in memory.
    """

    BIG = 16 << 20

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def read(self, n: int = -1) -> Any:
        if n > self.BIG:
            self._raw.seek(n, io.SEEK_CUR)
            return mmap.mmap(-1, n)
        return self._raw.read(n)

    def readline(self) -> bytes:
        return self._raw.readline(1 << 20)


def _globals_in(stream: IO[bytes]) -> tuple[list[str], bool, str]:
    found: list[str] = []
    strings: list[str] = []  # recent string pushes, for STACK_GLOBAL
    memo: dict[int, str] = {}
    last: str | None = None
    try:
        for op, arg, _ in pickletools.genops(cast("IO[bytes]", _SkippingReader(stream))):
            name = op.name
            if name == "GLOBAL" or name == "INST":
                module, qual = str(arg).split(" ", 1)
                found.append(f"{module}.{qual}")
                last = None
            elif name in _STRING_OPS:
                last = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
                strings.append(last)
            elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                if last is not None:
                    memo[len(memo) if name == "MEMOIZE" else int(str(arg))] = last
                elif name == "MEMOIZE":
                    memo[len(memo)] = ""
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                last = memo.get(int(str(arg))) or None
                if last:
                    strings.append(last)
            elif name == "STACK_GLOBAL":
                if len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                last = None
            else:
                last = None
            if name == "STOP":
                break
    except (ValueError, IndexError, EOFError, UnicodeDecodeError) as exc:
        return found, False, f"stream unreadable after {len(found)} globals ({exc})"
    return found, True, ""


def scan_pickle(path: Path) -> PickleScan:
    """Return the globals referenced by the pickle (or joblib file) at *path*.

    joblib files hold raw array bytes after their wrapper objects; the scan reads up
    to there, which covers every class the file names. Compressed joblib files are
    reported as not scanned.
    """
    with path.open("rb") as f:
        head = f.read(4)
        f.seek(0)
        if head[:2] in (b"\x78\x9c", b"\x78\x01", b"\x78\xda", b"\x1f\x8b", b"ZF"):
            return PickleScan(path, (), False, "compressed joblib file: not scanned")
        if head == b"PK\x03\x04":  # torch.save zip format: scan the pickle inside
            with zipfile.ZipFile(f) as zf:
                inner = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not inner:
                    return PickleScan(path, (), True)
                with zf.open(inner[0]) as member:
                    found, complete, note = _globals_in(member)
        else:
            found, complete, note = _globals_in(f)
    return PickleScan(path, tuple(dict.fromkeys(found)), complete, note)
