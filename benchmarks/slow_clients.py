#!/usr/bin/env python3
"""Slow and hostile clients: ``/health`` and a ``/simple/`` page, quiet and under attack.

    .venv/bin/python benchmarks/slow_clients.py [--idle 1000] [--trickle 16] [--probes 300]
                                                 [--seconds 30] [--settle 3] [--nginx on|off]
                                                 [-- SERVE-ARGS...]

One registry (``modelpack-registry serve`` with its defaults plus SERVE-ARGS) holds one
small model. Two rounds of probes, in the same run:

1. **quiet**: ``--probes`` requests to ``/health`` and as many to
   ``/simple/model-foo/``, one after another, each on a new connection, spread over
   ``--seconds``;
2. **hostile**: the same probes while ``--idle`` connections each hold half a request
   line (``GET /simple/ HT``, then nothing) and ``--trickle`` uploads send their
   headers, the first form fields and then one byte a second. A connection the server
   closes is opened again at once, as an attacker would, so the load stays the same
   throughout (make ``--seconds`` longer than the server's ``--header-timeout`` to
   include that churn). The probes start ``--settle`` seconds after the load is in place.

With ``--nginx on`` (or ``off``) every request goes through an nginx (it must be on
PATH) in front of the registry, with ``proxy_request_buffering`` on (or off), as a
buffering proxy in the deployment would be; this is how the proxy option of issue 13
was measured.

Prints p50, p99 and max per path and round; a probe that gets no answer within 5 s
counts as a failure (a round stops after 5). Targets (issue 13: p99 under 100 ms with
1,000 idle connections and 16 trickling uploads) are reported, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from registry_support import MULTIPART_TYPE, make_wheel, multipart_head, post_upload

from support import Registry, free_port

PATHS = ("/health", "/simple/model-foo/")
PROBE_TIMEOUT = 5.0
MAX_FAILURES = 5
HALF_LINE = b"GET /simple/ HT"


class Hostile:
    """Idle half-request-line connections and trickling uploads, reopened when closed."""

    def __init__(self, host: str, port: int, idle: int, trickle: int) -> None:
        self.host, self.port = host, port
        self.idle: list[socket.socket | None] = [None] * idle
        self.trickle: list[socket.socket | None] = [None] * trickle
        self.reopened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, upload: bool) -> socket.socket | None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=5)
            if upload:
                head = multipart_head("model_bar-1.0-py3-none-any.whl")
                sock.sendall(
                    f"POST / HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {MULTIPART_TYPE}\r\n"
                    f"Content-Length: {len(head) + 10_000_000}\r\n\r\n".encode()
                    + head
                )
            else:
                sock.sendall(HALF_LINE)
            sock.setblocking(False)
            return sock
        except OSError:
            return None

    @staticmethod
    def _closed(sock: socket.socket) -> bool:
        try:
            sock.recv(4096)  # an answer (a 408) or the end: the server gave up on it
        except BlockingIOError:
            return False
        except OSError:
            pass
        return True

    def _tend(self, conns: list[socket.socket | None], upload: bool) -> None:
        for i, sock in enumerate(conns):
            if sock is not None and not self._closed(sock):
                if upload:
                    try:
                        sock.send(b"x")
                        continue
                    except OSError:
                        pass
                else:
                    continue
            if sock is not None:
                sock.close()
                self.reopened += 1
            conns[i] = self._open(upload)

    def start(self) -> None:
        self._tend(self.idle, upload=False)
        self._tend(self.trickle, upload=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            self._tend(self.trickle, upload=True)
            self._tend(self.idle, upload=False)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.idle + self.trickle:
            if sock is not None:
                sock.close()

    def held(self) -> int:
        return sum(s is not None for s in self.idle + self.trickle)


def server_memory(pid: int) -> tuple[float, int]:
    """(MiB resident, threads) of the gunicorn master ``pid`` and its workers, from /proc."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().split()[3]) == pid:
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    rss, threads = 0, 0
    for p in pids:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines()
        )
        rss += int(status["VmRSS"].split()[0])
        threads += int(status["Threads"])
    return rss / 1024, threads


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 16384;
user root root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_max_body_size 0;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_request_buffering {buffering};
        }}
    }}
}}
"""


def start_nginx(root: Path, upstream: int, buffering: str) -> tuple[subprocess.Popen[bytes], int]:
    """nginx in front of the registry on a free port (its defaults otherwise)."""
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=root, port=port, upstream=upstream, buffering=buffering))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root), "-g", "daemon off;"])
    for _ in range(100):
        if probe("127.0.0.1", port, "/health") is not None:
            return proc, port
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"nginx did not start: {(root / 'nginx-error.log').read_text()}")


def probe(host: str, port: int, path: str) -> float | None:
    """Seconds for one GET on a new connection, or None if it failed or timed out."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            return None
    except OSError:
        return None
    finally:
        conn.close()
    return time.perf_counter() - start


def run_round(
    host: str, port: int, probes: int, seconds: float
) -> dict[str, tuple[list[float], int]]:
    results: dict[str, tuple[list[float], int]] = {p: ([], 0) for p in PATHS}
    start = time.monotonic()
    for i in range(probes * len(PATHS)):
        pause = start + seconds * i / (probes * len(PATHS)) - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        path = PATHS[i % len(PATHS)]
        times, failed = results[path]
        if failed >= MAX_FAILURES:
            continue
        took = probe(host, port, path)
        if took is None:
            results[path] = (times, failed + 1)
        else:
            times.append(took)
    return results


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, results: dict[str, tuple[list[float], int]]) -> None:
    for path, (times, failed) in results.items():
        if times:
            figures = (f"p50 {statistics.median(times) * 1000:7.1f} ms  "
                       f"p99 {quantile(times, 0.99) * 1000:7.1f} ms  "
                       f"max {max(times) * 1000:7.1f} ms")  # fmt: skip
        else:
            figures = "no answer"
        fails = f"  {failed} failed (no answer within {PROBE_TIMEOUT:.0f} s)" if failed else ""
        print(f"{label:<8} {path:<20} {len(times):>4} answered  {figures}{fails}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=1000, help="half-request-line connections")
    parser.add_argument("--trickle", type=int, default=16, help="trickling uploads")
    parser.add_argument("--probes", type=int, default=300, help="requests per path and round")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each round")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before probing")
    parser.add_argument("--nginx", choices=("on", "off"), help="through nginx, this buffering")
    parser.add_argument("serve_args", nargs="*", help="extra `serve` arguments (after --)")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + args.trickle + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    print(f"open-file limit of this process: {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
          f" (the registry it starts inherits it)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="modelpack-slow-") as tmp:
        root = Path(tmp)
        with Registry(root / "data", args=args.serve_args, log=root / "registry.log") as reg:
            wheel = make_wheel(root / "dist", "model-foo", "1.0")
            post_upload(reg.url, wheel.name, wheel.read_bytes()).raise_for_status()
            host, port, nginx = reg.host, reg.port, None
            if args.nginx:
                nginx, port = start_nginx(root, reg.port, args.nginx)
            print(f"registry: serve {' '.join(args.serve_args) or '(defaults)'}"
                  + (f", behind nginx with proxy_request_buffering {args.nginx}" if nginx else "")
                  + f"; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
            report("quiet", run_round(host, port, args.probes, args.seconds))
            assert reg.proc is not None
            quiet_mem = server_memory(reg.proc.pid)
            hostile = Hostile(host, port, args.idle, args.trickle)
            hostile.start()
            time.sleep(args.settle)
            held = hostile.held()
            results = run_round(host, port, args.probes, args.seconds)
            hostile_mem = server_memory(reg.proc.pid)
            reopened = hostile.reopened
            hostile.close()
            if nginx is not None:
                nginx.terminate()
                nginx.wait(timeout=10)
            print(f"hostile: {args.idle} half-request-line connections and {args.trickle} "
                  f"trickling uploads ({held} open when probing began; {reopened} reopened "
                  "after the server closed them)")  # fmt: skip
            report("hostile", results)
            for label, (mib, threads) in (("quiet", quiet_mem), ("hostile", hostile_mem)):
                print(f"server after the {label} round: {mib:.0f} MiB resident, {threads} threads")
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
            print("target (issue 13): p99 under 100 ms for both paths under the hostile load")


if __name__ == "__main__":
    main()
