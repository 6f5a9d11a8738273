#!/usr/bin/env python3
"""What the pickle check costs on large weight files, against reading the same file.

    .venv/bin/python benchmarks/scan.py [--size 1GiB] [--runs 3] [--compressed 256MiB]

Writes, in a temporary folder, a joblib file of a dict holding float64 arrays of
--size bytes in all (``joblib.dump(..., compress=0)``, how scikit-learn models are
saved), a ``.npy`` of --size bytes, a protocol-5 pickle of an array of --size bytes,
and the joblib file again inside a wheel-like zip (stored, as ``modelpack build``
writes weights: ``publish`` scans them there). With --compressed, a zlib joblib file
of that size (compress=3) too; its baseline is decompressing it. Last, a pickle of a
dict of a million short strings (3 million opcodes, 17 MiB), against unpickling it:
the scan runs every opcode in Python, so this is its slow case.

For each file the baseline is reading it to the end in 1 MiB blocks (``cat > /dev/null``
from Python), measured in the same run, with the page cache warm for both; the scan is
:func:`modelpack.scan.scan_file` (or ``scan_stream`` on the zip member). Medians of
--runs are printed. The scan seeks over array payloads, on disk and inside a stored
wheel member alike, so those cases should be far under the read; a compressed stream
must be decompressed to be read at all.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from modelpack.scan import scan_file, scan_stream
from modelpack.scan.report import wheel_files


def parse_size(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def read_all(path: Path) -> None:
    with path.open("rb", buffering=0) as f:
        while f.read(1 << 20):
            pass


def read_member(path: Path) -> None:
    with zipfile.ZipFile(path) as zf, zf.open(zf.namelist()[0]) as f:
        while f.read(1 << 20):
            pass


def decompress_all(path: Path) -> None:
    d = zlib.decompressobj()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            d.decompress(chunk)


def scan_member(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        [(_, _, opener)] = wheel_files(zf, zf.namelist(), "")
        with opener() as f:
            result = scan_stream(f, path)
    assert not result.errors and result.refs, result.errors


def unpickle(path: Path) -> None:
    with path.open("rb") as f:
        pickle.load(f)


def checked_scan(path: Path) -> None:
    result = scan_file(path)
    assert not result.errors, result.errors


def timed(fn: Callable[[Path], None], path: Path) -> float:
    start = time.perf_counter()
    fn(path)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compressed", default="", help="also a zlib joblib file of this size")
    args = ap.parse_args()
    size = parse_size(args.size)

    import joblib
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="scan-bench-") as tmp:
        root = Path(tmp)
        n = size // 8
        arrays = {f"coef_{i}": np.ones(n // 4, dtype=np.float64) for i in range(4)}
        obj = {"steps": [("scale", {"mean": np.zeros(3)}), ("weights", arrays)], "v": 1}
        files: dict[str, tuple[Path, Callable[[Path], None], Callable[[Path], None]]] = {}
        jl = root / "model.joblib"
        joblib.dump(obj, jl, compress=0)
        files["joblib, compress=0"] = (jl, read_all, checked_scan)
        npy = root / "weights.npy"
        np.save(npy, np.ones(n, dtype=np.float64))
        files[".npy"] = (npy, read_all, checked_scan)
        p5 = root / "weights.pkl"
        with p5.open("wb") as f:
            pickle.dump(np.ones(n, dtype=np.float64), f, protocol=5)
        files["pickle protocol 5"] = (p5, read_all, checked_scan)
        whl = root / "model-1.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w", zipfile.ZIP_STORED) as zf:
            zf.write(jl, "model/weights/model.joblib")
        files["joblib in a wheel (publish)"] = (whl, read_member, scan_member)
        vocab = root / "vocab.pkl"  # many small opcodes instead of a few large ones
        vocab.write_bytes(pickle.dumps({f"token{i}": i for i in range(1_000_000)}, protocol=4))
        files["dict of 1M str->int (pickle.load)"] = (vocab, unpickle, checked_scan)
        if args.compressed:
            cn = parse_size(args.compressed) // 8
            cz = root / "model_zlib.joblib"
            rng = np.random.default_rng(0)
            joblib.dump({"w": rng.integers(0, 16, cn).astype(np.float64)}, cz, compress=3)
            files[f"joblib zlib ({args.compressed} of arrays)"] = (cz, decompress_all, checked_scan)

        print(f"{'file':<34} {'size':>9} {'baseline s':>11} {'scan s':>8} {'scan/baseline':>14}")
        for label, (path, base, scan) in files.items():
            read_all(path)  # warm the page cache for both sides
            bases, scans = [], []
            for _ in range(args.runs):
                bases.append(timed(base, path))
                scans.append(timed(scan, path))
            b, s = statistics.median(bases), statistics.median(scans)
            mib = path.stat().st_size / (1 << 20)
            print(f"{label:<34} {mib:>6.0f}MiB {b:>11.3f} {s:>8.3f} {s / b:>13.2f}x")
    print("baseline: reading the file to the end (zip: the member; zlib: decompressing it;"
          " the dict: unpickling it)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
