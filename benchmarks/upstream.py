"""Benchmark of ``serve --upstream``, each figure beside a baseline measured in the same run.

Run it from the repository root::

    .venv/bin/python benchmarks/upstream.py             # ~1 min
    .venv/bin/python benchmarks/upstream.py --size 20MiB --requests 100   # quicker

It starts two real servers on free loopback ports: an upstream (``modelpack-registry
serve``) and the registry proxying it (``--upstream``), and places valid wheels in their
data folders (a temp folder, removed afterwards). It prints:

- ``/simple/<project>/`` p50/p99 with 20 concurrent keep-alive clients for a project
  proxied from the upstream and served from the cache (the page is fetched once before
  timing), beside a private project with the same number of files on the same registry.
- A ``--size`` (100 MiB) wheel: its first fetch through the proxy (download from the
  upstream, sha256 check, kept in ``DATA/mirror``, then served) beside the same file
  fetched from the upstream directly; and its second fetch (from the cache) beside a
  private file of the same size. Each first fetch starts with the cached copy deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

PY = sys.executable
MiB = 1 << 20
JSON = "application/vnd.pypi.simple.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wheel(folder: Path, name: str, version: str, payload: int = 0) -> Path:
    """A valid pure-Python wheel with ``payload`` random bytes (stored, not compressed)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"
    wheel_file = "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{dist}/__init__.py", "")
        if payload:
            with zf.open(f"{dist}/weights.bin", "w", force_zip64=True) as f:
                left = payload
                while left:
                    block = os.urandom(min(8 * MiB, left))
                    f.write(block)
                    left -= len(block)
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", wheel_file)
        zf.writestr(f"{info}/RECORD", "")
    return path


@contextlib.contextmanager
def server(data: Path, *args: str) -> Iterator[str]:
    port = free_port()
    log = open(data.parent / f"{data.name}.log", "wb")  # closed below
    proc = subprocess.Popen(
        [PY, "-m", "modelpack_registry", "serve", "--data", str(data), "--port", str(port), *args],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def get(url: str, accept: str | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)
    conn.request("GET", parts.path, headers={"Accept": accept} if accept else {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def download(url: str) -> float:
    """Seconds to GET ``url`` and read the whole body in 1 MiB blocks."""
    parts = urlsplit(url)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)
    conn.request("GET", parts.path)
    resp = conn.getresponse()
    assert resp.status == 200, (url, resp.status, resp.read()[:300])
    while resp.read(MiB):
        pass
    return time.perf_counter() - started


def page_latency(base: str, path: str, clients: int, per_client: int) -> list[float]:
    """Latencies of ``per_client`` GETs by each of ``clients`` keep-alive threads."""
    parts = urlsplit(base)
    times: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        mine = []
        for _ in range(per_client):
            started = time.perf_counter()
            conn.request("GET", path, headers={"Accept": JSON})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            mine.append(time.perf_counter() - started)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(times)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="100MiB", help="size of the big file (100MiB)")
    parser.add_argument("--files", type=int, default=50, help="files per project page (50)")
    parser.add_argument("--requests", type=int, default=250, help="requests per client (250)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each download (3)")
    args = parser.parse_args()
    size = int(args.size.removesuffix("MiB")) * MiB
    root = Path(tempfile.mkdtemp(prefix="modelpack-upstream-bench-"))
    try:
        up_data, data = root / "upstream", root / "registry"
        for folder in (up_data / "packages", data / "packages"):
            folder.mkdir(parents=True)
        for i in range(args.files):
            wheel(up_data / "packages", "pubdep", f"1.{i}")
            wheel(data / "packages", "model-private", f"1.{i}")
        big_public = wheel(up_data / "packages", "bigdep", "1.0", size)
        wheel(data / "packages", "model-big", "1.0", size)
        with server(up_data) as up, server(data, "--upstream", f"{up}/simple/",
                                           "--upstream-ttl", "3600") as reg:  # fmt: skip
            status, body = get(f"{reg}/simple/pubdep/", JSON)  # fetched once, then cached
            assert status == 200, body
            rows: list[tuple[str, str, str]] = []
            pages = {"private page": "/simple/model-private/",
                     "proxied page (cache)": "/simple/pubdep/"}  # fmt: skip
            latencies: dict[str, list[float]] = {label: [] for label in pages}
            for path in pages.values():
                page_latency(reg, path, 4, 20)  # warm-up
            for _ in range(args.runs):  # interleaved, so a busy moment hits both
                for label, path in pages.items():
                    latencies[label] += page_latency(reg, path, 20, args.requests // args.runs)
            for label, lat in latencies.items():
                lat.sort()
                rows.append((f"{label}, {args.files} files, 20 clients",
                             f"p50 {pct(lat, 0.5):.1f} ms", f"p99 {pct(lat, 0.99):.1f} ms"))  # fmt: skip
            _, page = get(f"{reg}/simple/bigdep/", JSON)
            entry = json.loads(page)["files"][0]
            proxied = urljoin(f"{reg}/simple/bigdep/", entry["url"])
            sha = entry["hashes"]["sha256"]
            cached = data / "mirror" / "files" / sha[:2] / sha / big_public.name
            direct, first, second, private = [], [], [], []
            for _ in range(args.runs):
                direct.append(download(f"{up}/packages/{big_public.name}"))
                with contextlib.suppress(FileNotFoundError):
                    cached.unlink()
                first.append(download(proxied))
                second.append(download(proxied))
                private.append(download(f"{reg}/packages/model_big-1.0-py3-none-any.whl"))
            mib = size / MiB

            def speed(times: list[float]) -> str:
                median = statistics.median(times)
                return f"{median * 1000:.0f} ms ({mib / median:.0f} MiB/s)"

            rows += [
                (f"{mib:.0f} MiB, upstream directly (baseline)", speed(direct), ""),
                (f"{mib:.0f} MiB through the proxy, first fetch", speed(first),
                 f"x{statistics.median(first) / statistics.median(direct):.1f} of direct"),
                (f"{mib:.0f} MiB private file (baseline)", speed(private), ""),
                (f"{mib:.0f} MiB through the proxy, from the cache", speed(second),
                 f"x{statistics.median(second) / statistics.median(private):.2f} of private"),
            ]  # fmt: skip
        width = max(len(r[0]) for r in rows)
        print(f"load average {os.getloadavg()[0]:.2f}; median of {args.runs} runs for downloads")
        for name, a, b in rows:
            print(f"{name:<{width}}  {a:<24} {b}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
