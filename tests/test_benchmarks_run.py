"""The benchmark scripts behind the figures in docs/performance.md still run.

No figure is checked here (targets are reported by the scripts, never asserted); each
script runs once at its smallest size, against real servers, and must finish with its
summary. `benchmarks/end_to_end.py`'s modelpack pipeline once failed at every size for
weeks (the template started shipping a pickle that its project then refused) and
nothing noticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import clean_env

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
REPO = BENCH.parent


def _bench(*args: str, timeout: float = 600) -> str:
    done = subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=clean_env())  # fmt: skip
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_publish_speed_runs_the_template_model_through_publish_and_the_raw_post() -> None:
    out = _bench("publish_speed.py", "--size", "0", "--runs", "1", "--kinds", "raw,publish")
    assert "| modelpack publish (fresh build) |" in out
    assert "target: publish (fresh build) <= 1.3x raw POST:" in out


def test_end_to_end_runs_the_floor_and_the_modelpack_pipeline() -> None:
    out = _bench("end_to_end.py", "--size", "1MiB", "--runs", "1", "--pipelines", "floor,modelpack")
    assert "failed" not in out
    assert "| modelpack      |" in out and "| modelpack (uv) |" in out
    assert "modelpack / floor:" in out
