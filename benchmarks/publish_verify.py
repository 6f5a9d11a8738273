"""What ``modelpack publish --verify`` adds to a publish of the template model.

Makes the template model once (``modelpack new``, ``modelpack build``), then, for each
run, publishes the same wheel to a fresh ``modelpack-registry serve`` (a new data folder
on a free loopback port; start-up not timed) three ways, interleaved: without
``--verify`` (the baseline), with ``--verify`` using uv, and with ``--verify`` using
venv + pip (``MODELPACK_VERIFY_TOOL``). ``publish()`` is called in-process, so the
figures hold no interpreter start-up. Verification runs twice per publish (the built
wheel before the upload, the registry's file after it); the environment-creation share
is the sum of both ``create`` steps as :mod:`modelpack.cleanenv` times them.

The template model has no dependencies, so no index is asked for any; a model with
dependencies adds their download and install (cached by uv and pip before the upload,
not after). Prints the median of the runs.

    .venv/bin/python benchmarks/publish_verify.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from auth import registry  # benchmarks/auth.py: a registry on a free port

from modelpack.building import build_project
from modelpack.publishing import publish
from modelpack.scaffold import new_project


def one(wheel: Path, root: Path, mode: str) -> tuple[float, float, float]:
    """(total seconds, environment creation, install) of one publish in *mode*."""
    if mode != "plain":
        os.environ["MODELPACK_VERIFY_TOOL"] = mode
    with registry(Path(tempfile.mkdtemp(dir=root))) as url:
        started = time.perf_counter()
        item = publish([wheel], registry=url, verify=mode != "plain")[0]
        total = time.perf_counter() - started
    checks = [c for c in (item.verified, item.checked) if c is not None]
    create = sum(c.timings.get("create", 0.0) for c in checks)
    install = sum(c.timings.get("install", 0.0) for c in checks)
    return total, create, install


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop("MODELPACK_USERNAME", None)
    modes = ["plain", "uv", "pip"]
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        root = Path(tmp)
        project = new_project("model-bench", root)
        wheel = build_project(project).wheel.path
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        seen: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
        for _ in range(args.runs):
            for mode in modes:
                seen[mode].append(one(wheel, root, mode))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    base = statistics.median(t for t, _, _ in seen["plain"])
    print(f"\ntemplate model, median of {args.runs} runs (seconds)")
    print(f"{'publish':<26}{'total':>8}{'added':>8}{'env creation':>14}{'install':>9}")
    print(f"{'without --verify':<26}{base:>8.2f}{'-':>8}{'-':>14}{'-':>9}")
    for mode in ("uv", "pip"):
        total = statistics.median(t for t, _, _ in seen[mode])
        create = statistics.median(c for _, c, _ in seen[mode])
        install = statistics.median(i for _, _, i in seen[mode])
        label = f"--verify ({'uv' if mode == 'uv' else 'venv + pip'})"
        print(f"{label:<26}{total:>8.2f}{total - base:>8.2f}{create:>14.2f}{install:>9.2f}")


if __name__ == "__main__":
    main()
