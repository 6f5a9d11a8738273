"""The scoring app, signatures and batch scoring in-process, with real models (no server).

The end-to-end tests (test_serving.py) serve tensor models through real processes; these
cover what they do not: records ("columns") models through every request format, numpy
answers, CSV output, and the messages for each kind of bad input.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpack.serving import Settings, make_app
from modelpack.serving.batch import BadRowError, score
from modelpack.serving.signature import SignatureError, infer, validate


class Records:
    """predict takes records: {"age": int, "city": str} -> a float per record."""

    def predict(self, rows: list[dict[str, Any]]) -> Any:
        return np.array([r["age"] * 2.0 + len(r["city"]) for r in rows])


RECORDS = [{"age": 41, "city": "Oslo"}, {"age": 7, "city": "Rome"}]
EXPECTED = [86.0, 18.0]


def call(
    app: Any, method: str, path: str, body: bytes = b"", ctype: str = "application/json"
) -> tuple[int, Any]:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_TYPE": ctype,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}  # fmt: skip
    status: list[str] = []
    out = b"".join(app(environ, lambda s, headers: status.append(s)))
    code = int(status[0].split()[0])
    return code, json.loads(out) if out.strip().startswith((b"{", b"[")) else out.decode()


def test_a_records_model_gets_a_columns_signature_and_every_format() -> None:
    signature = infer(RECORDS, Records().predict(RECORDS))
    assert signature == {
        "layout": "columns",
        "inputs": [
            {"name": "age", "type": "int64", "shape": [-1]},
            {"name": "city", "type": "string", "shape": [-1]},
        ],
        "outputs": [{"name": "output", "type": "float64", "shape": [-1]}],
    }
    app = make_app(Records(), name="model-rec", version="1.0", signature=signature)
    bodies = [
        {"dataframe_records": RECORDS},
        {"dataframe_split": {"columns": ["age", "city"], "data": [[41, "Oslo"], [7, "Rome"]]}},
        {"inputs": {"age": [41, 7], "city": ["Oslo", "Rome"]}},
        {"instances": RECORDS},
    ]
    for body in bodies:
        assert call(app, "POST", "/invocations", json.dumps(body).encode()) == (
            200,
            {"predictions": EXPECTED},
        )
    csv = b"age,city\n41,Oslo\n7,Rome\n"
    assert call(app, "POST", "/invocations", csv, "text/csv") == (200, {"predictions": EXPECTED})
    v2 = {"inputs": [{"name": "city", "shape": [2], "datatype": "BYTES", "data": ["Oslo", "Rome"]},
                     {"name": "age", "shape": [2], "datatype": "INT64", "data": [41, 7]}]}  # fmt: skip
    code, answer = call(app, "POST", "/v2/models/model-rec/infer", json.dumps(v2).encode())
    assert code == 200 and answer["outputs"] == [
        {"name": "output", "shape": [2], "datatype": "FP64", "data": EXPECTED}
    ]
    code, meta = call(app, "GET", "/v2/models/model-rec")
    assert meta["inputs"] == [{"name": "age", "datatype": "INT64", "shape": [-1]},
                              {"name": "city", "datatype": "BYTES", "shape": [-1]}]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"dataframe_records": [{"age": 41}]},
            "row 0: missing field 'city' (expected string [-1])",
        ),
        (
            {"dataframe_records": [{"age": "41", "city": "Oslo"}]},
            "row 0 field 'age': expected int64, got str '41'",
        ),
        (
            {"dataframe_records": [{"age": 4.5, "city": "Oslo"}]},
            "row 0 field 'age': expected int64, got float 4.5",
        ),
        ({"inputs": [[41, "Oslo"]]}, "row 0: expected a record with fields age, city, got list"),
        ({"inputs": 3}, "the inputs must be a list of rows"),
        ({"inputs": [], "instances": []}, 'exactly one of "inputs"'),
    ],
)
def test_requests_that_do_not_fit_get_400_naming_the_field(body: Any, message: str) -> None:
    app = make_app(Records(), name="model-rec", signature=infer(RECORDS, EXPECTED))
    code, answer = call(app, "POST", "/invocations", json.dumps(body).encode())
    assert code == 400 and message in answer["error"], answer


def test_v2_requests_missing_an_input_or_with_the_wrong_model_name() -> None:
    app = make_app(Records(), name="model-rec", signature=infer(RECORDS, EXPECTED))
    v2 = {"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [41]}]}
    code, answer = call(app, "POST", "/v2/models/model-rec/infer", json.dumps(v2).encode())
    assert code == 400 and "missing input 'city'; the model takes age, city" in answer["error"]
    code, answer = call(app, "POST", "/v2/models/other/infer", json.dumps(v2).encode())
    assert code == 404 and "this server serves 'model-rec'" in answer["error"]
    assert call(app, "GET", "/invocations")[0] == 405


def test_the_body_limit_is_checked_before_reading_and_a_broken_model_is_a_500() -> None:
    class Broken:
        def predict(self, rows: Any) -> Any:
            raise RuntimeError("a bug in the model")

    app = make_app(Broken(), name="m", settings=Settings(max_body=100))
    code, answer = call(app, "POST", "/invocations", b'{"inputs": [' + b"1," * 100 + b"1]}")
    assert code == 413 and "larger than the limit of 100 bytes" in answer["error"]
    code, answer = call(app, "POST", "/invocations", b'{"inputs": [[1]]}')
    assert code == 500 and answer == {"error": "the model failed; see the server log"}


def test_the_tensor_signature_names_row_and_column() -> None:
    signature = infer(np.array([[1.0, 2.0]]), np.array([1]))
    assert signature is not None and signature["inputs"][0]["shape"] == [-1, 2]
    with pytest.raises(
        SignatureError, match=r"^row 2, column 1: expected float64, got null \(input"
    ):
        validate([[1, 2], [3, 4], [5, None]], signature)
    assert infer("free text", [1]) is None  # not rows: no signature, no validation


def test_batch_scoring_writes_csv_and_names_the_line_of_a_bad_record(tmp_path: Path) -> None:
    signature = infer(RECORDS, EXPECTED)
    source = tmp_path / "in.csv"
    source.write_text("age,city\n" + "41,Oslo\n7,Rome\n" * 3)
    out = tmp_path / "out.csv"
    assert score(Records(), source, out, signature, batch_size=4) == 6
    assert out.read_text().splitlines() == ["prediction"] + ["86.0", "18.0"] * 3
    source.write_text("age,city\n41,Oslo\nold,Rome\n")
    with pytest.raises(
        BadRowError, match=r"in.csv line 3: row 0 field 'age': expected int64, got str 'old'"
    ):
        score(Records(), source, tmp_path / "never.csv", signature, batch_size=1)
    assert not (tmp_path / "never.csv").exists() and [p.name for p in tmp_path.iterdir()] == [
        "in.csv",
        "out.csv",
    ]


def test_build_infers_no_signature_when_the_model_cannot_be_imported_and_says_why(
    tmp_path: Path,
) -> None:
    from modelpack.build_signature import SignatureProbe
    from modelpack.project import load_project
    from support import modelpack, ok

    ok(modelpack("new", "model-dep", "-o", tmp_path, "--no-input"))
    init = tmp_path / "model-dep" / "src" / "model_dep" / "__init__.py"
    init.write_text(init.read_text() + "\nimport nosuchdep  # noqa: E402, F401\n")
    signature, warning = SignatureProbe(load_project(tmp_path / "model-dep")).result()
    assert signature is None and warning is not None
    assert (
        "could not call predict(input_example) here (ModuleNotFoundError: No module named 'nosuchdep')"
        in warning.message
    )
    assert "install the model's dependencies where modelpack runs" in warning.message


def test_batch_scoring_shows_progress_on_a_terminal_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import pty

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS * 50))
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        assert score(Records(), source, tmp_path / "out.jsonl", None, batch_size=40) == 100
    shown = os.read(leader, 4096).decode()
    os.close(leader)
    assert "\rscored 40 rows (" in shown and "\rscored 100 rows (" in shown and "rows/s)" in shown
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    score(Records(), source, tmp_path / "out.jsonl", None, batch_size=40)
    assert pipe.getvalue() == ""  # not a terminal: nothing
