#!/usr/bin/env python3
"""What weights add to `modelpack build`, against a plain copy of the same bytes.

    .venv/bin/python benchmarks/build_weights.py [--size 512MiB] [--runs 5] [-v]

Builds one template project with a weights file of --size random bytes and with a 1 KiB
one (everything else equal); "added by the weights" is the difference. Two cases:

- first build: the weights were never built (no digest cache), so the build must hash
  them (sha256 for RECORD, CRC-32 for the zip) besides copying them;
- rebuild: the same weights, unchanged, built again (the code or manifest changed), so
  their digests come from the cache and only the copy is left. A rebuild also replaces
  the previous wheel in dist/ (freeing a 512 MiB file's blocks and pages costs about
  0.2 s here).

The baselines, measured in the same run on the same file: `cp` (coreutils; an
in-kernel copy on Linux), timed just before each build of the weights, and sha256 alone
(hashlib), which bounds any first build of a wheel with a correct RECORD. The target is
at most 1.5x the copy. Each rebuild is done twice per run (an edit, a build, another
edit, another build).

Medians and bests of --runs are printed (-v: every sample). The page cache is warm for
every step, and each step starts after a `sync`. On the VM this was written on, writing
512 MiB into memory takes 0.1 s, or 0.3-0.9 s for a few seconds after a large file was
written (cp and builds alike; its balloon reports free pages to the host), so the best
of several runs is the cost without those stalls, and the median is what a user saw.
"""

from __future__ import annotations

import argparse
import hashlib
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


def settle() -> None:
    """No write-back of an earlier step's files (2.5 GiB per run) pending at a step's start."""
    os.sync()


def timed(cmd: list[str]) -> float:
    settle()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size, default=size("512MiB"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every sample")
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
        cols: dict[str, list[float]] = {k: [] for k in ("none", "first", "re", "cp", "sha")}
        copies = 0

        def copy() -> float:
            # The file the build reads; like a build, `cp` writes a new file while the
            # previous one is still there.
            nonlocal copies
            took = timed(["cp", str(weights), str(root / f"copy-{copies}.bin")])
            (root / f"copy-{copies - 1}.bin").unlink(missing_ok=True)
            copies += 1
            return took

        for run in range(args.runs):  # each build step right after a copy, in the same state
            os.environ["MODELPACK_CACHE_DIR"] = str(root / f"cache-{run}")  # cold each run
            weights.write_bytes(b"\0" * 1024)
            shutil.rmtree(project / "dist", ignore_errors=True)  # as for the first build
            cols["none"].append(timed(build))
            shutil.copyfile(source, weights)
            time.sleep(2.5)  # older than the digest cache's racy-write margin (2 s)
            cols["cp"].append(copy())
            cols["first"].append(timed(build))
            cols["cp"].append(copy())
            cols["re"].append(timed(build))
            cols["re"].append(timed(build))  # code or manifest edited, built again
            settle()
            start = time.perf_counter()
            sha256_of(source)
            cols["sha"].append(time.perf_counter() - start)
        if args.verbose:
            for name, samples in cols.items():
                print(name, " ".join(f"{x:.3f}" for x in samples), file=sys.stderr)
        wheel = next((project / "dist").glob("*.whl"))
        report(cols, args.size, args.runs, wheel.stat().st_size)


def sha256_of(path: Path) -> str:
    """sha256 in 1 MiB reads, as hashlib.file_digest does (that needs Python 3.11)."""
    digest, buf = hashlib.sha256(), bytearray(1 << 20)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as src:
        while n := src.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def report(cols: dict[str, list[float]], nbytes: int, runs: int, wheel_size: int) -> None:
    """Medians and bests; what the weights add is paired within a run (each run's builds
    minus that run's 1 KiB build), so a slow or fast backend run cancels out."""
    mib = nbytes / (1 << 20)
    none = cols["none"]
    rows = {
        "build, 1 KiB of weights": none,
        f"first build, {mib:.0f} MiB of weights": cols["first"],
        "rebuild, same weights unchanged": cols["re"],
        "plain copy of the same bytes (`cp`)": cols["cp"],
        "sha256 of the same bytes alone": cols["sha"],
        "**added by the weights, first build**": [
            f - n for f, n in zip(cols["first"], none, strict=True)
        ],
        "**added by the weights, rebuild** (replaces the previous wheel)": [
            r - none[i // 2] for i, r in enumerate(cols["re"])
        ],
    }
    cp_median, cp_best = statistics.median(cols["cp"]), min(cols["cp"])
    print(f"# modelpack build, {mib:.0f} MiB of weights, {runs} runs\n")
    print("| step | median s | best s | median x copy | best x copy |\n|---|---|---|---|---|")
    for step, samples in rows.items():
        m, b = statistics.median(samples), min(samples)
        ratios = " | "
        if "cp" in step or "sha256" in step or "added" in step:
            ratios = f"{m / cp_median:.2f}x | {b / cp_best:.2f}x"
        print(f"| {step} | {m:.2f} | {b:.2f} | {ratios} |")
    print(
        f"\nwheel: {wheel_size / (1 << 20):.1f} MiB; target: what the weights add <= 1.5x the copy"
    )


if __name__ == "__main__":
    main()
