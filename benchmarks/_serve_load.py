"""Load generator for benchmarks/serving.py: CLIENTS threads POST one body for SECONDS.

    python _serve_load.py URL BODY_FILE CLIENTS SECONDS

Each thread keeps one HTTP/1.1 connection (http.client, no requests overhead). Prints
one JSON line: requests, errors, requests/s, p50 and p99 latency in ms.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    url, body_file, clients, seconds = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        float(sys.argv[4]),
    )
    body = open(body_file, "rb").read()
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.perf_counter()
    stop = start + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host, parts.port, timeout=60)
        mine: list[float] = []
        bad = 0
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    bad += 1
                    continue
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(host, parts.port, timeout=60)
                continue
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return (
            1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0
        )

    print(json.dumps({"requests": len(latencies), "errors": errors[0], "rps": len(latencies) / elapsed,
                      "p50_ms": pct(0.50), "p99_ms": pct(0.99)}))  # fmt: skip


if __name__ == "__main__":
    main()
