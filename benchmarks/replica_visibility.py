"""How soon a second replica on one bucket lists a new upload, and what keeping in step costs.

Run it from the repository root::

    .venv/bin/python benchmarks/replica_visibility.py [--uploads 10] [--intervals 0.25,1]

It starts moto's S3 server on a free loopback port, and for each ``--refresh-interval``:
two ``modelpack-registry serve --storage s3://...`` processes (replicas A and B) on one
bucket prefix. Each upload (a small wheel, through A, at a random moment) is followed by
polling B's ``/simple/<project>/`` every 20 ms until it lists the file: the time from
A's ``200`` to B listing it is the replica's lag. B is kept busy all along (another
request every 20 ms: under steady load a replica checks on time; an idle one checks on
its first request, so it lags less). Then, A idle, the ``generation`` GETs the S3
server logged in 10 s, per second, are what one busy process costs (an idle one reads
nothing). The first interval
is the baseline the others are compared with.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from registry_support import make_wheel, post_upload

from support import S3Server, free_port

JSON = "application/vnd.pypi.simple.v1+json"
COST_PER_MILLION_GETS = 0.40  # AWS S3 Standard, us-east-1 (docs/storage.md)
COST_SECONDS = 10.0


def start(
    s3: S3Server, storage: str, interval: float, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPACK_", "AWS_"))}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelpack_registry", "serve", "--port", str(port),
             "--storage", storage, "--s3-endpoint", s3.url, "--refresh-interval", str(interval)],
            env={**env, **s3.env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)
    raise SystemExit(f"replica did not start, see {log}")


def keep_busy(url: str, stop: threading.Event) -> None:
    """A request to ``url`` every 20 ms: a replica under steady load checks on time."""
    while not stop.is_set():
        requests.get(f"{url}/simple/", timeout=10)
        time.sleep(0.02)


def lists(url: str, project: str, filename: str) -> bool:
    answer = requests.get(f"{url}/simple/{project}/", headers={"Accept": JSON}, timeout=10)
    return answer.ok and filename in [f["filename"] for f in answer.json()["files"]]


def one_interval(s3: S3Server, moto_log: Path, work: Path, interval: float,
                 uploads: int) -> tuple[list[float], float]:  # fmt: skip
    """The lags of ``uploads`` uploads, and the ``generation`` GETs per second."""
    bucket = s3.bucket(f"visibility-{str(interval).replace('.', '-')}")
    storage = f"s3://{bucket}/reg"
    procs = [start(s3, storage, interval, work / f"replica-{interval}-{n}.log") for n in (0, 1)]
    (_, a), (_, b) = procs
    lags: list[float] = []
    key = f"GET /{bucket}/reg/generation"
    stop = threading.Event()
    busy = threading.Thread(target=keep_busy, args=(b, stop), daemon=True)
    busy.start()
    try:
        for n in range(uploads):
            project = f"model-seen-{n}"
            wheel = make_wheel(work / f"{interval}-{n}", project, "1.0")
            answer = post_upload(a, wheel.name, wheel.read_bytes())
            assert answer.status_code == 200, answer.text
            done = time.monotonic()
            while not lists(b, project, wheel.name):
                time.sleep(0.02)
            lags.append(time.monotonic() - done)
            time.sleep(random.uniform(0, 2 * interval))  # not in step with the checks
        # the cost: B still busy, A idle
        before = moto_log.read_text(errors="replace").count(key)
        time.sleep(COST_SECONDS)
        gets = moto_log.read_text(errors="replace").count(key) - before
    finally:
        stop.set()
        busy.join()
        for proc, _ in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    return lags, gets / COST_SECONDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--intervals", default="0.25,1", help="comma-separated seconds")
    args = parser.parse_args()
    intervals = [float(x) for x in args.intervals.split(",")]
    with tempfile.TemporaryDirectory(prefix="visibility-") as tmp:
        work = Path(tmp)
        moto_log = work / "moto.log"
        with S3Server(log=moto_log) as s3:
            results = {i: one_interval(s3, moto_log, work, i, args.uploads) for i in intervals}
    base = intervals[0]
    print(
        f"{'interval':>9} {'lag p50':>8} {'lag max':>8} {'GET/s':>6} {'$/month/busy process':>21}"
    )
    for interval, (lags, rate) in results.items():
        monthly = rate * 30 * 86400 / 1e6 * COST_PER_MILLION_GETS
        print(f"{interval:>8.2f}s {statistics.median(lags):>7.2f}s {max(lags):>7.2f}s "
              f"{rate:>6.2f} {monthly:>20.2f}$")  # fmt: skip
    lag0 = statistics.median(results[base][0])
    for interval, (lags, rate) in results.items():
        if interval != base:
            print(f"{interval} s vs {base} s: lag p50 x{statistics.median(lags) / lag0:.1f}, "
                  f"GETs x{rate / results[base][1]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
