"""Benchmark of modelpack-registry, each figure beside a baseline measured in the same run.

Run it from the repository root::

    .venv/bin/python benchmarks/registry.py            # full run (~10-15 min, 6 GiB files)
    .venv/bin/python benchmarks/registry.py --quick    # ~3 min, 1 GiB files, fewer requests

It starts real servers on free loopback ports (``modelpack-registry serve``, stock
``pypi-server run`` and a trivial streaming PUT server), generates valid wheels in a temp
folder (removed afterwards, unless ``--keep``) and prints one table:

- ``/simple/<project>/`` latency, p50/p99, with 1 and 20 concurrent clients, at 1,000 and
  10,000 files; baseline: stock pypiserver 2.4.2 at 1,000 files.
- A 1 GiB wheel uploaded with twine, with ``modelpack publish`` (twine as modelpack tunes
  it, plus its checks) and with a raw streaming multipart POST; baseline: a plain HTTP PUT
  of the same bytes to a trivial server that writes them to disk (with and without fsync,
  as the registry fsyncs before it publishes), and stock twine for ``publish``.
- Server peak RSS (gunicorn master + workers, from /proc) during a ``--big-size`` upload and
  download; baseline: the same server idle.
- Bytes served to pip to resolve a 1 GiB model: ``pip install --dry-run --report`` (which
  reads the PEP 658 ``.metadata`` file) against ``pip download``; baseline: the same resolve
  against stock pypiserver (no PEP 658), counted by a byte-counting TCP proxy.

``--only simple,upload,rss,pep658`` runs a subset.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
try:  # the installed (or PYTHONPATH) registry, the one the servers below run
    from modelpack_registry.storage import Record
except ImportError:
    sys.path.insert(0, str(ROOT / "registry-server" / "src"))
    from modelpack_registry.storage import Record

PY = sys.executable
MiB = 1 << 20
GiB = 1 << 30
CHUNK = 1 << 20
BOUNDARY = "modelpackBenchBoundary3f9a1c0e7d2b"
ENV_DROP = ("TWINE_USERNAME", "TWINE_PASSWORD", "TWINE_REPOSITORY_URL", "PIP_INDEX_URL",
            "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL")  # fmt: skip


# -- table ------------------------------------------------------------------------------
@dataclass
class Table:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, what: str, value: str, baseline: str, ratio: str = "") -> None:
        self.rows.append((what, value, baseline, ratio))
        print(f"  {what}: {value}  |  baseline {baseline}  {ratio}", flush=True)

    def section(self, title: str) -> None:
        self.rows.append((f"**{title}**", "", "", ""))

    def render(self) -> str:
        head = ("measurement", "modelpack-registry", "baseline (same run)", "ratio")
        rows = [head, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]

        def line(r: tuple[str, ...]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

        out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(r) for r in self.rows]
        return "\n".join(out)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else ""


# -- processes ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


class Server:
    """A server subprocess on a free loopback port, stopped by its own pid."""

    def __init__(self, cmd: list[str], port: int, log: Path, ready_path: str = "/") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        logf = log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=clean_env())  # fmt: skip
        logf.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", ready_path)
                conn.getresponse().read()
                conn.close()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{cmd[:4]} did not start:\n{log.read_text()[-3000:]}")

    def pids(self) -> list[int]:
        """The server process and all its descendants (gunicorn master + workers)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo += [int(c) for c in f.read().split()]
        return found

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def registry(data: Path, log: Path, *extra: str) -> Server:
    port = free_port()
    cmd = [PY, "-m", "modelpack_registry", "serve", "--data", str(data), "--port", str(port),
           *extra]  # fmt: skip
    return Server(cmd, port, log, "/health")


def pypiserver(root: Path, log: Path) -> Server:
    port = free_port()
    cmd = [str(Path(PY).parent / "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(port),
           "--disable-fallback", "-a", ".", "-P", ".", str(root)]  # fmt: skip
    return Server(cmd, port, log, "/health")


PUT_SERVER = r"""
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
FSYNC = sys.argv[3] == "1"
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_PUT(self):
        left = int(self.headers["Content-Length"])
        path = os.path.join(sys.argv[2], "upload.bin")
        buf = bytearray(1 << 20); view = memoryview(buf)
        with open(path, "wb", buffering=0) as f:
            while left:
                n = self.rfile.readinto(view[: min(left, len(buf))])
                if not n: break
                f.write(view[:n]); left -= n
            if FSYNC: os.fsync(f.fileno())
        os.unlink(path)
        self.send_response(201); self.send_header("Content-Length", "0"); self.end_headers()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def put_server(folder: Path, log: Path, fsync: bool) -> Server:
    port = free_port()
    script = folder / "put_server.py"
    script.write_text(PUT_SERVER)
    return Server([PY, str(script), str(port), str(folder), "1" if fsync else "0"], port, log)


# -- wheels ----------------------------------------------------------------------------
def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def small_wheel(name: str, version: str) -> tuple[str, bytes, bytes]:
    """(filename, wheel bytes, METADATA bytes) of a tiny valid pure-Python wheel."""
    dist = name.replace("-", "_")
    distinfo = f"{dist}-{version}.dist-info"
    metadata = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                f"Summary: benchmark model\nRequires-Python: >=3.9\n\n").encode()  # fmt: skip
    files = {
        f"{dist}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{distinfo}/METADATA": metadata,
        f"{distinfo}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "\n".join(_record_line(k, v) for k, v in files.items())
    record += f"\n{distinfo}/RECORD,,\n"
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{distinfo}/RECORD", record)
    return f"{dist}-{version}-py3-none-any.whl", buf.getvalue(), metadata


def populate(data: Path, files: int, per_project: int = 10,
             plain_copy: Path | None = None) -> str:  # fmt: skip
    """Fill a registry data folder with ``files`` wheels and their records; return a project.

    Records are the registry's own :class:`Record` (the same JSON an upload writes), so the
    server starts without deriving anything. ``plain_copy`` also gets the wheels alone
    (a stock pypiserver root).
    """
    for sub in ("packages", "meta", "tmp"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    (data / "generation").write_text("1\n")
    if plain_copy:
        plain_copy.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        name, version = f"model-{i // per_project:05d}", f"1.{i % per_project}"
        filename, raw, metadata = small_wheel(name, version)
        (data / "packages" / filename).write_bytes(raw)
        record = Record(filename=filename, name=name, version=version,
                        sha256=hashlib.sha256(raw).hexdigest(), size=len(raw),
                        upload_time="2025-01-01T00:00:00Z", requires_python=">=3.9",
                        summary="benchmark model",
                        core_metadata_sha256=hashlib.sha256(metadata).hexdigest())  # fmt: skip
        (data / "meta" / f"{filename}.json").write_bytes(record.to_json())
        (data / "meta" / f"{filename}.metadata").write_bytes(metadata)
        if plain_copy:
            os.link(data / "packages" / filename, plain_copy / filename)
    return "model-00000"


def big_wheel(folder: Path, name: str, version: str, size: int) -> Path:
    """A valid model wheel (``modelpack publish`` takes it) carrying ``size`` bytes of
    (incompressible) weights, stored."""
    dist = name.replace("-", "_")
    distinfo = f"{dist}-{version}.dist-info"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode()
    block = os.urandom(16 * MiB)
    weights_hash = hashlib.sha256()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        small = {f"{dist}/__init__.py": b"def load():\n    return None\n",
                 f"{distinfo}/METADATA": metadata,
                 f"{distinfo}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\n"
                 b"Root-Is-Purelib: true\nTag: py3-none-any\n",
                 f"{distinfo}/entry_points.txt":
                 f"[modelpack.models]\n{name} = {dist}:load\n".encode()}  # fmt: skip
        for member, data in small.items():
            zf.writestr(member, data)
        info = zipfile.ZipInfo(f"{dist}/weights/weights.bin", date_time=(2025, 1, 1, 0, 0, 0))
        with zf.open(info, "w", force_zip64=True) as out:
            left = size
            while left:
                piece = block[: min(left, len(block))]
                out.write(piece)
                weights_hash.update(piece)
                left -= len(piece)
        digest = base64.urlsafe_b64encode(weights_hash.digest()).rstrip(b"=").decode()
        lines = [_record_line(k, v) for k, v in small.items()]
        lines.append(f"{dist}/weights/weights.bin,sha256={digest},{size}")
        zf.writestr(f"{distinfo}/RECORD", "\n".join(lines) + f"\n{distinfo}/RECORD,,\n")
    return path


# -- HTTP clients ----------------------------------------------------------------------
def _file_chunks(path: Path) -> Iterator[memoryview]:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            yield view[:n]


def stream_request(url: str, method: str, path: str, headers: dict[str, str],
                   parts: list[bytes | Path]) -> tuple[int, bytes]:  # fmt: skip
    """Send ``parts`` (bytes, or files streamed in 1 MiB blocks) as one body."""
    host, port = url.removeprefix("http://").split(":")
    length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in parts)
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.putrequest(method, path)
    for key, value in {**headers, "Content-Length": str(length)}.items():
        conn.putheader(key, value)
    conn.endheaders()
    for part in parts:
        if isinstance(part, Path):
            for chunk in _file_chunks(part):
                conn.sock.sendall(chunk)
        else:
            conn.sock.sendall(part)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def raw_upload(url: str, wheel: Path, name: str, version: str) -> tuple[int, bytes]:
    """A twine-shaped multipart POST, the file streamed from disk (no client hashing)."""
    fields = {":action": "file_upload", "protocol_version": "1", "metadata_version": "2.1",
              "name": name, "version": version, "filetype": "bdist_wheel"}  # fmt: skip
    head = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    head += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '
             f'filename="{wheel.name}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()  # fmt: skip
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    return stream_request(url, "POST", "/", {"Content-Type": ctype}, [head, wheel, tail])


def upload_once(url: str, wheel: Path, kind: str) -> None:
    if kind == "twine":
        twine_upload(url, wheel)
        return
    if kind == "publish":
        modelpack_publish(url, wheel)
        return
    name, version = wheel.name.split("-")[:2]
    status, body = raw_upload(url, wheel, name.replace("_", "-"), version)
    if status != 200:
        raise RuntimeError(f"upload answered {status}: {body!r}")


def twine_upload(url: str, wheel: Path) -> None:
    env = clean_env()
    env.update(TWINE_USERNAME="bench", TWINE_PASSWORD="bench")
    cmd = [PY, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
           "--repository-url", f"{url}/", str(wheel)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode:
        raise RuntimeError(f"twine failed:\n{done.stdout}\n{done.stderr}")


def modelpack_publish(url: str, wheel: Path) -> None:
    """The user's path: existence check, twine as modelpack tunes it, listing check."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("MODELPACK_")}
    cmd = [PY, "-m", "modelpack", "publish", str(wheel), "--registry", url]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode:
        raise RuntimeError(f"modelpack publish failed:\n{done.stdout}\n{done.stderr}")


def download(url: str, path: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.request("GET", path)
    resp = conn.getresponse()
    buf = bytearray(CHUNK)
    total = 0
    while n := resp.readinto(buf):
        total += n
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status}")
    return total


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # no dirty pages of an earlier step are written back during this one
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- /simple/ latency ------------------------------------------------------------------
def latencies(url: str, path: str, clients: int, requests_total: int,
              time_limit: float) -> list[float]:  # fmt: skip
    """Per-request latencies; each client thread keeps its own connection when allowed."""
    host, port = url.removeprefix("http://").split(":")
    per_client = max(1, requests_total // clients)
    results: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit
    start_gate = threading.Barrier(clients)
    errors: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        mine = []
        start_gate.wait()
        for _ in range(per_client):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers={"Accept": "text/html"})
                resp = conn.getresponse()
                resp.read()
            except OSError:  # a timeout (60 s) counts as a sample of at least that long
                mine.append(time.perf_counter() - t0)
                conn.close()
                continue
            mine.append(time.perf_counter() - t0)
            if resp.status != 200:
                errors.append(f"{resp.status}")
                break
            if resp.getheader("Connection", "").lower() == "close" or resp.will_close:
                conn.close()
        conn.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"GET {path} answered {errors[0]}")
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_simple(table: Table, work: Path, quick: bool) -> None:
    table.section("/simple/<project>/ latency (10 files per project), p50 / p99")
    counts = (1000, 10000)
    n1, n20, limit = (200, 600, 10.0) if quick else (1000, 4000, 30.0)
    figures: dict[tuple[str, int, int], tuple[float, float, int]] = {}
    for files in counts:
        data = work / f"simple-{files}"
        plain = work / f"plain-{files}" if files == 1000 else None
        t0 = time.perf_counter()
        project = populate(data, files, plain_copy=plain)
        print(
            f"  generated {files} wheels + records in {time.perf_counter() - t0:.1f} s", flush=True
        )
        servers = [("registry", registry(data, work / "registry.log"))]
        if plain is not None:
            servers.append(("pypiserver", pypiserver(plain, work / "pypiserver.log")))
        try:
            for label, server in servers:
                path = f"/simple/{project}/"
                latencies(server.url, path, 1, 20, 10)  # warm-up
                for clients, total in ((1, n1), (20, n20)):
                    got = latencies(server.url, path, clients, total, limit)
                    figures[(label, files, clients)] = (pct(got, 0.5), pct(got, 0.99), len(got))
        finally:
            for _, server in servers:
                server.stop()
        shutil.rmtree(data, ignore_errors=True)
        if plain is not None:
            shutil.rmtree(plain, ignore_errors=True)
    for files in counts:
        for clients in (1, 20):
            p50, p99, n = figures[("registry", files, clients)]
            b50, b99, bn = figures[("pypiserver", 1000, clients)]
            table.add(
                f"{files:,} files, {clients} client(s)",
                f"{ms(p50)} / {ms(p99)} (n={n})",
                f"pypiserver, 1,000 files: {ms(b50)} / {ms(b99)} (n={bn})",
                f"p50 {b50 / p50:,.0f}x faster",
            )


# -- uploads ---------------------------------------------------------------------------
def bench_upload(table: Table, work: Path, size: int, repeat: int) -> Path:
    """Returns the data folder of a registry holding the ``size`` model (for pep658)."""
    table.section(f"upload of a {size / GiB:g} GiB wheel, wall clock: best / median of {repeat}")
    wheels = work / "wheels"
    wheels.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    wheel = big_wheel(wheels, "model-big", "1.0", size)
    print(f"  generated {wheel.name} ({wheel.stat().st_size / GiB:.2f} GiB) "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    times: dict[str, list[float]] = {
        "put": [], "put-fsync": [], "raw": [], "twine": [], "publish": []
    }  # fmt: skip
    kept = work / "upload-kept"
    # untimed warm-up: the first large write after a quiet spell pays for fresh pages
    srv = put_server(work, work / "put.log", False)
    stream_request(srv.url, "PUT", "/x", {}, [wheel])
    srv.stop()
    for i in range(repeat):
        for fsync in (False, True):
            folder = work / "put"
            folder.mkdir(exist_ok=True)
            srv = put_server(folder, work / "put.log", fsync)
            try:
                key = "put-fsync" if fsync else "put"
                headers = {"Content-Type": "application/octet-stream"}
                times[key].append(
                    timed(partial(stream_request, srv.url, "PUT", "/x", headers, [wheel]))
                )
            finally:
                srv.stop()
        for kind in ("raw", "twine", "publish"):
            data = work / f"upload-{kind}-{i}"
            srv = registry(data, work / "registry.log")
            try:
                times[kind].append(timed(partial(upload_once, srv.url, wheel, kind)))
            finally:
                srv.stop()
            if kind == "raw" and not kept.exists():
                data.rename(kept)
            else:
                shutil.rmtree(data, ignore_errors=True)
        print(
            f"  round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
            flush=True,
        )
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}

    def rate(k: str) -> str:
        return f"{best[k]:.2f} s / {med[k]:.2f} s ({size / MiB / best[k]:,.0f} MiB/s best)"

    def vs(k: str, base: str) -> str:
        return f"{best[k] / best[base]:.2f}x / {med[k] / med[base]:.2f}x"

    table.add(
        "twine upload", rate("twine"), f"PUT+fsync {rate('put-fsync')}", vs("twine", "put-fsync")
    )
    table.add(
        "raw streaming POST", rate("raw"), f"PUT+fsync {rate('put-fsync')}", vs("raw", "put-fsync")
    )
    table.add(
        "raw streaming POST (vs no fsync)",
        rate("raw"),
        f"PUT, no fsync {rate('put')}",
        vs("raw", "put"),
    )
    table.add(
        "twine upload (vs raw POST: client cost)",
        rate("twine"),
        f"raw POST {rate('raw')}",
        vs("twine", "raw"),
    )
    table.add(
        "modelpack publish (vs stock twine)",
        rate("publish"),
        f"twine upload {rate('twine')}",
        vs("publish", "twine"),
    )
    wheel.unlink()
    return kept


# -- memory ----------------------------------------------------------------------------
def peak_rss(server: Server, fn: Callable[[], object]) -> tuple[int, float]:
    peak, stop = [server.rss()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server.rss())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        seconds = timed(fn)
    finally:
        stop.set()
        sampler.join()
    return max(peak[0], server.rss()), seconds


def bench_rss(table: Table, work: Path, size: int) -> None:
    table.section(f"server peak RSS (master + workers) with a {size / GiB:g} GiB wheel")
    wheels = work / "wheels"
    wheels.mkdir(exist_ok=True)
    wheel = big_wheel(wheels, "model-huge", "1.0", size)
    data = work / "rss"
    srv = registry(data, work / "registry.log")
    try:
        time.sleep(0.5)
        idle = srv.rss()
        up, up_s = peak_rss(srv, lambda: upload_once(srv.url, wheel, "raw"))
        wheel.unlink()
        down, down_s = peak_rss(srv, lambda: download(srv.url, f"/packages/{wheel.name}"))
    finally:
        srv.stop()
    shutil.rmtree(data, ignore_errors=True)

    def mb(n: int) -> str:
        return f"{n / MiB:.0f} MiB"

    table.add(f"upload ({up_s:.1f} s, {size / MiB / up_s:,.0f} MiB/s)", mb(up),
              f"idle {mb(idle)}", f"+{mb(up - idle)}")  # fmt: skip
    table.add(f"download ({down_s:.1f} s, {size / MiB / down_s:,.0f} MiB/s)", mb(down),
              f"idle {mb(idle)}", f"+{mb(down - idle)}")  # fmt: skip


# -- PEP 658 ---------------------------------------------------------------------------
class CountingProxy:
    """A TCP relay on a free port that counts the bytes the server sends back."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sent = 0
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(CHUNK):
                dst.sendall(data)
                if count:
                    with self._lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def take(self) -> int:
        time.sleep(0.2)
        with self._lock:
            sent, self.sent = self.sent, 0
        return sent

    def close(self) -> None:
        self.sock.close()


def pip_bytes(proxy: CountingProxy, work: Path, args: list[str]) -> tuple[int, float]:
    cmd = [PY, "-m", "pip", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
           *args, "--index-url", f"{proxy.url}/simple/"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=work,
                          timeout=900)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return proxy.take(), seconds


def bench_pep658(table: Table, work: Path, data: Path, size: int) -> None:
    table.section(f"bytes served to pip for a {size / GiB:g} GiB model (PEP 658)")
    plain = work / "pep658-plain"
    plain.mkdir()
    for wheel in (data / "packages").iterdir():
        os.link(wheel, plain / wheel.name)
    dl = work / "pep658-dl"
    resolve = ["install", "--dry-run", "--no-deps", "--ignore-installed", "--report",
               str(work / "report.json"), "model-big==1.0"]  # fmt: skip
    fetch = ["download", "--no-deps", "-d", str(dl), "model-big==1.0"]
    figures: dict[tuple[str, str], tuple[int, float]] = {}
    for label, server in (("registry", registry(data, work / "registry.log")),
                          ("pypiserver", pypiserver(plain, work / "pypiserver.log"))):  # fmt: skip
        proxy = CountingProxy(server.port)
        try:
            figures[(label, "resolve")] = pip_bytes(proxy, work, resolve)
            figures[(label, "download")] = pip_bytes(proxy, work, fetch)
            shutil.rmtree(dl, ignore_errors=True)
        finally:
            proxy.close()
            server.stop()
    report = json.loads((work / "report.json").read_text())
    assert report["install"][0]["metadata"]["name"] == "model-big"
    shutil.rmtree(plain, ignore_errors=True)

    def fmt(f: tuple[int, float]) -> str:
        return f"{f[0]:,} B in {f[1]:.1f} s"

    r, d = figures[("registry", "resolve")], figures[("registry", "download")]
    pr, pd = figures[("pypiserver", "resolve")], figures[("pypiserver", "download")]
    table.add("pip install --dry-run --report", fmt(r), f"pip download {fmt(d)}",
              f"{d[0] / r[0]:,.0f}x fewer")  # fmt: skip
    table.add("pip install --dry-run (registry vs stock)", fmt(r),
              f"pypiserver {fmt(pr)}", f"{pr[0] / r[0]:,.0f}x fewer")  # fmt: skip
    table.add("pip download (registry vs stock)", fmt(d), f"pypiserver {fmt(pd)}",
              ratio(d[0], pd[0]))  # fmt: skip


# -- main ------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    from modelpack_registry.web.upload import parse_size as parse

    return parse(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 GiB big files, fewer requests")
    parser.add_argument("--big-size", type=parse_size, default=None,
                        help="size of the RSS upload/download (default 6GiB; 1GiB with --quick)")  # fmt: skip
    parser.add_argument("--upload-size", type=parse_size, default=GiB, help="default 1GiB")
    parser.add_argument("--repeat", type=int, default=None, help="upload rounds (5; 2 quick)")
    parser.add_argument("--only", default="simple,upload,rss,pep658")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temp folder")
    args = parser.parse_args(argv)
    big = args.big_size or (GiB if args.quick else 6 * GiB)
    repeat = args.repeat or (2 if args.quick else 5)
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="modelpack-bench-", dir=args.tmp))
    free = shutil.disk_usage(work).free
    if free < 2 * big + 3 * args.upload_size + GiB:
        print(f"not enough free disk in {work}: {free / GiB:.0f} GiB", file=sys.stderr)
        return 1
    table = Table()
    started = time.perf_counter()
    try:
        if "simple" in only:
            bench_simple(table, work, args.quick)
        kept = None
        if "upload" in only or "pep658" in only:
            kept = bench_upload(table, work, args.upload_size,
                                repeat if "upload" in only else 1)  # fmt: skip
        if "rss" in only:
            bench_rss(table, work, big)
        if "pep658" in only and kept is not None:
            bench_pep658(table, work, kept, args.upload_size)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"modelpack-registry benchmark ({'quick' if args.quick else 'full'}, "
          f"{time.perf_counter() - started:.0f} s, nproc {os.cpu_count()})")  # fmt: skip
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
