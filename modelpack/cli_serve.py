"""``modelpack serve`` and ``modelpack predict``: their flags, registered by :mod:`modelpack.cli`.

Both find the environment with the model (:func:`modelpack.serving.envs.prepare`) and
run :mod:`modelpack.serving.server` or :mod:`modelpack.serving.batch` there: in this
process when the model is installed here, else by replacing this process with the
cached environment's Python (so SIGTERM reaches the server directly).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from modelpack.errors import ModelpackError, UsageError

__all__ = ["add_parsers"]


def _progress(message: str) -> None:
    print(f"modelpack: {message}", file=sys.stderr, flush=True)


def _cmd_serve(args: argparse.Namespace) -> int:
    from modelpack.serving.envs import parse_target, prepare, run_in

    if args.workers < 1 or not 0 < args.port < 65536:
        raise UsageError("--workers must be at least 1 and --port between 1 and 65535")
    target = parse_target(args.spec)
    python, _version, _reused = prepare(target, args.registry, _progress)
    forward = [target.name, "--host", args.host, "--port", str(args.port),
               "--workers", str(args.workers), "--threads", str(args.threads),
               "--timeout", str(args.timeout), "--max-body", str(int(args.max_body_mb * 1024 * 1024))]  # fmt: skip
    if python == sys.executable:
        if importlib.util.find_spec("gunicorn") is None:
            raise ModelpackError("serving needs gunicorn here: pip install 'modelpack[serve]'")
        from modelpack.serving.server import main as serve

        return serve(forward)
    run_in(python, "modelpack.serving", forward)
    return 1  # not reached: run_in replaces this process


def _cmd_predict(args: argparse.Namespace) -> int:
    from modelpack.serving.envs import parse_target, prepare, run_in

    if not args.input.is_file():
        raise UsageError(f"--input {args.input}: no such file")
    target = parse_target(args.spec)
    python, _version, _reused = prepare(target, args.registry, _progress)
    forward = [
        target.name,
        "--input",
        str(args.input.resolve()),
        "--batch-size",
        str(args.batch_size),
    ]
    if args.output:
        forward += ["--output", str(args.output.resolve())]
    if python == sys.executable:
        from modelpack.serving.batch import main as batch

        return batch(forward)
    run_in(python, "modelpack.serving.batch", forward)
    return 1


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    remote: argparse.ArgumentParser,
) -> None:
    """Add ``serve`` and ``predict`` to the ``modelpack`` command."""
    from pathlib import Path

    spec_help = "NAME, NAME==VERSION or NAME@STAGE (e.g. model-foo@production)"
    env_text = (
        "A model installed in this environment is used from here; otherwise it is installed "
        "from the registry into an environment cached per name and version "
        "($MODELPACK_CACHE_DIR/serve/, uv if available, else pip) and run there."
    )
    p = sub.add_parser(
        "serve", parents=[common, remote], help="serve a model over HTTP (Open Inference Protocol v2 and MLflow's /invocations)",
        description=(
            "Serve a model: POST /v2/models/NAME/infer (Open Inference Protocol v2), "
            "POST /invocations (MLflow JSON and CSV), GET /v2/health/live, /v2/health/ready, "
            "/ping, /metrics (Prometheus). Requests are checked against the model's signature. "
            + env_text + " SIGTERM lets requests in flight finish. See docs/serving.md."
        ),
    )  # fmt: skip
    p.add_argument("spec", metavar="NAME[==VERSION|@STAGE]", help=spec_help)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    p.add_argument("--port", type=int, default=8000, help="default: 8000")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, each with its own copy of the model (default: 1)",
    )
    p.add_argument(
        "--threads", type=int, default=8, help="requests at once per worker (default: 8)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds a prediction may take; 504 after (default: 60)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=20.0,
        help="largest request body in MiB; 413 above (default: 20)",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "predict", parents=[common, remote], help="score a JSON Lines or CSV file with a model",
        description=(
            "Score FILE (JSON Lines: one row per line; .csv: a header line, then rows) in "
            "batches, with flat memory; write one prediction per line (JSON Lines, or a "
            "prediction column if --output ends in .csv) to --output or stdout. A bad row "
            "stops the run with its line number and nothing is written. " + env_text
        ),
    )  # fmt: skip
    p.add_argument("spec", metavar="NAME[==VERSION|@STAGE]", help=spec_help)
    p.add_argument("--input", required=True, type=Path, metavar="FILE", help=".jsonl or .csv")
    p.add_argument("--output", type=Path, metavar="FILE", help="default: stdout")
    p.add_argument(
        "--batch-size", type=int, default=1000, help="rows per predict() call (default: 1000)"
    )
    p.set_defaults(func=_cmd_predict)
