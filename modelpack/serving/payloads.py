"""Request bodies of both protocols to what ``predict`` takes, and its answer back.

MLflow scoring (``POST /invocations``): ``{"inputs": ...}``, ``{"instances": ...}``,
``{"dataframe_split": {"columns", "data"}}``, ``{"dataframe_records": [...]}`` or CSV
with a header line. Open Inference Protocol v2 (``POST /v2/models/<name>/infer``):
``{"inputs": [{"name", "shape", "datatype", "data"}]}``, ``data`` flat (row-major) or
nested. A ``tensor`` model gets rows, a ``columns`` model records (see
:mod:`modelpack.serving.signature`); a model without a signature gets rows, or records
for ``dataframe_*`` and CSV with named columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from modelpack.serving.signature import V2_TYPES, SignatureError, jsonable

__all__ = ["PayloadError", "from_mlflow", "from_v2", "v2_outputs"]

MLFLOW_KEYS = ("inputs", "instances", "dataframe_split", "dataframe_records")


class PayloadError(ValueError):
    """The body is not a request of the protocol; the message says what is."""


def _columns(signature: dict[str, Any] | None) -> bool:
    return bool(signature and signature.get("layout") == "columns")


def _records_to_rows(records: list[Any], signature: dict[str, Any] | None) -> list[Any]:
    """Records for a columns model; rows (values in field order) for a tensor model."""
    if signature is None or _columns(signature):
        return records
    rows = []
    for record in records:
        rows.append(list(record.values()) if isinstance(record, dict) else record)
    return rows


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(
            f"the body is not JSON ({exc}); send Content-Type: application/json with a JSON document"
        ) from None


def from_mlflow(body: bytes, content_type: str, signature: dict[str, Any] | None) -> list[Any]:
    """The rows or records an MLflow scoring request carries.

    :raises PayloadError: the body is none of MLflow's formats.
    """
    if content_type.startswith("text/csv"):
        return _from_csv(body, signature)
    doc = json_body(body)
    if not isinstance(doc, dict) or sum(k in doc for k in MLFLOW_KEYS) != 1:
        raise PayloadError(
            "expected a JSON object with exactly one of "
            + ", ".join(f'"{k}"' for k in MLFLOW_KEYS)
            + ' (like {"inputs": [[1.0, 2.0, 3.0]]}), or CSV with Content-Type: text/csv'
        )
    if "dataframe_split" in doc:
        split = doc["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise PayloadError('"dataframe_split" needs "data" (a list of rows) and "columns"')
        columns = split.get("columns")
        if columns is None:
            return list(split["data"])
        records = [dict(zip(columns, row, strict=False)) for row in split["data"]]
        return _records_to_rows(records, signature)
    if "dataframe_records" in doc:
        if not isinstance(doc["dataframe_records"], list):
            raise PayloadError('"dataframe_records" must be a list of records')
        return _records_to_rows(doc["dataframe_records"], signature)
    data = doc.get("inputs", doc.get("instances"))
    if isinstance(data, dict):  # named columns: {"age": [41, 52], "city": [...]}
        names = list(data)
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise PayloadError("named inputs must be lists of the same length")
        records = [
            dict(zip(names, values, strict=True)) for values in zip(*data.values(), strict=True)
        ]
        return _records_to_rows(records, signature)
    if not isinstance(data, list):
        raise PayloadError("the inputs must be a list of rows (or of records)")
    return data


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _from_csv(body: bytes, signature: dict[str, Any] | None) -> list[Any]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"the CSV body is not UTF-8 ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise PayloadError("the CSV body is empty; send a header line, then one line per row")
    records = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise PayloadError(
                f"CSV line {line} has {len(row)} values; the header has {len(header)}"
            )
        records.append(dict(zip(header, map(_number, row), strict=True)))
    if signature is None and not all(any(c.isalpha() for c in h) for h in header):
        return [list(r.values()) for r in records]
    return _records_to_rows(records, signature)


def _reshape(flat: list[Any], shape: list[int]) -> list[Any]:
    if len(shape) <= 1:
        return flat
    step = math.prod(shape[1:])
    return [_reshape(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _v2_tensor(item: Any) -> tuple[str, list[Any]]:
    if not isinstance(item, dict) or not isinstance(item.get("data"), list):
        raise PayloadError('each of "inputs" needs "name", "shape", "datatype" and "data" (a list)')
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise PayloadError(f'input {item.get("name")!r}: "shape" must be a list of sizes')
    data = item["data"]
    if data and not any(isinstance(v, list) for v in data):  # flat, row-major
        if len(data) != math.prod(shape):
            raise SignatureError(
                f"input {item.get('name')!r}: shape {shape} needs {math.prod(shape)} values, got {len(data)}"
            )
        data = _reshape(data, shape)
    return str(item.get("name", "")), data


def from_v2(doc: Any, signature: dict[str, Any] | None) -> list[Any]:
    """The rows or records of an Open Inference Protocol v2 infer request.

    :raises PayloadError: the body is not such a request.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise PayloadError(
            'expected {"inputs": [{"name": ..., "shape": [...], "datatype": ..., "data": [...]}]}'
        )
    tensors = dict(_v2_tensor(item) for item in doc["inputs"])
    if _columns(signature):
        assert signature is not None
        missing = [f["name"] for f in signature["inputs"] if f["name"] not in tensors]
        if missing:
            raise SignatureError(
                f"missing input {missing[0]!r}; the model takes "
                + ", ".join(f["name"] for f in signature["inputs"])
            )
        names = [f["name"] for f in signature["inputs"]]
        columns = [tensors[n] for n in names]
        if len({len(c) for c in columns}) != 1:
            raise SignatureError("the inputs have different numbers of rows")
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if len(tensors) != 1:
        raise PayloadError(f"this model takes one input tensor, got {len(tensors)}")
    return next(iter(tensors.values()))


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _flatten(value: Any) -> list[Any]:
    if not isinstance(value, list):
        return [value]
    out: list[Any] = []
    for item in value:
        out.extend(_flatten(item))
    return out


def _datatype(values: list[Any]) -> str:
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return "BOOL"
    if kinds <= {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def v2_outputs(predictions: Any, signature: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The ``outputs`` of a v2 infer answer: one tensor, or one per field of records."""
    predictions = jsonable(predictions)
    if (
        isinstance(predictions, list)
        and predictions
        and all(isinstance(p, dict) for p in predictions)
    ):
        names = list(predictions[0])
        return [
            {"name": n, "shape": [len(predictions)], "datatype": _datatype(col), "data": col}
            for n in names
            for col in [[p.get(n) for p in predictions]]
        ]
    name = "output"
    if signature and signature.get("outputs"):
        name = signature["outputs"][0]["name"]
    flat = _flatten(predictions)
    return [{"name": name, "shape": _shape(predictions), "datatype": _datatype(flat), "data": flat}]


def v2_fields(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Signature fields as v2 metadata tensors."""
    return [
        {"name": f["name"], "datatype": V2_TYPES.get(f["type"], "BYTES"), "shape": f["shape"]}
        for f in fields
    ]
