#!/usr/bin/env python3
"""The catalog page, the filtered catalog and the models API with 1,000 models.

    .venv/bin/python benchmarks/catalog.py [--models 1000] [--requests 50]

Publishes one small real wheel, then places 999 more records by hand (hard links and
copies of its record, as a restore would leave them), starts a fresh registry and
times GET /, GET /?q=..., GET /api/v1/models, the catalog and the API sorted by a metric
(each record carries a model card: two metrics, a dataset, lineage) and GET
/models/<name>/ (p50 / p99 of
--requests each, after one warm-up request), beside GET /health as a baseline of the
same server. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from registry_support import make_wheel, post_upload

from support import Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelpack-catalog-") as tmp:
        data = Path(tmp) / "data"
        source = make_wheel(Path(tmp) / "dist", "model-0000", "1.0", summary="model number 0")
        with Registry(data, contract=False) as reg:
            post_upload(reg.url, source.name, source.read_bytes()).raise_for_status()
        template = json.loads((data / "meta" / f"{source.name}.json").read_text())
        for i in range(1, args.models):
            filename = f"model_{i:04d}-1.0-py3-none-any.whl"
            (data / "packages" / filename).hardlink_to(data / "packages" / source.name)
            card = {"metrics": {"auc": {"value": (i * 7919 % 1000) / 1000, "better": "higher"},
                                "log_loss": {"value": i / 1000, "better": "lower"}},
                    "dataset": {"name": "claims", "version": str(i % 7)},
                    "lineage": {"vcs": "git", "commit": f"{i:040x}", "dirty": False},
                    "tags": ["tabular" if i % 2 else "nlp"]}  # fmt: skip
            record = {**template, "filename": filename, "name": f"model-{i:04d}",
                      "summary": f"model number {i}",
                      "manifest": {**(template.get("manifest") or {}), **card}}  # fmt: skip
            (data / "meta" / f"{filename}.json").write_text(json.dumps(record))
            metadata = data / "meta" / f"{source.name}.metadata"
            if metadata.exists():
                (data / "meta" / f"{filename}.metadata").hardlink_to(metadata)
        with Registry(data, contract=False) as reg:
            session = requests.Session()
            rows = []
            for label, path in [("GET /health (baseline)", "/health"), ("GET /", "/"),
                                ("GET /?q=number 0042", "/?q=number%200042"),
                                ("GET /api/v1/models", "/api/v1/models"),
                                ("GET /?sort=metric:auc", "/?sort=metric:auc"),
                                ("GET /?tag=nlp&sort=metric:log_loss", "/?tag=nlp&sort=metric:log_loss"),
                                ("GET /api/v1/models?sort=metric:auc", "/api/v1/models?sort=metric:auc"),
                                ("GET /models/model-0042/", "/models/model-0042/")]:  # fmt: skip
                session.get(reg.url + path).raise_for_status()
                times = []
                for _ in range(args.requests):
                    start = time.perf_counter()
                    resp = session.get(reg.url + path)
                    times.append(time.perf_counter() - start)
                    resp.raise_for_status()
                q = statistics.quantiles(times, n=100)
                rows.append((label, q[49] * 1000, q[98] * 1000, len(resp.content)))
    print(f"# catalog with {args.models} models, {args.requests} requests each, one client\n")
    print("| request | p50 | p99 | bytes |\n|---|---|---|---|")
    for label, p50, p99, size in rows:
        print(f"| {label} | {p50:.1f} ms | {p99:.1f} ms | {size:,} |")


if __name__ == "__main__":
    main()
