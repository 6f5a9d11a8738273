"""The registry on a bucket: big uploads and downloads, beside boto3 on the same S3 server.

Run it from the repository root (needs boto3 and ``moto[server]`` in the venv, and a
registry with ``serve --storage s3://...``)::

    .venv/bin/python benchmarks/s3_transfer.py             # 1 GiB x3, then 6 GiB for RSS
    .venv/bin/python benchmarks/s3_transfer.py --quick     # 256 MiB x2, 1 GiB for RSS

Everything runs on loopback against one moto S3 server started here, and prints one
table, each figure beside a baseline measured in the same run:

- ``speed``: a 1 GiB wheel uploaded through the registry (a streaming multipart POST,
  as twine sends it, into ``--storage s3://``) against ``boto3`` ``upload_file`` of the
  same bytes (its defaults: 8 MiB parts, 10 threads; and one thread, 16 MiB parts, as
  the registry sends them); the same file downloaded by ``pip download`` through the
  registry's redirect to a presigned URL, and by a plain GET following it, against
  ``boto3`` ``download_file`` (its defaults: 8 MiB ranged GETs on 10 threads; and one
  GET, as pip makes). moto reads a whole object to answer each ranged GET, so on moto
  the ranged download is far slower than on S3: compare with the one-GET baseline.
- ``rss``: the registry's peak RSS (master + workers, VmRSS from /proc) while a 6 GiB
  wheel is uploaded, downloaded through the redirect, and downloaded proxied
  (``--no-s3-redirect``); baseline: the same servers idle. moto's own peak is printed
  for context: moto keeps whole objects in memory while it assembles, copies and serves
  them (5.5 GiB for a 1 GiB upload here), so the step is skipped, with a message, unless
  about six times the wheel size is free (``--rss-size 1GiB`` on a small machine).

``--only speed,rss`` runs a subset. No figure is asserted.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import requests
from _s3_bench import aws_environment, mib, moto, registry_on_s3, require_s3_serving, s3_client
from registry import (
    CHUNK,
    PY,
    GiB,
    MiB,
    Server,
    Table,
    big_wheel,
    clean_env,
    download,
    parse_size,
    peak_rss,
    timed,
    upload_once,
)

BUCKET = "modelpack-bench"


def get_following(url: str, path: str) -> int:
    """GET ``path``, following the registry's redirect to the bucket; return the bytes."""
    total = 0
    with requests.get(f"{url}{path}", stream=True, timeout=600) as resp:
        resp.raise_for_status()
        for block in resp.iter_content(CHUNK):
            total += len(block)
    return total


def redirect_target(url: str, path: str) -> str:
    """Where the registry sends a download (``proxied`` if it answers the bytes itself)."""
    resp = requests.get(f"{url}{path}", allow_redirects=False, stream=True, timeout=60)
    resp.close()
    if resp.is_redirect:
        return resp.headers["Location"].split("?")[0]
    return f"proxied ({resp.status_code})"


def pip_download(url: str, dest: Path, requirement: str) -> None:
    cmd = [PY, "-m", "pip", "download", "-q", "--no-deps", "--no-cache-dir",
           "--progress-bar", "off", "-d", str(dest), "--index-url", f"{url}/simple/", requirement]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=900)
    if done.returncode:
        raise RuntimeError(f"pip download failed:\n{done.stdout}\n{done.stderr}")


def empty_prefix(client: Any, prefix: str) -> None:
    """Delete the objects under ``prefix`` (moto keeps them in memory and temp files)."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])


def bench_speed(table: Table, work: Path, s3: Server, client: Any, size: int,
                repeat: int) -> None:  # fmt: skip
    transfer = importlib.import_module("boto3.s3.transfer")  # no type stubs

    table.section(f"a {size / GiB:g} GiB wheel through the registry on S3 vs boto3: "
                  f"best / median of {repeat}")  # fmt: skip
    (work / "wheels").mkdir(exist_ok=True)
    wheel = big_wheel(work / "wheels", "model-big", "1.0", size)
    path = f"/packages/{wheel.name}"
    got = work / "got"
    serial = transfer.TransferConfig(multipart_chunksize=16 * MiB, max_concurrency=1)
    one_get = transfer.TransferConfig(multipart_threshold=2 * size)  # no ranged GETs
    times: dict[str, list[float]] = {k: [] for k in ("registry", "boto3", "boto3-1", "pip",
                                                     "get", "boto3-down", "boto3-get")}  # fmt: skip
    where = ""
    for i in range(repeat):
        reg = registry_on_s3(s3, BUCKET, f"speed-{i}", work / "registry.log")
        try:
            times["registry"].append(timed(partial(upload_once, reg.url, wheel, "raw")))
            where = redirect_target(reg.url, path)
            times["pip"].append(timed(partial(pip_download, reg.url, got, "model-big==1.0")))
            shutil.rmtree(got, ignore_errors=True)
            times["get"].append(timed(partial(get_following, reg.url, path)))
        finally:
            reg.stop()
        empty_prefix(client, f"speed-{i}/")
        key = f"baseline-{i}/{wheel.name}"
        times["boto3"].append(timed(partial(client.upload_file, str(wheel), BUCKET, key)))
        down = str(work / "down.bin")
        times["boto3-down"].append(timed(partial(client.download_file, BUCKET, key, down)))
        (work / "down.bin").unlink()
        fetch = partial(client.download_file, BUCKET, key, down, Config=one_get)
        times["boto3-get"].append(timed(fetch))
        (work / "down.bin").unlink()
        client.delete_object(Bucket=BUCKET, Key=key)
        one_thread = partial(client.upload_file, str(wheel), BUCKET, key, Config=serial)
        times["boto3-1"].append(timed(one_thread))
        client.delete_object(Bucket=BUCKET, Key=key)
        print(f"  round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)  # fmt: skip
    wheel.unlink()
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}

    def rate(k: str) -> str:
        return f"{best[k]:.2f} s / {med[k]:.2f} s ({size / MiB / best[k]:,.0f} MiB/s)"

    def vs(k: str, base: str) -> str:
        return f"{best[k] / best[base]:.2f}x / {med[k] / med[base]:.2f}x"

    table.add("upload: streaming POST to the registry", rate("registry"),
              f"boto3 upload_file (defaults) {rate('boto3')}", vs("registry", "boto3"))  # fmt: skip
    table.add("upload: the same", rate("registry"),
              f"boto3 upload_file (1 thread, 16 MiB parts) {rate('boto3-1')}",
              vs("registry", "boto3-1"))  # fmt: skip
    table.add(f"download: pip download via the redirect ({where})", rate("pip"),
              f"boto3 download_file {rate('boto3-down')}", vs("pip", "boto3-down"))  # fmt: skip
    table.add("download: pip download via the redirect", rate("pip"),
              f"boto3 download_file, one GET {rate('boto3-get')}", vs("pip", "boto3-get"))  # fmt: skip
    table.add("download: GET following the redirect", rate("get"),
              f"boto3 download_file, one GET {rate('boto3-get')}", vs("get", "boto3-get"))  # fmt: skip


def available_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_rss(table: Table, work: Path, s3: Server, client: Any, size: int) -> None:
    table.section(f"registry peak RSS (master + workers) with a {size / GiB:g} GiB wheel on S3")
    if available_memory() < 6 * size:
        print(f"  skipped: moto needs about {6 * size / GiB:.0f} GiB of free memory for a "
              f"{size / GiB:g} GiB wheel, {available_memory() / GiB:.0f} GiB are free; "
              "give a smaller --rss-size")  # fmt: skip
        table.add("not measured (moto's memory)", "", f"--rss-size {size / GiB:g} GiB")
        return
    (work / "wheels").mkdir(exist_ok=True)
    wheel = big_wheel(work / "wheels", "model-huge", "1.0", size)
    path = f"/packages/{wheel.name}"
    reg = registry_on_s3(s3, BUCKET, "rss", work / "registry.log")
    proxy = registry_on_s3(s3, BUCKET, "rss", work / "registry.log", "--no-s3-redirect")
    try:
        time.sleep(0.5)
        idle, idle_proxy, moto_idle = reg.rss(), proxy.rss(), s3.rss()
        ours: dict[str, tuple[int, float]] = {}

        def upload() -> None:  # sampling moto and the registry at once
            ours["up"] = peak_rss(reg, lambda: upload_once(reg.url, wheel, "raw"))

        moto_peak, _ = peak_rss(s3, upload)
        up, up_s = ours["up"]
        wheel.unlink()
        down, down_s = peak_rss(reg, lambda: get_following(reg.url, path))
        pdown, pdown_s = peak_rss(proxy, lambda: download(proxy.url, path))
    finally:
        reg.stop()
        proxy.stop()
        empty_prefix(client, "rss/")

    def speed(seconds: float) -> str:
        return f"{seconds:.1f} s, {size / MiB / seconds:,.0f} MiB/s"

    table.add(f"upload ({speed(up_s)})", mib(up), f"idle {mib(idle)}", f"+{mib(up - idle)}")
    table.add(f"download via the redirect ({speed(down_s)})", mib(down), f"idle {mib(idle)}",
              f"+{mib(down - idle)}")  # fmt: skip
    table.add(f"download proxied, --no-s3-redirect ({speed(pdown_s)})", mib(pdown),
              f"idle {mib(idle_proxy)}", f"+{mib(pdown - idle_proxy)}")  # fmt: skip
    table.add("moto, the S3 server, during the upload (context)", mib(moto_peak),
              f"idle {mib(moto_idle)}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB x2, 1 GiB for RSS")
    parser.add_argument("--size", type=parse_size, default=None, help="speed wheel (1GiB)")
    parser.add_argument("--rss-size", type=parse_size, default=None, help="RSS wheel (6GiB)")
    parser.add_argument("--repeat", type=int, default=None, help="speed rounds (3; 2 quick)")
    parser.add_argument("--only", default="speed,rss")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temp folder")
    args = parser.parse_args(argv)
    require_s3_serving()
    aws_environment()
    size = args.size or (256 * MiB if args.quick else GiB)
    rss_size = args.rss_size or (GiB if args.quick else 6 * GiB)
    repeat = args.repeat or (2 if args.quick else 3)
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="modelpack-s3-bench-", dir=args.tmp))
    table = Table()
    started = time.perf_counter()
    s3 = moto(work / "moto.log")
    try:
        client = s3_client(s3.url)
        client.create_bucket(Bucket=BUCKET)
        if "speed" in only:
            bench_speed(table, work, s3, client, size, repeat)
        if "rss" in only:
            bench_rss(table, work, s3, client, rss_size)
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"registry on S3 (moto), transfers ({'quick' if args.quick else 'full'}, "
          f"{time.perf_counter() - started:.0f} s)")  # fmt: skip
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
