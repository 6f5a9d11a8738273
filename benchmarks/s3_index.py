"""The registry on a bucket: index pages at 10,000 files, and how soon a replica sees an upload.

Run it from the repository root (needs boto3 and ``moto[server]`` in the venv, and a
registry with ``serve --storage s3://...``)::

    .venv/bin/python benchmarks/s3_index.py             # 10,000 files, 10 visibility rounds
    .venv/bin/python benchmarks/s3_index.py --quick     # 2,000 files, fewer requests

Everything runs on loopback against one moto S3 server started here, and prints one
table, each figure beside a baseline measured in the same run: the same registry on a
data folder holding the same files.

- ``simple``: ``/simple/<project>/`` latency, p50/p99, with 1 and 20 concurrent
  clients, with 10,000 files (10 per project) in the bucket (written straight into it
  with boto3, with the registry's own records), and the time from starting the server
  to its first answered page.
- ``replica``: two registry processes on one bucket prefix; a wheel is uploaded to the
  first, and the second's ``/simple/<project>/`` is polled every 5 ms until it lists the
  file: the time it takes, median and worst of the rounds; baseline: two registries
  on one data folder (which poll its ``generation`` file).

``--only simple,replica`` runs a subset. No figure is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from _s3_bench import aws_environment, moto, registry_on_s3, require_s3_serving, s3_client
from registry import (
    Server,
    Table,
    latencies,
    ms,
    pct,
    populate,
    raw_upload,
    registry,
    small_wheel,
)

from modelpack_registry.records import Record

BUCKET = "modelpack-bench"


def populate_bucket(client: Any, prefix: str, files: int, per_project: int = 10) -> str:
    """``files`` wheels with their records and metadata under ``prefix``, as an upload
    leaves them (the same objects :func:`registry.populate` writes into a folder)."""

    def put(key: str, body: bytes) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=body)

    def one(i: int) -> None:
        name, version = f"model-{i // per_project:05d}", f"1.{i % per_project}"
        filename, raw, metadata = small_wheel(name, version)
        record = Record(filename=filename, name=name, version=version,
                        sha256=hashlib.sha256(raw).hexdigest(), size=len(raw),
                        upload_time="2025-01-01T00:00:00Z", requires_python=">=3.9",
                        summary="benchmark model",
                        core_metadata_sha256=hashlib.sha256(metadata).hexdigest())  # fmt: skip
        put(f"meta/{filename}.json", record.to_json())
        put(f"meta/{filename}.metadata", metadata)
        put(f"packages/{filename}", raw)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(files)))
    put("generation", b"1\n")
    return "model-00000"


def started(make: Callable[[], Server]) -> tuple[Server, float]:
    """A server and the seconds from its start to its first answered index page."""
    t0 = time.perf_counter()
    server = make()
    requests.get(f"{server.url}/simple/model-00000/", timeout=300).raise_for_status()
    return server, time.perf_counter() - t0


def bench_simple(table: Table, work: Path, s3: Server, client: Any, files: int,
                 quick: bool) -> None:  # fmt: skip
    table.section(f"/simple/<project>/ with {files:,} files (10 per project), p50 / p99")
    t0 = time.perf_counter()
    project = populate_bucket(client, "simple", files)
    print(f"  put {files:,} wheels + records into the bucket in {time.perf_counter() - t0:.1f} s")
    populate(work / "simple", files)
    n1, n20, limit = (200, 600, 10.0) if quick else (1000, 4000, 30.0)
    figures: dict[tuple[str, int], tuple[float, float, int]] = {}
    starts: dict[str, float] = {}
    makers: list[tuple[str, Callable[[], Server]]] = [
        ("s3", lambda: registry_on_s3(s3, BUCKET, "simple", work / "registry.log")),
        ("folder", lambda: registry(work / "simple", work / "registry.log")),
    ]
    for label, make in makers:
        server, starts[label] = started(make)
        try:
            path = f"/simple/{project}/"
            latencies(server.url, path, 1, 20, 10)  # warm-up
            for clients, total in ((1, n1), (20, n20)):
                got = latencies(server.url, path, clients, total, limit)
                figures[(label, clients)] = (pct(got, 0.5), pct(got, 0.99), len(got))
        finally:
            server.stop()
    for clients in (1, 20):
        p50, p99, n = figures[("s3", clients)]
        b50, b99, bn = figures[("folder", clients)]
        table.add(f"{clients} client(s)", f"{ms(p50)} / {ms(p99)} (n={n})",
                  f"on a folder: {ms(b50)} / {ms(b99)} (n={bn})", f"p50 {p50 / b50:.2f}x")  # fmt: skip
    table.add("start to first page", f"{starts['s3']:.2f} s", f"on a folder: "
              f"{starts['folder']:.2f} s", f"{starts['s3'] / starts['folder']:.2f}x")  # fmt: skip


def seen_after(first: Server, second: Server, work: Path, version: str) -> float:
    """Upload a wheel to ``first``; seconds until ``second`` lists it."""
    filename, raw, _ = small_wheel("model-seen", version)
    wheel = work / filename
    wheel.write_bytes(raw)
    status, body = raw_upload(first.url, wheel, "model-seen", version)
    if status != 200:
        raise RuntimeError(f"upload answered {status}: {body!r}")
    t0 = time.perf_counter()
    with requests.Session() as http:
        while time.perf_counter() - t0 < 120:
            page = http.get(f"{second.url}/simple/model-seen/", timeout=30)
            if page.status_code == 200 and filename in page.text:
                return time.perf_counter() - t0
            time.sleep(0.005)
    raise RuntimeError(f"{second.url} did not list {filename} within 120 s")


def bench_replica(table: Table, work: Path, s3: Server, rounds: int) -> None:
    table.section(f"time for a second replica to list a new upload, median / worst of {rounds}")
    log = work / "registry.log"
    results: dict[str, list[float]] = {}
    makers: list[tuple[str, Callable[[], Server]]] = [
        ("s3", lambda: registry_on_s3(s3, BUCKET, "replica", log)),
        ("folder", lambda: registry(work / "replica", log)),
    ]
    for label, make in makers:
        first = make()
        second = make()
        try:
            results[label] = [seen_after(first, second, work, f"2.{i}") for i in range(rounds)]
        finally:
            first.stop()
            second.stop()
        print(f"  {label}: " + ", ".join(ms(t) for t in results[label]), flush=True)
    s3_t, folder_t = results["s3"], results["folder"]
    table.add("upload on replica 1, listed by replica 2",
              f"{ms(statistics.median(s3_t))} / {ms(max(s3_t))}",
              f"on a folder: {ms(statistics.median(folder_t))} / {ms(max(folder_t))}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 files, fewer requests")
    parser.add_argument("--files", type=int, default=None, help="files in the bucket (10000)")
    parser.add_argument("--rounds", type=int, default=None, help="replica rounds (10; 5 quick)")
    parser.add_argument("--only", default="simple,replica")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temp folder")
    args = parser.parse_args(argv)
    require_s3_serving()
    aws_environment()
    files = args.files or (2000 if args.quick else 10000)
    rounds = args.rounds or (5 if args.quick else 10)
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="modelpack-s3-bench-", dir=args.tmp))
    table = Table()
    t0 = time.perf_counter()
    s3 = moto(work / "moto.log")
    try:
        client = s3_client(s3.url)
        client.create_bucket(Bucket=BUCKET)
        if "simple" in only:
            bench_simple(table, work, s3, client, files, args.quick)
        if "replica" in only:
            bench_replica(table, work, s3, rounds)
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"registry on S3 (moto), index ({'quick' if args.quick else 'full'}, "
          f"{time.perf_counter() - t0:.0f} s)")  # fmt: skip
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
