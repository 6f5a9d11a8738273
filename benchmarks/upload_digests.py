"""What checking the announced md5/blake2 digests costs an upload, against sha256 alone.

Run it from the repository root::

    .venv/bin/python benchmarks/upload_digests.py [--size-mib 512] [--rounds 3]

It starts a real registry on a free loopback port, makes one wheel of ``--size-mib`` MiB
and uploads it as twine does (fields first, streamed from disk) under a new version each
time, with the form announcing:

- ``sha256``: only ``sha256_digest`` (the baseline: the registry always computes it);
- ``all three``: ``sha256_digest``, ``md5_digest`` and ``blake2_256_digest``, as twine 6
  sends them (a matching sha256 settles it: md5 and blake2 are not computed);
- ``md5+blake2``: those two without ``sha256_digest``: the registry computes and checks
  all three, which is what checking every announced digest would cost every twine upload.

Prints the median upload time and throughput of each.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from registry_support import make_big_wheel, stream_upload

from support import Registry


def digests(path: Path) -> dict[str, str]:
    found: dict[str, Any] = {"sha256_digest": hashlib.sha256(), "md5_digest": hashlib.md5(),
             "blake2_256_digest": hashlib.blake2b(digest_size=32)}  # fmt: skip
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            for h in found.values():
                h.update(block)
    return {k: h.hexdigest() for k, h in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 1024**2
    with tempfile.TemporaryDirectory() as tmp, Registry(Path(tmp) / "data") as reg:
        times: dict[str, list[float]] = {"sha256": [], "all three": [], "md5+blake2": []}
        for n in range(args.rounds):
            for kind in times:
                version = f"{n}.{list(times).index(kind)}"
                wheel = make_big_wheel(Path(tmp) / version, "bench-model", version, size)
                announced = digests(wheel)
                if kind == "sha256":
                    announced = {"sha256_digest": announced["sha256_digest"]}
                elif kind == "md5+blake2":
                    del announced["sha256_digest"]
                started = time.perf_counter()
                answer = stream_upload(reg.url, wheel, announced)
                times[kind].append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
                wheel.unlink()
        print(f"upload of a {args.size_mib} MiB wheel, median of {args.rounds}:")
        for kind, seconds in times.items():
            median = statistics.median(seconds)
            print(f"  {kind:<10} {median:6.2f} s  {size / median / 1024**2:7.0f} MiB/s")


if __name__ == "__main__":
    main()
