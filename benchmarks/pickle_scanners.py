#!/usr/bin/env python3
"""The pickle check against picklescan, modelscan and fickling, on the test corpus.

    .venv/bin/python benchmarks/pickle_scanners.py [--venv DIR] [-v]

Writes the corpora of tests/pickle_corpus.py (the malicious files, each of which runs
a command when loaded, and the benign model files) into two projects made with
``modelpack new``, then asks each scanner about each file:

- ``modelpack check`` (once per project; a file is refused when an error names it);
- ``picklescan -p FILE`` (exit 1: dangerous; 2: scan error);
- ``modelscan -p FILE`` (exit 1: issues; 2: error; 3: nothing it supports);
- ``fickling --check-safety FILE`` (exit 1: unsafe; 2: could not parse).

The three are installed from the package index into --venv (default
``~/.cache/modelpack-bench/scanners-venv``), never into the project's environment.
Prints, per scanner, the malicious files it let through (anything but a refusal) and
the benign files it did not pass.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(TESTS))

from pickle_corpus import TRANSFORMER, malicious  # noqa: E402

TOOLS = ["fickling", "picklescan", "modelscan", "typing_extensions"]
DEPS = '"numpy>=1.24", "scikit-learn>=1.3", "joblib>=1.3", "torch>=2"'


def ensure_venv(venv: Path) -> Path:
    bin_dir = venv / "bin"
    if not (bin_dir / "modelscan").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", *TOOLS], check=True)
    return bin_dir


def scaffold(tmp: Path, name: str) -> tuple[Path, Path]:
    modelpack = Path(sys.executable).parent / "modelpack"
    subprocess.run([str(modelpack), "new", name, "--output-dir", str(tmp), "--no-input"],
                   check=True, capture_output=True)  # fmt: skip
    project = tmp / name
    package = project / "src" / name.replace("-", "_")
    toml = project / "pyproject.toml"
    toml.write_text(
        toml.read_text().replace("\ndependencies = []", f"\ndependencies = [{DEPS}]", 1)
    )
    (package / "transformers.py").write_text(TRANSFORMER)
    return project, package


def check_refused(project: Path, package: Path) -> set[str]:
    modelpack = Path(sys.executable).parent / "modelpack"
    out = subprocess.run([str(modelpack), "check", str(project)], capture_output=True, text=True)
    rel = re.escape((package / "weights").relative_to(project).as_posix())
    return {m.group(1) for m in re.finditer(rf"^\s+{rel}/(\S+?): ", out.stderr, re.MULTILINE)}


def verdict(bin_dir: Path, tool: str, path: Path) -> str:
    cmd = {
        "picklescan": [str(bin_dir / "picklescan"), "-p", str(path)],
        "modelscan": [str(bin_dir / "modelscan"), "-p", str(path), "-r", "json",
                      "-o", os.devnull],
        "fickling": [str(bin_dir / "fickling"), "--check-safety", str(path),
                     "--json-output", os.devnull],
    }[tool]  # fmt: skip
    rc = subprocess.run(cmd, capture_output=True, timeout=300).returncode
    names = {"picklescan": {0: "pass", 1: "refused", 2: "error"},
             "modelscan": {0: "pass", 1: "refused", 2: "error", 3: "skipped"},
             "fickling": {0: "pass", 1: "refused", 2: "unparsed"}}  # fmt: skip
    return names[tool].get(rc, f"exit {rc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", type=Path,
                    default=Path.home() / ".cache" / "modelpack-bench" / "scanners-venv")  # fmt: skip
    ap.add_argument("-v", "--verbose", action="store_true", help="every file's verdicts")
    args = ap.parse_args()
    bin_dir = ensure_venv(args.venv)
    with tempfile.TemporaryDirectory(prefix="scanners-") as tmp_:
        tmp = Path(tmp_)
        evil, evil_pkg = scaffold(tmp, "model-evil")
        (evil_pkg / "helpers.py").write_text("import subprocess\nfrom os import system\n")
        markers = tmp / "markers"
        markers.mkdir()
        cases = malicious(evil_pkg / "weights", markers, evil_pkg.name)
        good, good_pkg = scaffold(tmp, "model-good")
        env = {**os.environ, "PYTHONPATH": f"{good / 'src'}{os.pathsep}{TESTS}"}
        code = "import sys, pickle_corpus as c; from pathlib import Path; c.benign(Path(sys.argv[1]), sys.argv[2])"
        subprocess.run([sys.executable, "-c", code, str(good_pkg / "weights"), good_pkg.name],
                       check=True, env=env)  # fmt: skip
        bad_files = [c.file for c in cases]
        good_files = sorted(p.name for p in (good_pkg / "weights").iterdir() if p.is_file())
        refused = {"evil": check_refused(evil, evil_pkg), "good": check_refused(good, good_pkg)}
        rows = []
        for tool in ("modelpack", "picklescan", "modelscan", "fickling"):
            missed, wrong = [], []
            for side, pkg, files in (("evil", evil_pkg, bad_files), ("good", good_pkg, good_files)):
                for name in files:
                    if tool == "modelpack":
                        v = "refused" if name in refused[side] else "pass"
                    else:
                        v = verdict(bin_dir, tool, pkg / "weights" / name)
                    if args.verbose:
                        print(f"{tool:<11} {side:<5} {name:<36} {v}")
                    if side == "evil" and v != "refused":
                        missed.append(f"{name} ({v})")
                    elif side == "good" and v not in ("pass", "skipped"):
                        wrong.append(f"{name} ({v})")
            rows.append((tool, missed, wrong))
    print(f"{len(bad_files)} malicious files (each runs a command when loaded), "
          f"{len(good_files)} benign model files")  # fmt: skip
    for tool, missed, wrong in rows:
        print(f"\n{tool}: let through {len(missed)} malicious, did not pass {len(wrong)} benign")
        if missed:
            print("  let through: " + ", ".join(missed))
        if wrong:
            print("  benign not passed: " + ", ".join(wrong))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
