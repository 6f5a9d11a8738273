"""``modelpack-registry migrate``: its options, kept apart from :mod:`.cli` (a small hook)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from modelpack_registry.errors import ConfigError, RegistryError

if TYPE_CHECKING:
    from modelpack_registry.storage.base import Store

__all__ = ["add_migrate_command", "open_location", "run_migrate"]

DESCRIPTION = """\
Copy a registry's whole state from one store to another: a data folder, or a bucket
prefix s3://BUCKET/PREFIX (credentials from the standard AWS chain: environment, config
files, instance or pod roles). Copied: packages/ (streamed, flat memory), meta/ (records,
metadata, cards), state/ (owners, reserved names, API tokens, stages, yanks) and the
generation, set above the destination's own so replicas reload. NOT copied: tmp/ (uploads
in flight) and mirror/ (the upstream cache, which refills itself).

Nothing is ever overwritten: an object the destination already has with the same bytes
is skipped (so a re-run resumes an interrupted copy), one with other bytes is a conflict,
and if there is any conflict nothing is written. The result is then verified: every
distribution's sha256 against its record, every record and state document byte for byte,
and the counts; any mismatch exits with status 1. A re-run copies files uploaded
meanwhile; a state document changed meanwhile (a stage moved, a token used or revoked) is
a conflict, unless --sync-state: then the destination's documents become the source's.
To move a live registry: migrate, stop writes on the source, migrate --sync-state."""


def add_migrate_command(sub: Any) -> None:
    """Add ``migrate`` to the ``modelpack-registry`` sub-parsers."""
    parser = sub.add_parser(
        "migrate", help="copy a registry from a folder or bucket to another, and verify it",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--from", dest="source", required=True, metavar="SRC",
                        help="the registry to copy: a data folder or s3://BUCKET/PREFIX")  # fmt: skip
    parser.add_argument("--to", dest="destination", required=True, metavar="DST",
                        help="where to copy it: a data folder (created if missing) or "
                        "s3://BUCKET/PREFIX")  # fmt: skip
    parser.add_argument("--s3-endpoint", metavar="URL",
                        help="the S3 API endpoint of the s3:// side (MinIO, Ceph, ...; "
                        "default: AWS)")  # fmt: skip
    parser.add_argument("--s3-region", metavar="R", help="the region of the s3:// side")
    parser.add_argument("--sync-state", action="store_true",
                        help="make the destination's documents the source's: replace the state, "
                        "claims and records that differ, remove state the source no longer has "
                        "(a revoked token, an un-yank); distributions are still never "
                        "overwritten. For the second run of a live migration")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be copied and any conflict; write nothing")  # fmt: skip


def open_location(spec: str, option: str, *, endpoint: str | None, region: str | None) -> Store:
    """The store behind ``--from``/``--to`` (``option``): a folder or ``s3://BUCKET/PREFIX``,
    opened as ``--storage`` opens it (a bucket is checked to exist and answer)."""
    from modelpack_registry.storage.location import open_store

    if "://" in spec and not spec.startswith("s3://"):
        raise ConfigError(f"{option} {spec}: give a data folder path or s3://BUCKET/PREFIX")
    try:
        return open_store(spec, endpoint_url=endpoint, region=region)
    except ConfigError as exc:  # its messages name --storage, the option of other commands
        text = str(exc)
        for name in ("--storage: ", "--storage "):
            text = text.removeprefix(name)
        raise ConfigError(f"{option}: {text}") from None


def run_migrate(args: argparse.Namespace) -> int:
    from modelpack_registry.migrate import migrate

    s3_sides = [spec for spec in (args.source, args.destination) if spec.startswith("s3://")]
    if (args.s3_endpoint or args.s3_region) and not s3_sides:
        raise RegistryError("--s3-endpoint and --s3-region apply to an s3:// side, and "
                            "neither --from nor --to is one")  # fmt: skip
    options = {"endpoint": args.s3_endpoint, "region": args.s3_region}
    src = open_location(args.source, "--from", **options)
    dst = open_location(args.destination, "--to", **options)
    result = migrate(src, dst, dry_run=args.dry_run, sync_state=args.sync_state,
                     out=lambda line: print(line, flush=True))  # fmt: skip
    if result.problems:
        print(f"migrate: {len(result.problems)} problem(s), see above", file=sys.stderr)
        return 1
    return 0
