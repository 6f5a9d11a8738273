"""Run a pickle's opcodes on a symbolic stack: what it imports and what it calls, never run.

The unpickler imports every global a stream names (``GLOBAL``, ``STACK_GLOBAL``,
``INST``) and calls whatever ``REDUCE``, ``NEWOBJ``, ``OBJ``, ``INST`` put on top of
its stack. This module keeps the same stack, mark stack and memo as
:class:`pickle._Unpickler` (strings, tuples, dicts and globals as values, everything
else as an opaque object), so ``STACK_GLOBAL`` gets exactly the operands the real
unpickler would give it, however the strings were pushed, popped, duplicated or
memoized around others.

Joblib's inline arrays are followed as :class:`joblib.numpy_pickle.NumpyUnpickler`
reads them: after the ``BUILD`` of a ``NumpyArrayWrapper`` come the array's raw bytes
(skipped by the size its shape and dtype declare) or, for an object array, a nested
pickle (scanned).
"""

from __future__ import annotations

import io
import pickletools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

from modelpack.scan.stream import Stream

__all__ = ["Call", "Global", "Machine", "Ref", "Unparseable"]

# A 10-byte LONG1 that legacy torch.save files start with, followed by 4 more pickles.
TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_PROBE = 4096
_CTOR = re.compile(r"(?:copyreg|copy_reg)\.(?:_reconstructor|__newobj__|__newobj_ex__)")


class Unparseable(Exception):
    """The stream is not a pickle the unpickler would read to its end."""

    def __init__(self, message: str, offset: int, effects: bool) -> None:
        super().__init__(message)
        self.offset = offset
        self.effects = effects
        """Whether opcodes that import or call had already been read."""


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass
class Call:
    """An object the unpickler made by calling *func* (or the unknown result of one)."""

    func: Any
    args: Any = None
    state: Any = None


class _Mark:
    pass


MARK = _Mark()
OPAQUE = object()


@dataclass(frozen=True)
class Ref:
    """One global the stream makes the unpickler import, or a call it cannot vouch for."""

    module: str
    name: str
    offset: int
    problem: str = ""
    """Non-empty when the call itself is refused (whatever the global is)."""


_SIDE_EFFECTS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ",
                 "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}  # fmt: skip
_CONST = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
          "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING",
          "SHORT_BINSTRING"}  # fmt: skip
_BYTES = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_CODE2OP = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_SIZED = {"BINBYTES": (4, False), "BINUNICODE": (4, False), "BINSTRING": (4, True),
          "BINBYTES8": (8, False), "BYTEARRAY8": (8, False), "BINUNICODE8": (8, False)}  # fmt: skip
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
        return self._run()

    def _run(self) -> Any:
        pos = self.stream.tell()
        try:
            for op, arg, pos_ in self._ops():
                pos = pos_ if pos_ is not None else pos
                if op.name == "STOP":
                    return self._pop()
                self._step(op.name, arg, pos)
        except Unparseable:
            raise
        except (ValueError, IndexError, EOFError, UnicodeDecodeError, TypeError, KeyError,
                OverflowError) as exc:  # fmt: skip
            raise Unparseable(f"not a readable pickle at offset {pos} ({exc})", pos,
                              self.effects) from exc  # fmt: skip
        raise Unparseable(f"the pickle ends at offset {pos} without STOP", pos, self.effects)

    def _ops(self) -> Iterator[tuple[Any, Any, int | None]]:
        """:func:`pickletools.genops`, except that a length-prefixed argument over
        :attr:`Stream.BIG` bytes is skipped, never read (an array's bytes)."""
        stream = self.stream
        while True:
            pos = stream.tell()
            code = stream.read(1)
            if not code:
                raise EOFError("pickle exhausted before seeing STOP")
            op = _CODE2OP.get(code)
            if op is None:
                raise ValueError(f"no opcode {code!r}")
            if op.name not in _SIZED:
                yield op, op.arg.reader(cast("IO[bytes]", stream)) if op.arg else None, pos
                continue
            width, signed = _SIZED[op.name]
            raw = stream.read(width)
            if len(raw) != width:
                raise EOFError("truncated length")
            n = int.from_bytes(raw, "little", signed=signed)
            if n < 0:
                raise ValueError(f"negative length {n}")
            if n > Stream.BIG:
                stream.skip(n)
                yield op, OPAQUE, pos
                continue
            data = stream.read(n)
            if len(data) != n:
                raise EOFError(f"expected {n} bytes, got {len(data)}")
            if op.name.startswith("BINUNICODE"):
                yield op, data.decode("utf-8", "surrogatepass"), pos
            else:
                yield op, data.decode("latin-1") if op.name == "BINSTRING" else data, pos

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
    def _step(self, name: str, arg: Any, pos: int) -> None:
        self._do(name, arg, pos)
        if name in _SIDE_EFFECTS:  # only once it did import or call
            self.effects = True

    def _do(self, name: str, arg: Any, pos: int) -> None:
        if name in _CONST:
            self._push(arg)  # a skipped huge string is OPAQUE: no STACK_GLOBAL operand
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
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name in _PUT:
            if int(arg) < 0:
                raise ValueError("negative memo index")
            self.memo[int(arg)] = self._top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self._top()
        elif name in _GET:
            self._push(self.memo[int(arg)])
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
                if _is_array_wrapper(inst):
                    self.stack[-1] = OPAQUE
                    self._array_payload(inst, pos)
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

    # -- joblib -------------------------------------------------------------------------
    def _array_payload(self, wrapper: Call, pos: int) -> None:
        """Skip (or scan) what joblib's NumpyUnpickler reads after this wrapper's BUILD."""
        state = wrapper.state if isinstance(wrapper.state, dict) else {}
        dtype = state.get("dtype")
        shape = state.get("shape")
        typestr, elsize, flags = _dtype_parts(dtype)
        if (
            typestr is None
            or not isinstance(shape, tuple)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise Unparseable(f"a joblib array at offset {pos} does not declare a readable "
                              "shape and dtype, so its payload cannot be skipped", pos, True)  # fmt: skip
        if typestr.lstrip("<>|=").startswith("O") or flags & 1:
            nested = Machine(self.stream, self.refs)  # object array: a whole pickle follows
            nested.load()
            return
        count = 1
        for n in shape:
            count *= n
        size = count * (elsize or _itemsize(typestr))
        aligned = state.get("numpy_array_alignment_bytes") is not None
        pad = self.stream.peek(1)[:1] if aligned else b""
        total = size + (1 + pad[0] if pad else 0)
        self._probe_payload(min(total, _PROBE))
        self.stream.skip(total)

    def _probe_payload(self, n: int) -> None:
        """Refuse array bytes that ``pickle.load`` (not joblib) would run as opcodes.

        Loaded with plain ``pickle.load``, a joblib file goes on reading opcodes where
        joblib reads array data. Real array data stops parsing within a few bytes; this
        reads the first *n* (at most :data:`_PROBE`) bytes on a copy of the stack and
        memo; any global they name, a call, or a full window that parses all the way
        is refused.
        """
        start = self.stream.tell()
        window = self.stream.peek(n)
        fork = Machine(Stream(io.BytesIO(window)))
        fork.stack, fork.metastack = list(self.stack), [list(m) for m in self.metastack]
        fork.memo = dict(self.memo)
        try:
            fork._run()
            ended = True  # STOP: plain pickle.load returns there
        except Unparseable as exc:
            ended = exc.offset < len(window) - 16 or (len(window) < _PROBE and not fork.effects)
        why = ("is named by the bytes of a joblib array, which plain pickle.load would run "
               "as opcodes")  # fmt: skip
        for ref in fork.refs:
            self.refs.append(Ref(ref.module, ref.name, start + ref.offset, why))
        if not ended:
            self.refs.append(Ref("?", "?", start, f"the first {len(window)} bytes of a joblib array "
                                 "parse as pickle opcodes (plain pickle.load would run them)"))  # fmt: skip


def _is_array_wrapper(inst: Call) -> bool:
    cls = inst.func
    if isinstance(cls, Global) and _CTOR.fullmatch(f"{cls.module}.{cls.name}"):
        cls = inst.args[0] if isinstance(inst.args, tuple) and inst.args else None
    return (
        isinstance(cls, Global)
        and cls.name == "NumpyArrayWrapper"
        and cls.module in ("joblib.numpy_pickle", "sklearn.externals.joblib.numpy_pickle")
    )


def _dtype_parts(dtype: Any) -> tuple[str | None, int, int]:
    """``numpy.dtype('f8', False, True)`` + its BUILD state -> ('f8', elsize, flags)."""
    if not isinstance(dtype, Call) or not isinstance(dtype.args, tuple) or not dtype.args:
        return None, 0, 0
    typestr = dtype.args[0]
    if not isinstance(typestr, str):
        return None, 0, 0
    st = dtype.state if isinstance(dtype.state, tuple) else ()
    elsize = st[5] if len(st) > 5 and isinstance(st[5], int) and st[5] > 0 else 0
    flags = st[7] if len(st) > 7 and isinstance(st[7], int) else 0
    return typestr, elsize, flags


def _itemsize(typestr: str) -> int:
    m = re.fullmatch(r"[<>|=]?([biufcmMSaVU])(\d+)", typestr)
    if not m:
        raise ValueError(f"cannot size the numpy dtype {typestr!r}")
    return int(m.group(2)) * (4 if m.group(1) == "U" else 1)


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
