"""Run the scoring app under gunicorn: ``python -m modelpack.serving NAME [options]``.

gunicorn (the registry's server too) with gthread workers: a master that restarts
crashed workers, graceful shutdown on SIGTERM (the workers stop accepting, finish the
requests in flight for up to ``--graceful-timeout`` seconds, then exit), and threads in
each worker for slow clients. Each worker loads the model in a background thread, so
``/v2/health/live`` answers at once and ``/v2/health/ready`` (and ``/ping``) only once
``load()`` has finished. ``modelpack serve`` runs this in the environment that has the
model (the current one, or a cached one; see :mod:`modelpack.serving.envs`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import Future
from importlib.metadata import Distribution
from typing import Any

from packaging.utils import canonicalize_name

from modelpack.errors import ModelNotFoundError
from modelpack.serving.app import Settings, make_app

__all__ = ["installed", "main"]


def installed(name: str) -> tuple[Distribution, Any] | None:
    """The distribution and entry point of the installed model *name*, or None."""
    from importlib.metadata import entry_points

    wanted = canonicalize_name(name)
    for ep in entry_points(group="modelpack.models"):
        if canonicalize_name(ep.name) == wanted and ep.dist is not None:
            return ep.dist, ep
    return None


def manifest_of(dist: Distribution) -> dict[str, Any]:
    text = dist.read_text("modelpack.json")
    return dict(json.loads(text)) if text else {}


def _load_in_background(ep: Any) -> Future[Any]:
    import threading

    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(ep.load()())
        except BaseException as exc:
            logging.getLogger("modelpack.serving").exception("load() failed")
            future.set_exception(exc)

    threading.Thread(target=run, name="load", daemon=True).start()
    return future


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelpack.serving")
    parser.add_argument("name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--max-body", type=int, default=20 * 1024 * 1024)
    parser.add_argument("--graceful-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    found = installed(args.name)
    if found is None:
        raise ModelNotFoundError(f"no installed model named {args.name!r}")
    dist, ep = found
    signature = manifest_of(dist).get("signature")
    name, version = canonicalize_name(args.name), dist.version
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    note = ("requests are checked against its signature" if signature
            else "it has no signature: requests are NOT validated (rebuild it with a "
            "modelpack that infers one from input_example)")  # fmt: skip
    print(f"modelpack serve: {name} {version} on http://{args.host}:{args.port} "
          f"({args.workers} worker(s)); {note}", file=sys.stderr, flush=True)  # fmt: skip
    settings = Settings(max_body=args.max_body, timeout=args.timeout, threads=args.threads)

    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": f"[{args.host}]:{args.port}" if ":" in args.host else f"{args.host}:{args.port}",
                "workers": args.workers, "worker_class": "gthread", "threads": args.threads,
                "graceful_timeout": int(args.graceful_timeout), "timeout": max(120, int(args.timeout) + 30),
                "accesslog": None, "loglevel": "warning", "proc_name": f"modelpack-serve {name}",
            }.items():  # fmt: skip
                self.cfg.set(key, value)

        def load(self) -> Any:
            return make_app(_load_in_background(ep), name=name, version=version,
                            signature=signature, settings=settings)  # fmt: skip

    Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
