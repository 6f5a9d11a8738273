#!/usr/bin/env python3
"""Load and faults: two replicas on one data folder, installs and uploads for a while,
one replica SIGKILLed and restarted in the middle.

    .venv/bin/python benchmarks/load.py [--seconds 120] [--installers 50] [--uploaders 5]

An "install" is what pip does against the index: the project page (PEP 691 JSON), the
PEP 658 metadata file, then the wheel, whose sha256 is checked against the page. Half
the installers use replica A, half replica B; uploaders alternate between the two and,
when B is down, retry the same version on A (a 409 then means B had stored it). At the
end every version that got a 200 must be listed by both replicas, and
``modelpack-registry verify`` must pass. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from registry_support import make_wheel, post_upload

from support import Registry

JSON = "application/vnd.pypi.simple.v1+json"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.failures: list[str] = []
        self.latency: dict[str, list[float]] = {"A": [], "B": []}

    def record(self, replica: str, ok: bool, what: str, seconds: float | None = None) -> None:
        with self.lock:
            (self.ok if ok else self.failed)[replica] += 1
            if not ok and replica != "B-down" and len(self.failures) < 20:
                self.failures.append(f"{replica}: {what}")
            if seconds is not None:
                self.latency[replica].append(seconds)


def installer(url: str, replica: str, projects: list[str], stop: threading.Event, stats: Stats,
              down: threading.Event) -> None:  # fmt: skip
    session = requests.Session()
    i = 0
    while not stop.is_set():
        project = projects[i % len(projects)]
        i += 1
        try:
            t0 = time.perf_counter()
            page = session.get(f"{url}/simple/{project}/", headers={"Accept": JSON}, timeout=30)
            page.raise_for_status()
            elapsed = time.perf_counter() - t0
            f = page.json()["files"][-1]
            file_url = requests.compat.urljoin(page.url, f["url"])
            session.get(file_url + ".metadata", timeout=30).raise_for_status()
            blob = session.get(file_url, timeout=60)
            blob.raise_for_status()
            if hashlib.sha256(blob.content).hexdigest() != f["hashes"]["sha256"]:
                raise ValueError(f"sha256 mismatch for {f['filename']}")
            stats.record(replica, True, "", elapsed)
        except (requests.RequestException, ValueError, KeyError) as exc:
            if replica == "B" and down.is_set():
                stats.record("B-down", False, type(exc).__name__)
                time.sleep(0.2)
            else:
                stats.record(replica, False, f"{project}: {exc}")


def uploader(k: int, urls: dict[str, str], folder: Path, stop: threading.Event, down: threading.Event,
             accepted: list[str], stats: Stats) -> None:  # fmt: skip
    version = 0
    while not stop.is_set():
        version += 1
        wheel = make_wheel(
            folder / f"u{k}", f"upload-model-{k}", f"1.0.{version}", payload=bytes(256 * 1024)
        )
        content = wheel.read_bytes()
        order = ["A", "B"] if version % 2 else ["B", "A"]
        for replica in order:
            if replica == "B" and down.is_set():
                continue
            try:
                resp = post_upload(urls[replica], wheel.name, content)
            except requests.RequestException as exc:
                stats.record(f"upload-{replica}", False, f"{wheel.name}: {type(exc).__name__}")
                continue  # B was killed mid-upload: retry on the other replica
            if resp.status_code in (200, 409):  # 409: the killed replica had stored it
                stats.record(f"upload-{replica}", True, "")
                accepted.append(wheel.name)
                break
            stats.record(f"upload-{replica}", False, f"{wheel.name}: HTTP {resp.status_code}")
        wheel.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--installers", type=int, default=50)
    parser.add_argument("--uploaders", type=int, default=5)
    parser.add_argument("--projects", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="modelpack-load-") as tmp:
        root = Path(tmp)
        data = root / "data"
        a = Registry(data, args=["--threads", "32"], log=root / "a.log", contract=False).start()
        b = Registry(data, args=["--threads", "32"], log=root / "b.log", contract=False).start()
        projects = [f"load-model-{i}" for i in range(args.projects)]
        for name in projects:
            wheel = make_wheel(root / "seed", name, "1.0", payload=bytes(1 << 20))
            post_upload(a.url, wheel.name, wheel.read_bytes()).raise_for_status()
        stop, down = threading.Event(), threading.Event()
        stats = Stats()
        accepted: list[str] = []
        threads = [
            threading.Thread(target=installer, args=(r.url, name, projects, stop, stats, down))
            for i in range(args.installers)
            for r, name in [((a, "A") if i % 2 == 0 else (b, "B"))]
        ]
        threads += [
            threading.Thread(target=uploader, args=(k, {"A": a.url, "B": b.url}, root / "up", stop, down, accepted, stats))
            for k in range(args.uploaders)
        ]  # fmt: skip
        start = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.seconds / 2)
        down.set()
        b.kill()
        killed_at = time.monotonic() - start
        time.sleep(min(10.0, args.seconds / 6))
        b.start()
        down.clear()
        restarted_at = time.monotonic() - start
        time.sleep(max(0.0, args.seconds - (time.monotonic() - start)))
        stop.set()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.monotonic() - start

        time.sleep(1.5)  # replicas see each other's writes within a second
        lost = {}
        for name, reg in (("A", a), ("B", b)):
            listed: set[str] = set()
            for k in range(args.uploaders):
                page = requests.get(
                    f"{reg.url}/simple/upload-model-{k}/", headers={"Accept": JSON}, timeout=30
                )
                if page.status_code == 200:
                    listed |= {f["filename"] for f in page.json()["files"]}
            lost[name] = sorted(set(accepted) - listed)
        a.stop()
        b.stop()
        verify = subprocess.run([sys.executable, "-m", "modelpack_registry", "verify", "--data", str(data)],
                                capture_output=True, text=True)  # fmt: skip
        tmp_left = list((data / "tmp").iterdir()) if (data / "tmp").exists() else []

    lat = stats.latency["A"]
    q = statistics.quantiles(lat, n=100) if len(lat) > 100 else [float("nan")] * 99
    print(f"# load: {args.installers} installers, {args.uploaders} uploaders, {elapsed:.0f} s, "
          f"B killed at {killed_at:.0f} s, restarted at {restarted_at:.0f} s\n")  # fmt: skip
    print("| what | figure |\n|---|---|")
    rows = [
        ("installs OK through A (survivor)", stats.ok["A"]),
        ("failed requests on A (survivor)", stats.failed["A"]),
        ("installs OK through B", stats.ok["B"]),
        ("failed requests on B while up", stats.failed["B"]),
        ("refused requests on B while it was down", stats.failed["B-down"]),
        ("uploads accepted (200, or 409 after B's kill)", len(accepted)),
        ("uploads cut off by the kill (retried on A)", stats.failed["upload-B"]),
        ("failed uploads on A", stats.failed["upload-A"]),
        ("accepted uploads missing from A / B", f"{len(lost['A'])} / {len(lost['B'])}"),
        ("/simple/ p50 / p99 on A under load", f"{q[49] * 1000:.1f} ms / {q[98] * 1000:.1f} ms"),
        ("modelpack-registry verify", "OK" if verify.returncode == 0 else verify.stdout.strip()),
        ("temp files left", len(tmp_left)),
    ]
    for what, figure in rows:
        print(f"| {what} | {figure} |")
    for failure in stats.failures:
        print(f"  failure: {failure}")
    for name, missing in lost.items():
        for filename in missing[:10]:
            print(f"  missing from {name}: {filename}")


if __name__ == "__main__":
    main()
