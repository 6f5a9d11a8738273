"""The S3 backend's blob path against boto3's own transfer functions, on one S3 server.

Run it from the repository root::

    .venv/bin/python benchmarks/storage_s3.py [--size-mib 1024] [--rounds 1]

It starts moto's standalone S3 server on a free loopback port and, for the same
``--size-mib`` bytes of a file on disk:

- ``boto3 upload_file`` / ``download_file``: the baseline (boto3's TransferManager,
  8 MiB parts, 10 threads);
- ``S3Upload`` put: the file read in 1 MiB blocks and written to ``store.new_upload()``
  (one 16 MiB part in memory, parts sent one after another), then ``finish()``;
- ``S3Upload.commit``: the server-side multipart copy of the staged object to its key
  (``UploadPartCopy`` in 512 MiB parts, completed with ``If-None-Match: *``);
- ``S3Store.open`` get: the object read through the ranged reader to a file.

Prints seconds and MiB/s of each, and each one's ratio to its boto3 baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from modelpack_registry.storage.s3 import S3Store
from support import S3Server

BLOCK = 1024 * 1024


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_round(store: S3Store, source: Path, out: Path, n: int,
              record: Callable[[str, float], None]) -> None:  # fmt: skip
    client, bucket = store.client, store.bucket
    key = f"reg/packages/baseline-{n}.whl"
    record("boto3 upload_file", timed(lambda: client.upload_file(str(source), bucket, key)))
    record("boto3 download_file", timed(lambda: client.download_file(bucket, key, str(out))))
    client.delete_object(Bucket=bucket, Key=key)
    upload = store.new_upload()

    def put() -> None:
        with source.open("rb") as f:
            while block := f.read(BLOCK):
                upload.write(block)
        upload.finish()

    record("S3Upload write+finish", timed(put))
    record("S3Upload commit (copy)", timed(lambda: upload.commit(f"packages/m-{n}.whl")))

    def get() -> None:
        with store.open(f"packages/m-{n}.whl") as f, out.open("wb") as w:
            while block := f.read(BLOCK):
                w.write(block)

    record("S3Store.open read", timed(get))
    store.delete(f"packages/m-{n}.whl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    size = args.size_mib * BLOCK
    with tempfile.TemporaryDirectory() as tmp, S3Server() as server:
        os.environ.update(server.env)
        source = Path(tmp) / "source.bin"
        with source.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(BLOCK))
        bucket = server.bucket("bench-bucket")
        store = S3Store(bucket, "reg", endpoint_url=server.url)
        results: dict[str, list[float]] = {}

        def record(name: str, seconds: float) -> None:
            results.setdefault(name, []).append(seconds)

        for n in range(args.rounds):
            one_round(store, source, Path(tmp) / "out.bin", n, record)
            assert (Path(tmp) / "out.bin").stat().st_size == size

        base = {"S3Upload write+finish": "boto3 upload_file",
                "S3Upload commit (copy)": "boto3 upload_file",
                "S3Store.open read": "boto3 download_file"}  # fmt: skip
        print(f"{args.size_mib} MiB on moto_server (loopback), best of {args.rounds}:")
        for name, times in results.items():
            best = min(times)
            ratio = f"  {best / min(results[base[name]]):.2f}x {base[name]}" if name in base else ""
            print(f"  {name:24} {best:7.2f} s  {args.size_mib / best:7.1f} MiB/s{ratio}")
        put_total = min(results["S3Upload write+finish"]) + min(results["S3Upload commit (copy)"])
        print(f"  upload + commit          {put_total:7.2f} s  "
              f"{put_total / min(results['boto3 upload_file']):.2f}x boto3 upload_file")  # fmt: skip


if __name__ == "__main__":
    main()
