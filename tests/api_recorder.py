"""``python tests/api_recorder.py FOLDER serve ...``: the registry, writing down its API answers.

`support.Registry` starts every test registry through this script, so that each
``/api/v1`` answer the tests provoke (with requests, with the ``modelpack`` CLI, with
anything) is checked against ``openapi.json`` by `api_contract.check_folder` when the
registry stops. It wraps ``RegistryApp.__call__`` before the CLI runs (gunicorn workers
inherit it) and appends one JSON line per answer to ``FOLDER/<pid>.jsonl``, once the
body has been sent. ``FOLDER/openapi.json`` is the document ``GET /api/v1/openapi.json``
serves. Nothing else changes: other paths, headers and bodies pass through untouched
(a file still goes out with sendfile).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from modelpack_registry.cli import main
from modelpack_registry.web.app import RegistryApp
from modelpack_registry.web.openapi import openapi_document

StartResponse = Callable[..., Any]


class _Capture:
    """``start_response`` remembering the status and headers.

    Keeps ``__self__`` (gunicorn's response), which linger.py reaches through it.
    """

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response
        self.__self__ = getattr(start_response, "__self__", None)
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        self.status, self.headers = status, list(headers)
        return self._start_response(status, headers, *exc_info)


class _Recorded:
    """The response body, passed through; the answer is written down on ``close()``."""

    def __init__(self, body: Iterable[bytes], write: Callable[[bytes], None]) -> None:
        self._body = body
        self._write = write
        self._chunks: list[bytes] = []

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._chunks.append(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._write(b"".join(self._chunks))


def install(folder: Path) -> None:
    """Make every ``RegistryApp`` of this process record its ``/api/v1`` answers."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "openapi.json").write_text(json.dumps(openapi_document()))
    original = RegistryApp.__call__

    def recording(self: RegistryApp, environ: dict[str, Any],
                  start_response: StartResponse) -> Iterable[bytes]:  # fmt: skip
        if not environ.get("PATH_INFO", "").startswith("/api/v1"):
            return original(self, environ, start_response)
        capture = _Capture(start_response)
        method, path = environ.get("REQUEST_METHOD", "GET"), environ["PATH_INFO"]
        query = environ.get("QUERY_STRING", "")
        body = original(self, environ, capture)

        def write(sent: bytes) -> None:
            entry = {
                "method": method,
                "path": path,
                "query": query,
                "status": capture.status,
                "headers": capture.headers,
                "body": sent.decode("utf-8", "replace"),
            }
            line = (json.dumps(entry) + "\n").encode()
            fd = os.open(folder / f"{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

        return _Recorded(body, write)

    RegistryApp.__call__ = recording  # type: ignore[method-assign]


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
