"""moto's standalone S3 server, with two guarantees of S3 that moto's server lacks.

Run as ``python tests/moto_s3.py -H 127.0.0.1 -p PORT`` (``support.S3Server`` does). It is
``moto_server`` (the same app, handler and threaded werkzeug server) behind one WSGI
middleware that adds:

1. **Atomic conditional writes.** S3 applies ``If-None-Match: *`` / ``If-Match`` and the
   write as one step; moto checks the condition and then writes, in a threaded server,
   with no lock between, so two racing ``If-None-Match: *`` PUTs can both succeed. Here
   every object write (PUT, POST, DELETE; not the parts of a multipart upload, which
   publish nothing) runs under one lock, its body read before taking it.
2. **Expiry of presigned URLs.** moto serves a presigned URL for ever (and checks no
   signature). Here a request whose query has ``X-Amz-Date`` + ``X-Amz-Expires`` in the
   past gets S3's answer: ``403 AccessDenied`` "Request has expired".

Everything else is moto's own behaviour.
"""

from __future__ import annotations

import io
import sys
import threading
import time
import urllib.parse
from calendar import timegm
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

StartResponse = Callable[..., Any]

EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
           b"<Message>Request has expired</Message></Error>")  # fmt: skip


class S3Guarantees:
    """The WSGI middleware described in the module docstring."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        if method in ("GET", "HEAD") and expired(query):
            start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                             ("Content-Length", str(len(EXPIRED)))])  # fmt: skip
            return [] if method == "HEAD" else [EXPIRED]
        if method not in ("PUT", "POST", "DELETE") or "partNumber" in query:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        length = environ.get("CONTENT_LENGTH")
        if length:
            environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(int(length)))
        answer: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return lambda data: None

        with self.lock:
            result = self.app(environ, capture)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        start_response(*answer)
        return [body]


def expired(query: dict[str, list[str]]) -> bool:
    if "X-Amz-Date" not in query or "X-Amz-Expires" not in query:
        return False
    signed = timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    return time.time() > signed + int(query["X-Amz-Expires"][0])


def main(argv: list[str]) -> None:
    host, port = "127.0.0.1", 5000
    for flag, value in zip(argv[::2], argv[1::2]):
        if flag in ("-H", "--host"):
            host = value
        elif flag in ("-p", "--port"):
            port = int(value)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, S3Guarantees(app), threaded=True,
               request_handler=MotoRequestHandler)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
