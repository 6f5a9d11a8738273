#!/usr/bin/env python3
"""What a hostile model card costs: ``"![" * 250_000`` (0.5 MB), against an ordinary one.

    .venv/bin/python benchmarks/render.py [--seconds 5] [--views 16]

1. Baseline, in this process: the CPU markdown-it-py spends on the hostile README and
   on 300 KB of ordinary Markdown (the registry used to spend the first on every first
   view of the page, in the request thread).
2. A real registry (``modelpack-registry serve``, 1 worker, 16 threads): the time to
   upload a wheel with each README (the upload renders the card once, in a child
   process with a 1 s CPU budget), and a 2 MB README (refused: the cap is 1 MiB).
3. ``GET /health`` p50/p99 on the idle server, then while ``--views`` clients request
   a model page in a loop for ``--seconds``, and the p50/p99 of those views: the page
   of a short README (the baseline), of the ordinary 300 KB one and of the hostile one
   (both about 0.5 MB of HTML, so they cost the same to send).

Prints figures; asserts nothing. The target: no request (a view, ``/health``) pays
more than 100 ms because of a hostile README.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from markdown_it import MarkdownIt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from registry_support import post_upload
from test_registry_catalog import model_wheel

from support import Registry

HOSTILE = "![" * 250_000
ORDINARY = (
    "## Section\n\nSome *emphasis*, a [link](https://example.org) and `code`.\n\n"
    "| metric | value |\n| --- | --- |\n| auc | 0.91 |\n\n- a list item\n- another one\n\n"
)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def quantiles(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100) if len(samples) > 1 else samples * 99
    return f"p50 {ms(statistics.median(samples))}  p99 {ms(cuts[98])}  (n={len(samples)})"


def cpu_render(text: str) -> float:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    started = time.process_time()
    md.render(text)
    return time.process_time() - started


def timed_upload(reg: Registry, wheel: Path) -> tuple[float, int]:
    started = time.perf_counter()
    response = post_upload(reg.url, wheel.name, wheel.read_bytes())
    return time.perf_counter() - started, response.status_code


def health_samples(url: str, stop: threading.Event, out: list[float]) -> None:
    with requests.Session() as s:
        while not stop.is_set():
            started = time.perf_counter()
            s.get(f"{url}/health", timeout=120).raise_for_status()
            out.append(time.perf_counter() - started)
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--views", type=int, default=16)
    args = parser.parse_args()
    ordinary = "# Model card\n\n" + ORDINARY * (300_000 // len(ORDINARY))
    print("markdown-it-py in this process (what a first view used to cost, in its thread):")
    print(f"  hostile 0.5 MB  {ms(cpu_render(HOSTILE))} CPU")
    print(f"  ordinary 300 KB {ms(cpu_render(ordinary))} CPU")
    with tempfile.TemporaryDirectory(prefix="modelpack-render-") as tmp:
        dist = Path(tmp) / "dist"
        with Registry(Path(tmp) / "data") as reg:
            print("upload (renders the card once, in a child process):")
            for name, readme in (("model-plain", "# Card\n\nShort.\n"),
                                 ("model-ordinary", ordinary), ("model-evil", HOSTILE),
                                 ("model-huge", "x" * 2_000_000)):  # fmt: skip
                took, status = timed_upload(reg, model_wheel(dist, name, "1.0", readme=readme))
                print(f"  {name:<15} {len(readme):>9} bytes  {ms(took)}  HTTP {status}")

            idle: list[float] = []
            stop = threading.Event()
            probe = threading.Thread(target=health_samples, args=(reg.url, stop, idle))
            probe.start()
            time.sleep(min(args.seconds, 2.0))
            stop.set()
            probe.join()

            def under_load(page: str) -> tuple[list[float], list[float]]:
                """/health samples and page views while ``--views`` clients load ``page``."""
                loaded: list[float] = []
                views: list[float] = []
                lock = threading.Lock()
                stop = threading.Event()

                def viewer() -> None:
                    with requests.Session() as s:
                        while not stop.is_set():
                            started = time.perf_counter()
                            s.get(f"{reg.url}/models/{page}/", timeout=120).raise_for_status()
                            with lock:
                                views.append(time.perf_counter() - started)

                threads = [threading.Thread(target=viewer) for _ in range(args.views)]
                probe = threading.Thread(target=health_samples, args=(reg.url, stop, loaded))
                for t in [*threads, probe]:
                    t.start()
                time.sleep(args.seconds)
                stop.set()
                for t in [*threads, probe]:
                    t.join()
                return loaded, views

            print(f"GET /health, idle:                           {quantiles(idle)}")
            for page in ("model-plain", "model-ordinary", "model-evil"):
                loaded, views = under_load(page)
                print(f"{args.views} clients viewing /models/{page}/:")
                print(f"  GET /health                                {quantiles(loaded)}")
                print(f"  the page                                   {quantiles(views)}")


if __name__ == "__main__":
    main()
