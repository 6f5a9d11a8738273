"""The scoring server as a WSGI application: :func:`make_app`.

Routes::

    GET  /v2/health/live             200 while the process runs
    GET  /v2/health/ready            200 once load() has finished, else 503
    GET  /v2/models/<name>           metadata: versions, platform, inputs/outputs
    GET  /v2/models/<name>/ready     as /v2/health/ready
    POST /v2/models/<name>/infer     Open Inference Protocol v2
    POST /invocations                MLflow scoring protocol (JSON or CSV)
    GET  /ping                       MLflow's health check: 200 once ready
    GET  /metrics                    Prometheus text: requests and latency per endpoint

Bodies above ``max_body`` bytes get 413 before they are read; a prediction that takes
longer than ``timeout`` seconds gets 504 (the thread finishes it in the background and
its answer is dropped); a request that does not fit the signature gets 400 naming the
field. Each request writes one JSON line to the ``modelpack.serving`` logger.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from modelpack.serving.payloads import (
    PayloadError,
    from_mlflow,
    from_v2,
    json_body,
    v2_fields,
    v2_outputs,
)
from modelpack.serving.signature import SignatureError, jsonable, validate

__all__ = ["Settings", "make_app"]

log = logging.getLogger("modelpack.serving")

StartResponse = Callable[..., Any]
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Settings:
    max_body: int = 20 * 1024 * 1024
    """Largest request body, in bytes (413 above)."""
    timeout: float = 60.0
    """Seconds a prediction may take (504 after)."""
    threads: int = 8
    """Predictions running at once in this process."""


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
            500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


class Metrics:
    """Request counts and a latency histogram per endpoint and status (this process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, int], int] = {}
        self.hist: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            self.counts[endpoint, status] = self.counts.get((endpoint, status), 0) + 1
            bins = self.hist.setdefault(endpoint, [0] * (len(BUCKETS) + 1))
            bins[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
            self.sums[endpoint] = self.sums.get(endpoint, 0.0) + seconds

    def render(self, ready: bool) -> str:
        out = [
            "# HELP modelpack_serve_requests_total Requests answered, by endpoint and status.",
            "# TYPE modelpack_serve_requests_total counter",
        ]
        with self.lock:
            for (endpoint, status), n in sorted(self.counts.items()):
                out.append(
                    f'modelpack_serve_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}'
                )
            out += [
                "# HELP modelpack_serve_request_seconds Time to answer a request, by endpoint.",
                "# TYPE modelpack_serve_request_seconds histogram",
            ]
            for endpoint, bins in sorted(self.hist.items()):
                total = 0
                for bound, n in zip([*map(str, BUCKETS), "+Inf"], bins, strict=True):
                    total += n
                    out.append(
                        f'modelpack_serve_request_seconds_bucket{{endpoint="{endpoint}",le="{bound}"}} {total}'
                    )
                out.append(
                    f'modelpack_serve_request_seconds_sum{{endpoint="{endpoint}"}} {self.sums[endpoint]:.6f}'
                )
                out.append(
                    f'modelpack_serve_request_seconds_count{{endpoint="{endpoint}"}} {total}'
                )
        out += [
            "# HELP modelpack_serve_ready 1 once the model is loaded.",
            "# TYPE modelpack_serve_ready gauge",
            f"modelpack_serve_ready {int(ready)}",
        ]
        return "\n".join(out) + "\n"


class ScoringApp:
    """The WSGI callable; see the module docstring."""

    def __init__(
        self, model: Any, *, name: str, version: str, signature: dict[str, Any] | None,
        settings: Settings,
    ) -> None:  # fmt: skip
        self.name, self.version, self.signature, self.settings = name, version, signature, settings
        self.loaded: Future[Any]
        if isinstance(model, Future):
            self.loaded = model
        else:
            self.loaded = Future()
            self.loaded.set_result(model)
        self.pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="predict")
        self.metrics = Metrics()

    @property
    def ready(self) -> bool:
        return self.loaded.done() and self.loaded.exception() is None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start = time.perf_counter()
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        endpoint, rows = self._endpoint(path), None
        try:
            status, body, ctype, rows = self._route(method, path, environ)
        except HTTPError as exc:
            status, body, ctype = exc.status, _json({"error": str(exc)}), "application/json"
        except Exception:  # a bug in the model or here: logged, never shown to the client
            log.exception("request %s %s failed", method, path)
            status, body, ctype = (
                500,
                _json({"error": "the model failed; see the server log"}),
                "application/json",
            )
        seconds = time.perf_counter() - start
        self.metrics.observe(endpoint, status, seconds)
        log.info(json.dumps({"ts": round(time.time(), 3), "method": method, "path": path, "status": status,
                             "ms": round(seconds * 1000, 2), "bytes": len(body), "rows": rows}))  # fmt: skip
        start_response(f"{status} {_REASONS.get(status, '')}",
                       [("Content-Type", ctype), ("Content-Length", str(len(body)))])  # fmt: skip
        return [body]

    def _endpoint(self, path: str) -> str:
        if path.startswith("/v2/models/"):
            return "/v2/models/{name}" + ("/infer" if path.endswith("/infer") else "")
        known = ("/invocations", "/ping", "/metrics", "/v2/health/live", "/v2/health/ready", "/v2")
        return path if path in known else "other"

    def _route(
        self, method: str, path: str, environ: dict[str, Any]
    ) -> tuple[int, bytes, str, int | None]:
        j = "application/json"
        if path in ("/v2/health/live",):
            return 200, _json({"live": True}), j, None
        if path in ("/v2/health/ready", "/ping", f"/v2/models/{self.name}/ready"):
            self._check_ready()
            return 200, (b"\n" if path == "/ping" else _json({"ready": True})), j, None
        if path == "/metrics":
            return 200, self.metrics.render(self.ready).encode(), "text/plain; version=0.0.4", None
        if path == "/v2":
            return (
                200,
                _json({"name": "modelpack", "version": self.version, "extensions": []}),
                j,
                None,
            )
        if path == "/invocations":
            self._post(method)
            rows = from_mlflow_or_400(
                self._body(environ), environ.get("CONTENT_TYPE", ""), self.signature
            )
            predictions = self._predict(rows)
            return 200, _json({"predictions": predictions}), j, len(rows)
        if path.startswith("/v2/models/"):
            rest = path[len("/v2/models/") :].split("/")
            if rest[0] != self.name:
                raise HTTPError(404, f"no model {rest[0]!r} here; this server serves {self.name!r}")
            rest = rest[1:]
            if rest[:2] == ["versions", self.version]:
                rest = rest[2:]
            if rest in ([], [""]):
                return 200, _json(self._metadata()), j, None
            if rest == ["infer"]:
                self._post(method)
                doc = _or_400(lambda: json_body(self._body(environ)))
                rows = _or_400(lambda: from_v2(doc, self.signature))
                predictions = self._predict(rows)
                answer = {"model_name": self.name, "model_version": self.version,
                          "outputs": v2_outputs(predictions, self.signature)}  # fmt: skip
                if isinstance(doc, dict) and "id" in doc:
                    answer["id"] = doc["id"]
                return 200, _json(answer), j, len(rows)
        raise HTTPError(
            404, f"no route {path}; see /v2/models/{self.name}, /invocations, /ping, /metrics"
        )

    def _metadata(self) -> dict[str, Any]:
        sig = self.signature or {}
        return {
            "name": self.name, "versions": [self.version], "platform": "modelpack",
            "inputs": v2_fields(sig.get("inputs", [])), "outputs": v2_fields(sig.get("outputs", [])),
        }  # fmt: skip

    def _check_ready(self) -> None:
        if not self.loaded.done():
            raise HTTPError(503, "the model is still loading")
        if self.loaded.exception() is not None:
            raise HTTPError(503, f"load() failed: {self.loaded.exception()}")

    @staticmethod
    def _post(method: str) -> None:
        if method != "POST":
            raise HTTPError(405, "use POST")

    def _body(self, environ: dict[str, Any]) -> bytes:
        limit = self.settings.max_body
        length = environ.get("CONTENT_LENGTH") or ""
        too_big = f"the body is larger than the limit of {limit} bytes; send fewer rows per request (or raise --max-body)"
        if length.isdigit():
            if int(length) > limit:
                raise HTTPError(413, too_big)
            return bytes(environ["wsgi.input"].read(int(length)))
        body = environ["wsgi.input"].read(limit + 1)  # chunked: read at most the limit
        if len(body) > limit:
            raise HTTPError(413, too_big)
        return bytes(body)

    def _predict(self, rows: Any) -> Any:
        self._check_ready()
        if self.signature is not None:
            _or_400(lambda: validate(rows, self.signature or {}))
        elif not isinstance(rows, list):
            raise HTTPError(400, "expected a list of rows")
        model = self.loaded.result()
        job = self.pool.submit(model.predict, rows)
        try:
            result = job.result(timeout=self.settings.timeout)
        except FutureTimeout:
            raise HTTPError(
                504, f"the prediction took longer than {self.settings.timeout:g} s (--timeout)"
            ) from None
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # the model refuses the input
            raise HTTPError(
                400, f"the model rejected the input: {type(exc).__name__}: {exc}"
            ) from None
        return jsonable(result)


def _or_400(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (PayloadError, SignatureError) as exc:
        raise HTTPError(400, str(exc)) from None


def from_mlflow_or_400(body: bytes, content_type: str, signature: dict[str, Any] | None) -> Any:
    return _or_400(lambda: from_mlflow(body, content_type, signature))


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def make_app(
    model: Any, *, name: str, version: str = "", signature: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> ScoringApp:  # fmt: skip
    """A WSGI app that serves *model* (an object with ``predict``, or a
    :class:`~concurrent.futures.Future` of one: not ready until it is done)."""
    return ScoringApp(
        model, name=name, version=version, signature=signature, settings=settings or Settings()
    )
