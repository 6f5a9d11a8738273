"""joblib's inline arrays, read as :class:`joblib.numpy_pickle.NumpyUnpickler` reads them.

After the ``BUILD`` of a ``NumpyArrayWrapper`` come the array's raw bytes (skipped by
the size its shape and dtype declare, after joblib's padding) or, for an object array,
a nested pickle (scanned). The first bytes of a raw payload are also read as plain
``pickle.load`` would read them, since a file loaded that way runs them as opcodes.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

from modelpack.scan.stream import Stream
from modelpack.scan.values import Call, Global, Ref, Unparseable

if TYPE_CHECKING:
    from modelpack.scan.machine import Machine

__all__ = ["array_payload", "is_array_wrapper"]

_PROBE = 4096
_CTOR = re.compile(r"(?:copyreg|copy_reg)\.(?:_reconstructor|__newobj__)")


def array_payload(machine: Machine, wrapper: Call, pos: int) -> None:
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
        nested = type(machine)(machine.stream, machine.refs)  # object array: a whole pickle follows
        nested.load()
        return
    count = 1
    for n in shape:
        count *= n
    size = count * (elsize or _itemsize(typestr))
    aligned = state.get("numpy_array_alignment_bytes") is not None
    pad = machine.stream.peek(1)[:1] if aligned else b""
    total = size + (1 + pad[0] if pad else 0)
    _probe_payload(machine, min(total, _PROBE))
    machine.stream.skip(total)


def _probe_payload(machine: Machine, n: int) -> None:
    """Refuse array bytes that ``pickle.load`` (not joblib) would run as opcodes.

    Loaded with plain ``pickle.load``, a joblib file goes on reading opcodes where
    joblib reads array data. Real array data stops parsing within a few bytes; this
    reads the first *n* (at most :data:`_PROBE`) bytes on a copy of the stack and
    memo; any global they name, a call, or a full window that parses all the way
    is refused.
    """
    start = machine.stream.tell()
    window = machine.stream.peek(n)
    fork = type(machine)(Stream(io.BytesIO(window)))
    fork.stack, fork.metastack = list(machine.stack), [list(m) for m in machine.metastack]
    fork.memo = dict(machine.memo)
    try:
        fork.run()
        ended = True  # STOP: plain pickle.load returns there
    except Unparseable as exc:
        ended = exc.offset < len(window) - 16 or (len(window) < _PROBE and not fork.effects)
    why = ("is named by the bytes of a joblib array, which plain pickle.load would run "
           "as opcodes")  # fmt: skip
    for ref in fork.refs:
        machine.refs.append(Ref(ref.module, ref.name, start + ref.offset, why))
    if not ended:
        machine.refs.append(Ref("?", "?", start, f"the first {len(window)} bytes of a joblib array "
                             "parse as pickle opcodes (plain pickle.load would run them)"))  # fmt: skip


def is_array_wrapper(inst: Call) -> bool:
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
