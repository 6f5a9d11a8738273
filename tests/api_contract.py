"""Every ``/api/v1`` answer the tests provoke, checked against the served ``openapi.json``.

`support.Registry` runs the registry through ``api_recorder.py`` and, when it stops,
calls :func:`check_folder` on what was recorded. An answer passes when

- its path and method are an operation of the document, its status is one the operation
  documents, and its body validates against that status's schema (openapi-core); a HEAD
  is held to the GET operation's statuses, without a body;
- or, for a path that is no operation, it is a JSON ``Error`` with 404 (no such path)
  or 405 with an ``Allow`` header listing exactly the methods the document has there.

:data:`SEEN` collects (path template, method, status) over the test session; the
terminal summary (conftest.py) lists the documented answers no test produced, and
``MODELPACK_API_COVERAGE=strict`` makes those fail the session (for full runs).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jsonschema
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

__all__ = ["SEEN", "check_answer", "check_folder", "documented", "operations", "template_of"]

#: (path template, lower-case method, status) of every valid answer checked so far.
SEEN: set[tuple[str, str, str]] = set()
#: the document of the last folder checked (for the coverage summary).
DOCUMENTS: dict[str, dict[str, Any]] = {}
METHODS = ("get", "put", "post", "delete", "patch")


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(path template, upper-case method) of every operation in ``doc``."""
    return {(path, method.upper()) for path, item in doc["paths"].items()
            for method in item if method in METHODS}  # fmt: skip


def documented(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(path template, method, status) of every answer ``doc`` documents."""
    return {(path, method, status) for path, item in doc["paths"].items()
            for method, op in item.items() if method in METHODS
            for status in op["responses"]}  # fmt: skip


@functools.lru_cache(maxsize=4)
def _openapi(text: str) -> OpenAPI:
    return OpenAPI.from_dict(json.loads(text))  # also checks the document itself


def template_of(doc: dict[str, Any], path: str) -> str | None:
    """The document's path template that ``path`` (a query string is ignored) fits, or None."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    for template in doc["paths"]:
        pattern = [p for p in template.split("/") if p]
        if len(pattern) == len(parts) and all(
            want.startswith("{") or want == got for want, got in zip(pattern, parts, strict=True)
        ):
            return template
    return None


def _explain(exc: Exception) -> str:
    details = [str(exc)]
    cause = exc.__cause__
    while cause is not None:
        details.append(str(cause))
        for error in getattr(cause, "schema_errors", ()) or ():
            details.append(f"  {error.message} at {list(error.absolute_path)}")
        cause = cause.__cause__
    return "\n    ".join(details)


def check_answer(text: str, entry: dict[str, Any]) -> str | None:
    """The problem with one recorded answer, or None if it keeps the contract."""
    doc = json.loads(text)
    method, path = entry["method"], entry["path"]
    status = int(entry["status"].split()[0])
    headers = {k.lower(): v for k, v in entry["headers"]}
    where = f"{method} {path}{'?' + entry['query'] if entry['query'] else ''} -> {status}"
    op_method = "get" if method == "HEAD" else method.lower()
    template = template_of(doc, path)
    item = doc["paths"].get(template, {}) if template else {}
    if op_method not in item:
        want = 404 if template is None else 405
        if status != want:
            return f"{where}: not an operation of openapi.json, so it must answer {want}"
        if template is not None:
            allowed = [m.upper() for m in item if m in METHODS]
            allowed += ["HEAD"] if "GET" in allowed else []
            got = [m.strip() for m in headers.get("allow", "").split(",") if m.strip()]
            if sorted(got) != sorted(allowed):
                return f"{where}: Allow is {got}, openapi.json has {allowed} for {template}"
        if method == "HEAD":
            return None
        try:
            schema = {**doc["components"]["schemas"]["Error"], "additionalProperties": False}
            jsonschema.validate(json.loads(entry["body"]), schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            return f"{where}: not a JSON Error: {exc}"
        return None
    if str(status) not in item[op_method]["responses"]:
        return f"{where}: status {status} is not documented for {op_method.upper()} {template}"
    SEEN.add((template or "", op_method, str(status)))
    if method == "HEAD":
        return None
    request = MockRequest("http://registry", op_method, path,
                          args={k: v[0] for k, v in parse_qs(entry["query"]).items()})  # fmt: skip
    ctype = headers.get("content-type", "")
    response = MockResponse(entry["body"].encode(), status, headers, ctype)
    try:
        _openapi(text).validate_response(request, response)
    except Exception as exc:
        return f"{where}: {_explain(exc)}\n    body: {entry['body'][:500]}"
    return None


def check_folder(folder: Path) -> list[str]:
    """Check (then remove) what ``api_recorder.py`` recorded in ``folder``; the problems."""
    text = (folder / "openapi.json").read_text()
    DOCUMENTS["last"] = json.loads(text)
    problems: list[str] = []
    for recorded in sorted(folder.glob("*.jsonl")):
        for line in recorded.read_text().splitlines():
            problem = check_answer(text, json.loads(line))
            if problem is not None:
                problems.append(problem)
        recorded.unlink()
    return problems
