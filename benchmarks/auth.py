"""What authentication costs per request: bcrypt once, then the verified-credentials cache.

Starts two real registries on one data folder (``modelpack-registry serve``): one open,
one with ``--htpasswd`` (bcrypt at the default cost 12, as ``htpasswd -B`` writes it) and
``--protect-reads``. Then times N requests of ``GET /simple/`` over one
keep-alive connection each: anonymous on the open server, with a user's password and
with an API token on the protected one (the same index page, so the difference is the
authentication). Prints the first authenticated request (which
pays bcrypt) and the p50/p90 of the rest.

Then, on a server whose file is written as ``htpasswd -B`` writes it (bcrypt cost 5),
a wrong password for a known user against any password for an unknown user name (each
request pays a full check: failures are never cached). The two should take the same
time, or the answer time tells which user names exist; the ratio is printed.

    .venv/bin/python benchmarks/auth.py [-n 500]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import requests


@contextlib.contextmanager
def registry(data: Path, *extra: str) -> Iterator[str]:
    """``modelpack-registry serve`` on a free loopback port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "modelpack_registry", "serve", "--data", str(data),
           "--port", str(port), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def timed(session: requests.Session, url: str, n: int) -> tuple[float, list[float]]:
    """(first request, the n after it), in milliseconds."""
    samples = []
    for _ in range(n + 1):
        started = time.perf_counter()
        response = session.get(url, timeout=30)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return samples[0], samples[1:]


def report(label: str, first: float, rest: list[float]) -> None:
    cuts = statistics.quantiles(rest, n=10)
    print(
        f"{label:<34} first {first:8.2f} ms   p50 {statistics.median(rest):6.2f} ms"
        f"   p90 {cuts[8]:6.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="requests per case (500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        htpasswd = root / "htpasswd"
        hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=12)).decode()
        htpasswd.write_text(f"alice:{hashed}\n")
        data = root / "data"
        protected = ["--htpasswd", str(htpasswd), "--protect-reads"]
        with registry(data) as open_url, registry(data, *protected) as url:
            token = subprocess.run(
                [sys.executable, "-m", "modelpack_registry", "tokens", "create",
                 "--model", "model-foo", "--user", "alice", "--data", str(data)],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            with requests.Session() as s:
                report("anonymous (open server)", *timed(s, f"{open_url}/simple/", args.n))
            with requests.Session() as s:
                s.auth = ("alice", "alice-pw")
                report("user+password (bcrypt cost 12)", *timed(s, f"{url}/simple/", args.n))
            with requests.Session() as s:
                s.auth = ("__token__", token)
                report("API token (__token__)", *timed(s, f"{url}/simple/", args.n))
        htpasswd5 = root / "htpasswd-cost5"
        hashed5 = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=5)).decode()
        htpasswd5.write_text(f"alice:{hashed5}\nbob:{hashed5}\n")
        n = max(20, args.n // 5)
        with registry(data, "--htpasswd", str(htpasswd5), "--protect-reads") as url:
            labels = {"alice": "known user, wrong password", "mallory": "unknown user name"}
            samples: dict[str, list[float]] = {user: [] for user in labels}
            sessions = {user: requests.Session() for user in labels}
            for _ in range(n):  # interleaved, so a busy machine shifts both alike
                for user, s in sessions.items():
                    s.auth = (user, "wrong")
                    started = time.perf_counter()
                    s.get(f"{url}/simple/", timeout=30)
                    samples[user].append((time.perf_counter() - started) * 1000)
            medians = {}
            for user, label in labels.items():
                sessions[user].close()
                medians[label] = statistics.median(samples[user])
                print(f"{label + ' (cost 5)':<34} p50 {medians[label]:6.2f} ms over {n}")
            ratio = medians["unknown user name"] / medians["known user, wrong password"]
            print(f"unknown / known: {ratio:.2f}x (the decoy matches the file's cost: ~1x)")
        old = bcrypt.hashpw(b"decoy", bcrypt.gensalt(rounds=12))
        started = time.perf_counter()
        bcrypt.checkpw(b"wrong", old)
        took = (time.perf_counter() - started) * 1000
        print(f"for comparison, the old fixed decoy (one bcrypt check at cost 12): {took:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
