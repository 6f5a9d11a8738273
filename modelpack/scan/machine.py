"""Run a pickle's opcodes on a symbolic stack: what it imports and what it calls, never run.

The unpickler imports every global a stream names (``GLOBAL``, ``STACK_GLOBAL``,
``INST``) and calls whatever ``REDUCE``, ``NEWOBJ``, ``OBJ``, ``INST`` put on top of
its stack. This module keeps the same stack, mark stack and memo as
:class:`pickle._Unpickler` (strings, tuples, dicts and globals as values, everything
else as an opaque object), so ``STACK_GLOBAL`` gets exactly the operands the real
unpickler would give it, however the strings were pushed, popped, duplicated or
memoized around others.

Joblib's inline arrays, after the ``BUILD`` of a ``NumpyArrayWrapper``, are handled by
:mod:`.joblib_arrays`.
"""

from __future__ import annotations

import pickletools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelpack.scan.joblib_arrays import array_payload, is_array_wrapper
from modelpack.scan.stream import Stream
from modelpack.scan.values import OPAQUE, Call, Global, Ref, Unparseable

__all__ = ["TORCH_MAGIC", "Call", "Global", "Machine", "Ref", "Unparseable"]

# A 10-byte LONG1 that legacy torch.save files start with, followed by 4 more pickles.
TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_CTOR = re.compile(r"(?:copyreg|copy_reg)\.(?:_reconstructor|__newobj__|__newobj_ex__)")


# Opcodes that call something (a global, a persistent_load, the extension registry):
# a stream that fails after one of these has run code; before, it imported at most.
_SIDE_EFFECTS = {"INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4",
                 "PERSID", "BINPERSID"}  # fmt: skip
_CONST = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
          "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING",
          "SHORT_BINSTRING"}  # fmt: skip
_BYTES = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MAX_MARKS = 1_000_000
_NO_ARG, _READER, _INT, _SIZED = range(4)
# width in bytes, signed, and the decoding of a length-prefixed argument
_FAST = {"BININT1": (_INT, 1, False, None), "BINPUT": (_INT, 1, False, None),
         "BINGET": (_INT, 1, False, None), "BININT2": (_INT, 2, False, None),
         "BININT": (_INT, 4, True, None), "LONG_BINPUT": (_INT, 4, False, None),
         "LONG_BINGET": (_INT, 4, False, None),
         "SHORT_BINUNICODE": (_SIZED, 1, False, "utf-8"), "BINUNICODE": (_SIZED, 4, False, "utf-8"),
         "BINUNICODE8": (_SIZED, 8, False, "utf-8"), "SHORT_BINSTRING": (_SIZED, 1, False, "latin-1"),
         "BINSTRING": (_SIZED, 4, True, "latin-1"), "SHORT_BINBYTES": (_SIZED, 1, False, None),
         "BINBYTES": (_SIZED, 4, False, None), "BINBYTES8": (_SIZED, 8, False, None),
         "BYTEARRAY8": (_SIZED, 8, False, None)}  # fmt: skip
_TABLE: dict[bytes, tuple[str, int, int, bool, Any]] = {
    op.code.encode("latin-1"): (
        (op.name, *_FAST[op.name][:3], _FAST[op.name][3])
        if op.name in _FAST
        else (op.name, _READER, 0, False, op.arg.reader)
        if op.arg
        else (op.name, _NO_ARG, 0, False, None)
    )
    for op in pickletools.opcodes
}
_GET = {"GET", "BINGET", "LONG_BINGET"}


@dataclass
class Machine:
    """Reads pickles from one :class:`Stream`; collects :attr:`refs`."""

    stream: Stream
    refs: list[Ref] = field(default_factory=list)
    stack: list[Any] = field(default_factory=list)
    metastack: list[list[Any]] = field(default_factory=list)
    memo: dict[int, Any] = field(default_factory=dict)
    effects: bool = False

    def load(self) -> Any:
        """Read one pickle up to its STOP; return the value it would produce.

        :raises Unparseable: the opcodes do not form a pickle the unpickler would finish.
        """
        self.stack, self.metastack, self.memo, self.effects = [], [], {}, False
        return self.run()

    def run(self) -> Any:
        """Go on reading from the current stack, mark stack and memo up to STOP."""
        pos = self.stream.tell()
        try:
            do, side_effects = self._do, _SIDE_EFFECTS
            for name, arg, pos in self._ops():
                if name == "STOP":
                    return self._pop()
                do(name, arg, pos)
                if name in side_effects:  # only once it did call
                    self.effects = True
        except Unparseable:
            raise
        except (ValueError, IndexError, EOFError, UnicodeDecodeError, TypeError, KeyError,
                OverflowError) as exc:  # fmt: skip
            raise Unparseable(f"not a readable pickle at offset {pos} ({exc})", pos,
                              self.effects) from exc  # fmt: skip
        raise Unparseable(f"the pickle ends at offset {pos} without STOP", pos, self.effects)

    def _ops(self) -> Iterator[tuple[str, Any, int]]:
        """(name, argument, offset) per opcode, as :func:`pickletools.genops` reads them,
        except that a length-prefixed argument over :attr:`Stream.BIG` bytes is skipped,
        never read (an array's bytes)."""
        stream = self.stream
        read, table = stream.read, _TABLE
        while True:
            buf, off = stream._buf, stream._off
            if off < len(buf):  # the common case, without a call (3 million opcodes: 0.5 s)
                pos = stream._pos
                entry = table.get(buf[off : off + 1])
                stream._off, stream._pos = off + 1, pos + 1
            else:
                pos = stream.tell()
                entry = table.get(read(1))
            if entry is None:
                raise EOFError("pickle exhausted before seeing STOP") if stream.tell() == pos \
                    else ValueError("not an opcode")  # fmt: skip
            name, kind, width, signed, extra = entry
            if kind == _NO_ARG:
                yield name, None, pos
                continue
            if kind == _READER:
                yield name, extra(stream), pos
                continue
            raw = read(width)
            if len(raw) != width:
                raise EOFError("truncated argument")
            n = int.from_bytes(raw, "little", signed=signed)
            if kind == _INT:
                yield name, n, pos
                continue
            if n < 0:
                raise ValueError(f"negative length {n}")
            if n > Stream.BIG:
                stream.skip(n)
                yield name, OPAQUE, pos
                continue
            data = read(n)
            if len(data) != n:
                raise EOFError(f"expected {n} bytes, got {len(data)}")
            yield name, data.decode(extra, "surrogatepass") if extra else data, pos

    # -- stack helpers, as pickle._Unpickler has them ----------------------------------
    def _pop(self) -> Any:
        if not self.stack:
            raise IndexError("stack underflow")
        return self.stack.pop()

    def _pop_mark(self) -> list[Any]:
        items = self.stack
        if not self.metastack:
            raise IndexError("no MARK on the stack")
        self.stack = self.metastack.pop()
        return items

    def _push(self, value: Any) -> None:
        self.stack.append(value)  # never cached: MARK and pop_mark replace self.stack

    def _top(self) -> Any:
        if not self.stack:
            raise IndexError("stack underflow")
        return self.stack[-1]

    def _global(self, module: str, name: str, pos: int) -> Global:
        self.refs.append(Ref(module, name, pos))
        return Global(module, name)

    def _call(self, func: Any, args: Any, pos: int, how: str) -> Call:
        if not isinstance(func, Global):
            self.refs.append(Ref("?", "?", pos, f"{how} calls an object the pickle itself "
                                 "computed, not a named class or function"))  # fmt: skip
        elif _CTOR.fullmatch(f"{func.module}.{func.name}"):
            # copyreg._reconstructor(cls, base, state) and __newobj__(cls, *args):
            # allowed only when cls (and base) are named globals, judged like any other.
            n = 2 if func.name == "_reconstructor" else 1  # (cls, base, state) / (cls, *args)
            targets = args[:n] if isinstance(args, tuple) else ()
            if len(targets) < n or not all(isinstance(t, Global) for t in targets):
                self.refs.append(Ref(func.module, func.name, pos, "is called on a class the "
                                     "pickle computed instead of naming it"))  # fmt: skip
        return Call(func, args)

    # -- one opcode ---------------------------------------------------------------------
    def _do(self, name: str, arg: Any, pos: int) -> None:
        if name in _CONST:
            self._push(arg)  # a skipped huge string is OPAQUE: no STACK_GLOBAL operand
        elif name in _PUT:
            if int(arg) < 0:
                raise ValueError("negative memo index")
            self.memo[int(arg)] = self._top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self._top()
        elif name in _GET:
            self._push(self.memo[int(arg)])
        elif name == "MARK":
            if len(self.metastack) >= _MAX_MARKS:  # the unpickler would too, after eating the RAM
                raise ValueError(f"more than {_MAX_MARKS} nested MARKs")
            self.metastack.append(self.stack)
            self.stack = []
        elif name in _BYTES:
            self._push(OPAQUE)  # large payloads are never held (see Stream.read)
        elif name in ("NONE", "NEWTRUE", "NEWFALSE", "EMPTY_LIST", "EMPTY_SET", "NEXT_BUFFER"):
            self._push({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}.get(name, OPAQUE))
        elif name == "EMPTY_DICT":
            self._push({})
        elif name == "EMPTY_TUPLE":
            self._push(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = [self._pop() for _ in range(n)][::-1]
            self._push(tuple(items))
        elif name == "TUPLE":
            self._push(tuple(self._pop_mark()))
        elif name in ("LIST", "FROZENSET"):
            self._pop_mark()
            self._push(OPAQUE)
        elif name == "DICT":
            items = self._pop_mark()
            self._push(_as_dict(items))
        elif name == "SETITEM":
            value, key = self._pop(), self._pop()
            _setitems(self._top(), [key, value])
        elif name == "SETITEMS":
            items = self._pop_mark()
            _setitems(self._top(), items)
        elif name == "APPEND":
            self._pop()
            self._top()
        elif name in ("APPENDS", "ADDITEMS"):
            self._pop_mark()
            self._top()
        elif name == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self._pop_mark()
        elif name == "POP_MARK":
            self._pop_mark()
        elif name == "DUP":
            self._push(self._top())
        elif name == "GLOBAL":
            module, qual = str(arg).split(" ", 1)
            self._push(self._global(module, qual, pos))
        elif name == "STACK_GLOBAL":
            qual, module = self._pop(), self._pop()
            if not isinstance(qual, str) or not isinstance(module, str):
                raise TypeError("STACK_GLOBAL requires two strings")
            self._push(self._global(module, qual, pos))
        elif name == "INST":
            module, qual = str(arg).split(" ", 1)
            cls = self._global(module, qual, pos)
            self._push(self._call(cls, tuple(self._pop_mark()), pos, "INST"))
        elif name == "OBJ":
            items = self._pop_mark()
            if not items:
                raise IndexError("OBJ without a class")
            self._push(self._call(items[0], tuple(items[1:]), pos, "OBJ"))
        elif name == "REDUCE":
            args, func = self._pop(), self._pop()
            self._push(self._call(func, args, pos, "REDUCE"))
        elif name == "NEWOBJ":
            args, cls = self._pop(), self._pop()
            self._push(self._call(cls, args, pos, "NEWOBJ"))
        elif name == "NEWOBJ_EX":
            self._pop()
            args, cls = self._pop(), self._pop()
            self._push(self._call(cls, args, pos, "NEWOBJ_EX"))
        elif name == "BUILD":
            state = self._pop()
            inst = self._top()
            if isinstance(inst, Call):
                inst.state = state
                if is_array_wrapper(inst):
                    self.stack[-1] = OPAQUE
                    array_payload(self, inst, pos)
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.refs.append(Ref("copyreg", f"extension code {arg}", pos,
                                 "names a class through the copyreg extension registry"))  # fmt: skip
            self._push(OPAQUE)
        elif name == "PERSID":
            self._push(Call(Global("<persistent_load>", str(arg))))
        elif name == "BINPERSID":
            self._push(Call(Global("<persistent_load>", "id"), self._pop()))
        elif name == "READONLY_BUFFER":
            self._top()
        elif name in ("PROTO", "FRAME"):
            if name == "PROTO" and not 0 <= int(arg) <= 5:
                raise ValueError(f"unsupported pickle protocol {arg}")
        else:
            raise ValueError(f"opcode {name} is not handled")


def _as_dict(items: list[Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    _setitems(out, items)
    return out


def _setitems(target: Any, items: list[Any]) -> None:
    if len(items) % 2:
        raise IndexError("odd number of items for a dict")
    if isinstance(target, dict):
        for k, v in zip(items[::2], items[1::2], strict=True):
            try:
                target[k] = v
            except TypeError:  # an unhashable symbolic key: the value is not needed
                pass
