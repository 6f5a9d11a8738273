"""``modelpack-registry``: a thin CLI over :mod:`modelpack_registry`.

``main(argv)`` returns the exit status: 0 success, 1 a reported error (one line on
stderr, no traceback unless ``-v``), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from modelpack_registry import __version__
from modelpack_registry.cli_access import ACCESS_COMMANDS, add_access_commands, open_data
from modelpack_registry.cli_migrate import add_migrate_command, run_migrate
from modelpack_registry.errors import RegistryError
from modelpack_registry.storage.location import DEFAULT_DATA, ENV, Location
from modelpack_registry.web.upload import parse_size

__all__ = ["main"]


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (e.g. 600)")
    return value


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 7 * 24 * 3600:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds from 1 to 604800 (S3's longest: 7 days)"
        )
    return value


def _rate(text: str) -> int:
    return 0 if text.strip() == "0" else _size(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelpack-registry",
        description="The modelpack model registry: a private Python package index.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_help = "the data folder (default: ./registry-data)"

    serve = sub.add_parser(
        "serve", help="serve the index, uploads and the catalog",
        description="Serve the index, uploads and the catalog. To serve under a path "
        "prefix (behind a proxy that keeps it), set SCRIPT_NAME=/prefix in the environment.",
    )  # fmt: skip
    serve.add_argument("--data", type=Path, default=Path("registry-data"), help=data_help)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    serve.add_argument("--htpasswd", type=Path, metavar="FILE",
                       help="require these Basic credentials (bcrypt) for uploads")  # fmt: skip
    serve.add_argument("--admin", action="append", default=[], metavar="USER",
                       help="a user who may change every model (repeatable)")  # fmt: skip
    serve.add_argument("--protect-reads", action="store_true",
                       help="require credentials for every read too (not /health)")  # fmt: skip
    serve.add_argument("--insecure", action="store_true",
                       help="allow anonymous uploads on a non-loopback address")  # fmt: skip
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    serve.add_argument(
        "--threads",
        type=int,
        default=16,
        help="threads per worker for reads, and as many for uploads and downloads (16)",
    )
    serve.add_argument("--max-upload-size", type=_size, default=_size("20GiB"), metavar="SIZE",
                       help="largest accepted upload body, e.g. 20GiB, 500MiB (20GiB)")  # fmt: skip
    serve.add_argument("--graceful-timeout", type=int, default=30, metavar="SECONDS",
                       help="on SIGTERM, let in-flight requests (an upload) finish this long (30)")  # fmt: skip
    serve.add_argument("--access-log", action="store_true",
                       help="log one line per request on stdout (never a password or token)")  # fmt: skip
    serve.add_argument("--upstream", metavar="URL", default=os.environ.get("MODELPACK_UPSTREAM") or None,
                       help="a simple index (e.g. https://pypi.org/simple/) to proxy and cache for "
                       "every name that is not private; env MODELPACK_UPSTREAM (default: none)")  # fmt: skip
    serve.add_argument("--upstream-ttl", type=_seconds, metavar="SECONDS",
                       default=os.environ.get("MODELPACK_UPSTREAM_TTL") or "600",
                       help="serve a cached upstream page this long before asking again; env "
                       "MODELPACK_UPSTREAM_TTL (600)")  # fmt: skip
    serve.add_argument("--mirror-dir", type=Path, metavar="DIR",
                       default=os.environ.get("MODELPACK_MIRROR_DIR") or None,
                       help="the --upstream cache, a local folder that refills itself (default: "
                       "DATA/mirror; on a bucket ~/.cache/modelpack-registry/mirror-<hash>, else under "
                       "the temp folder); "
                       "env MODELPACK_MIRROR_DIR")  # fmt: skip
    serve.add_argument("--refresh-interval", type=_seconds, metavar="SECONDS",
                       default=os.environ.get("MODELPACK_REFRESH_INTERVAL") or None,
                       help="how often a server process checks the storage for other replicas' "
                       "changes (one small read; 0.25 on a folder, 1 on a bucket); env "
                       "MODELPACK_REFRESH_INTERVAL")  # fmt: skip
    serve.add_argument("--header-timeout", type=float, default=20, metavar="SECONDS",
                       help="a request's headers must arrive within this; no thread waits for them (20)")  # fmt: skip
    serve.add_argument("--body-timeout", type=float, default=60, metavar="SECONDS",
                       help="end a request whose body or answer makes no progress this long (60)")  # fmt: skip
    serve.add_argument("--min-upload-rate", type=_rate, default=_size("10KiB"), metavar="SIZE",
                       help="after --body-timeout, cut off an upload averaging less per second; 0: off (10KiB)")  # fmt: skip
    serve.add_argument("--max-connections", type=int, default=4096, metavar="N",
                       help="open connections per worker, idle ones included (4096)")  # fmt: skip

    verify = sub.add_parser(
        "verify",
        help="report corrupt, orphaned and leftover files, and broken access, stage and yank files",
    )
    verify.add_argument("--data", type=Path, default=Path("registry-data"), help=data_help)
    verify.add_argument("--htpasswd", type=Path, metavar="FILE",
                        help="check this file too, and that owners and tokens name its users")  # fmt: skip
    reindex = sub.add_parser("reindex", help="rebuild every derived file from the wheels")
    reindex.add_argument("--data", type=Path, default=Path("registry-data"), help=data_help)
    reserve = sub.add_parser(
        "reserve",
        help="claim model names before their first upload: with --upstream, a reserved "
        "name is never looked up on the upstream index",
    )
    reserve.add_argument("--data", type=Path, default=Path("registry-data"), help=data_help)
    reserve.add_argument("names", nargs="*", metavar="NAME", help="model (distribution) names")
    reserve.add_argument("--release", action="store_true",
                         help="remove the reservations instead (a name with files stays private)")  # fmt: skip
    reserve.add_argument("--list", action="store_true", help="list the reserved names")
    add_access_commands(sub, data_help)
    for command in _with_data(parser):
        _add_storage_options(command, serve=command is serve)
    add_migrate_command(sub)
    return parser


def _with_data(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every (sub-)command that takes ``--data``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _with_data(child)
        elif action.dest == "data":
            yield parser


def _add_storage_options(parser: argparse.ArgumentParser, *, serve: bool) -> None:
    """``--storage``/``--s3-*`` beside ``--data``, which then defaults to None (the
    location is resolved after parsing: an option beats its environment variable)."""
    for action in parser._actions:
        if action.dest == "data":
            action.default = None
            action.help = "the data folder (default: ./registry-data)"
    group = parser.add_argument_group("object storage (instead of --data)")
    group.add_argument("--storage", metavar="URL",
                       help="keep the state in a bucket: s3://BUCKET/PREFIX (boto3 needed: "
                       "pip install 'modelpack-registry[s3]'; credentials from the standard AWS "
                       f"chain); env {ENV['storage']}")  # fmt: skip
    group.add_argument("--s3-endpoint", metavar="URL",
                       help="an S3-compatible service's URL (MinIO, Ceph, ...; default: AWS); "
                       f"env {ENV['endpoint']}")  # fmt: skip
    group.add_argument(
        "--s3-region",
        metavar="REGION",
        help=f"the bucket's region (default: the AWS chain's); env {ENV['region']}",
    )
    if serve:
        off = os.environ.get(ENV["redirect"], "").strip().lower() in ("0", "false", "no", "off")
        group.add_argument("--s3-redirect", action=argparse.BooleanOptionalAction, default=not off,
                           help="answer /packages/<file> with a redirect to a short-lived presigned "
                           "URL of the bucket (--no-s3-redirect: stream it through the registry, "
                           f"for buckets clients cannot reach); env {ENV['redirect']}=0 (on)")  # fmt: skip
        group.add_argument("--s3-url-ttl", type=_ttl, metavar="SECONDS",
                           default=os.environ.get(ENV["url_ttl"]) or "300",
                           help="seconds a redirect's presigned URL stays valid (a download "
                           f"that started in time runs to its end); env {ENV['url_ttl']} (300)")  # fmt: skip


def _resolve_location(args: argparse.Namespace) -> None:
    """Set ``args.location``; for a folder also ``args.data`` (what the commands read)."""
    if not hasattr(args, "storage"):
        return
    args.location = Location.resolve(args.data, args.storage, args.s3_endpoint, args.s3_region)
    args.data = args.location.folder


def _serve(args: argparse.Namespace) -> int:
    from modelpack_registry.web.server import ServeConfig, serve

    serve(
        ServeConfig(
            data=args.data or DEFAULT_DATA, host=args.host, port=args.port,
            htpasswd=args.htpasswd,
            insecure=args.insecure, workers=args.workers, threads=args.threads,
            max_upload_size=args.max_upload_size, admins=tuple(args.admin),
            protect_reads=args.protect_reads, graceful_timeout=args.graceful_timeout,
            access_log=args.access_log, upstream=args.upstream, upstream_ttl=args.upstream_ttl,
            header_timeout=args.header_timeout, body_timeout=args.body_timeout,
            min_upload_rate=args.min_upload_rate, max_connections=args.max_connections,
            storage=None if args.data else args.location.storage,
            s3_endpoint=args.location.endpoint_url, s3_region=args.location.region,
            storage_redirect=args.s3_redirect, s3_url_ttl=args.s3_url_ttl,
            refresh_interval=args.refresh_interval, mirror_dir=args.mirror_dir,
        )
    )  # fmt: skip
    return 0


def _verify(args: argparse.Namespace) -> int:
    from modelpack_registry.verify.access import verify_access
    from modelpack_registry.verify.maintenance import verify
    from modelpack_registry.verify.state import verify_state

    data = open_data(args)
    access = verify_access(data, args.htpasswd)
    verify_state(data, access)
    from modelpack_registry.upstream.cache import verify_mirror

    folder = args.location.folder  # the upstream cache (mirror/) is a folder-only feature
    mirror = verify_mirror(folder / "mirror") if folder is not None else []
    problems = verify(data) + mirror + access.errors
    for line in problems + access.warnings:
        print(line)
    warned = f"{len(access.warnings)} warning(s)" if access.warnings else ""
    if problems:
        also = f" and {warned}" if warned else ""
        print(f"{len(problems)} problem(s){also} in {args.location.storage}", file=sys.stderr)
        return 1
    print(f"{args.location.storage}: OK" + (f", {warned}" if warned else ""))
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from modelpack_registry.verify.maintenance import reindex

    result = reindex(open_data(args))
    for line in result.removed:
        print(f"removed {line}")
    for line in result.invalid:
        print(f"invalid (not listed) {line}")
    print(f"indexed {result.indexed} distribution(s) in {args.location.storage}")
    return 1 if result.invalid else 0


def _reserve(args: argparse.Namespace) -> int:
    from modelpack_registry.access.owners import cli_actor, model_name
    from modelpack_registry.access.reserved import release, reserve, reserved_names

    data = open_data(args)
    if not args.names and not args.list:
        raise RegistryError("give the NAME(s) to reserve (or --list)")
    for name in [model_name(raw) for raw in args.names]:
        if args.release:
            done = release(data, name)
            print(f"released {name}" if done else f"{name} was not reserved")
        else:
            done = reserve(data, name, cli_actor())
            print(f"reserved {name}" if done else f"{name} was already reserved")
    if args.list:
        for name in reserved_names(data):
            print(name)
    return 0


_COMMANDS = {"serve": _serve, "verify": _verify, "reindex": _reindex, "reserve": _reserve,
             "migrate": run_migrate, **ACCESS_COMMANDS}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        _resolve_location(args)
        return _COMMANDS[args.command](args)
    except RegistryError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"modelpack-registry: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
