"""Model signatures: the names, types and shapes a model's ``predict`` takes and returns.

``modelpack build`` infers one from the manifest's ``input_example`` and what ``predict``
returns for it (:func:`infer`), and stores it in the wheel's ``modelpack.json`` as
``signature``; ``modelpack serve`` checks each request against it (:func:`validate`).
Two layouts, after what ``predict`` takes:

- ``tensor``: rows of values (``[[1.0, 2.0, 3.0]]``): one input named ``input`` of
  shape ``[-1, 3]`` (``-1``: any number of rows);
- ``columns``: records (``[{"age": 41, "city": "Oslo"}]``): one input per field, each of
  shape ``[-1]``.

Types: ``bool``, ``int64``, ``float64``, ``string`` (an int is accepted where a float64 is
expected, as in JSON). Only the standard library: the serving environment needs nothing else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SignatureError", "describe", "infer", "jsonable", "validate"]

# Open Inference Protocol v2 datatypes of our types
V2_TYPES = {"bool": "BOOL", "int64": "INT64", "float64": "FP64", "string": "BYTES"}


class SignatureError(ValueError):
    """A request does not fit the signature; the message names the field and what is expected."""


def jsonable(value: Any) -> Any:
    """*value* as plain JSON types (numpy arrays and scalars, pandas objects, tuples)."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        return value.to_dict(orient="records")
    if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas Series
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _type_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return None


def _merge(a: str | None, b: str | None) -> str | None:
    if a == b or b is None:
        return a
    if a is None:
        return b
    if {a, b} == {"int64", "float64"}:
        return "float64"
    return None


def _tensor(value: Any) -> tuple[str, list[int]] | None:
    """(type, shape) of a uniform nested list, or None."""
    if not isinstance(value, list):
        scalar = _type_of(value)
        return (scalar, []) if scalar else None
    if not value:
        return None
    parts = [_tensor(v) for v in value]
    if any(p is None for p in parts):
        return None
    shapes = {tuple(p[1]) for p in parts if p is not None}
    if len(shapes) != 1:
        return None
    kind: str | None = parts[0][0] if parts[0] else None
    for p in parts[1:]:
        kind = _merge(kind, p[0] if p else None)
    return (kind, [len(value), *shapes.pop()]) if kind else None


def _spec(value: Any, default_name: str) -> tuple[str, list[dict[str, Any]]] | None:
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        fields: dict[str, str | None] = {}
        for record in value:
            for key, item in record.items():
                fields[key] = (
                    _merge(fields[key], _type_of(item)) if key in fields else _type_of(item)
                )
        if any(kind is None for kind in fields.values()):
            return None
        return "columns", [{"name": k, "type": t, "shape": [-1]} for k, t in fields.items()]
    found = _tensor(value)
    if found is None or not found[1]:
        return None
    return "tensor", [{"name": default_name, "type": found[0], "shape": [-1, *found[1][1:]]}]


def infer(example: Any, prediction: Any) -> dict[str, Any] | None:
    """The signature of a model that returned *prediction* for *example*, or None when
    the example is not rows of plain values or records."""
    inputs = _spec(jsonable(example), "input")
    if inputs is None:
        return None
    outputs = _spec(jsonable(prediction), "output")
    return {
        "layout": inputs[0],
        "inputs": inputs[1],
        "outputs": outputs[1] if outputs else [],
    }


def describe(field: dict[str, Any]) -> str:
    """``float64 [-1, 3]``."""
    return f"{field['type']} {field['shape']}"


def _check_value(value: Any, kind: str, where: str) -> None:
    got = _type_of(value)
    if got == kind or (kind == "float64" and got == "int64"):
        return
    shown = "null" if value is None else f"{type(value).__name__} {value!r:.40}"
    raise SignatureError(f"{where}: expected {kind}, got {shown}")


def _check_tensor(value: Any, kind: str, shape: list[int], where: str) -> None:
    if not shape:
        _check_value(value, kind, where)
        return
    if not isinstance(value, list):
        raise SignatureError(
            f"{where}: expected a list of {shape[0] if shape[0] >= 0 else 'any number of'} items, got {type(value).__name__}"
        )
    if shape[0] >= 0 and len(value) != shape[0]:
        raise SignatureError(f"{where}: expected {shape[0]} values, got {len(value)}")
    for i, item in enumerate(value):
        _check_tensor(
            item,
            kind,
            shape[1:],
            f"{where}, column {i}" if "column" not in where else f"{where}[{i}]",
        )


_ALLOWED = {"bool": (bool,), "int64": (int,), "float64": (float, int), "string": (str,)}


def _fast_rows_ok(rows: list[Any], kind: str, width: int) -> bool:
    """Rows of *width* values of *kind*: the common case, checked without building messages
    (a third of the time of a 1,000-row request otherwise). False: look closer."""
    allowed = _ALLOWED.get(kind, ())
    for row in rows:
        if type(row) is not list or len(row) != width:
            return False
        for value in row:
            if type(value) not in allowed:
                return False
    return True


def validate(rows: Any, signature: dict[str, Any]) -> None:
    """Check model input *rows* (what ``predict`` will get) against *signature*.

    :raises SignatureError: naming the first field that does not fit, and what was expected.
    """
    if not isinstance(rows, list):
        raise SignatureError(f"expected a list of rows, got {type(rows).__name__}")
    if signature.get("layout") == "columns":
        fields = {f["name"]: f for f in signature["inputs"]}
        for i, record in enumerate(rows):
            if not isinstance(record, dict):
                raise SignatureError(
                    f"row {i}: expected a record with fields {', '.join(fields)}, got {type(record).__name__}"
                )
            missing = [n for n in fields if n not in record]
            if missing:
                raise SignatureError(
                    f"row {i}: missing field {missing[0]!r} (expected {describe(fields[missing[0]])})"
                )
            for name, field in fields.items():
                _check_value(record[name], field["type"], f"row {i} field {name!r}")
        return
    field = signature["inputs"][0]
    kind, shape = field["type"], field["shape"]
    if len(shape) == 2 and _fast_rows_ok(rows, kind, shape[1]):
        return
    try:
        for i, row in enumerate(rows):
            _check_tensor(row, kind, shape[1:], f"row {i}")
    except SignatureError as exc:
        raise SignatureError(f"{exc} (input {field['name']!r} is {describe(field)})") from None
