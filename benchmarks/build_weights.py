#!/usr/bin/env python3
"""What weights add to `modelpack build`, against a plain copy of the same bytes.

    .venv/bin/python benchmarks/build_weights.py [--size 512MiB] [--runs 3]

Builds one template project twice per run: with a weights file of --size random bytes,
and with a 1 KiB one (everything else equal), and copies the big file with shutil
(`cp`). "Added by the weights" is the difference of the two builds; the target is at
most 1.5x the copy. Medians of --runs; the page cache is warm for every step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def size(text: str) -> int:
    for unit, factor in UNITS.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size, default=size("512MiB"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelpack-buildw-") as tmp:
        root = Path(tmp)
        subprocess.run([str(BIN / "modelpack"), "new", "model-w", "-o", str(root), "--no-input"],
                       check=True, capture_output=True)  # fmt: skip
        project = root / "model-w"
        weights = project / "src" / "model_w" / "weights" / "big.bin"
        source = root / "big.bin"
        with source.open("wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size // (1 << 20)):
                f.write(block)
        build = [str(BIN / "modelpack"), "build", str(project)]
        with_w, without_w, copies = [], [], []
        for _ in range(args.runs):
            weights.write_bytes(b"\0" * 1024)
            without_w.append(timed(build))
            shutil.copyfile(source, weights)
            with_w.append(timed(build))
            start = time.perf_counter()
            shutil.copyfile(source, root / "copy.bin")
            copies.append(time.perf_counter() - start)
            (root / "copy.bin").unlink()
        wheel = next((project / "dist").glob("*.whl"))
        print(
            f"# modelpack build, {args.size / (1 << 20):.0f} MiB of weights, median of {args.runs}\n"
        )
        print("| step | seconds |\n|---|---|")
        b_with, b_without, cp = (statistics.median(x) for x in (with_w, without_w, copies))
        print(f"| build, 1 KiB of weights | {b_without:.2f} |")
        print(f"| build, {args.size >> 20} MiB of weights | {b_with:.2f} |")
        print(f"| added by the weights | {b_with - b_without:.2f} |")
        print(f"| plain copy of the same bytes | {cp:.2f} |")
        print(f"| ratio (target <= 1.5x) | {(b_with - b_without) / cp:.2f}x |")
        print(f"| wheel size | {wheel.stat().st_size / (1 << 20):.1f} MiB |")


if __name__ == "__main__":
    main()
