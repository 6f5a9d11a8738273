#!/usr/bin/env python3
"""End to end: package, publish, install and load a model to its first prediction.

    .venv/bin/python benchmarks/end_to_end.py --size 1GiB --runs 3
    .venv/bin/python benchmarks/end_to_end.py --size 100MiB --runs 1 --pipelines floor,modelpack

Pipelines (each run of each one gets a fresh server on a fresh data folder):

- ``floor``: cp of the weights file + HTTP PUT to a trivial server + HTTP GET + np.load;
- ``modelpack``: ``modelpack build`` / ``publish`` to ``modelpack-registry serve``, then
  ``pip install`` and ``uv pip install`` into fresh venvs, then the first prediction;
- ``naive``: ``python -m build`` (hatchling deflates the weights), twine to stock
  ``pypi-server run``, pip install;
- ``mlflow``: MLflow 3.17.2 tracking server (sqlite, proxied artifacts), ``log_model`` of a
  pyfunc PythonModel holding the array with registration, ``load_model`` from the registry in
  a fresh process and a prediction.

The weights are a float32 array of ``--size`` bytes of random normal values saved with
np.save. numpy comes from a local wheelhouse (``pip download numpy`` once, under
``~/.cache/modelpack-bench``) so no install times the network; MLflow is installed once in
its own venv there too. Runs are interleaved (run 1 of every pipeline, then run 2...) so a
change of machine load hits all pipelines alike; the load average is printed.

Printed: per pipeline and step, the median over runs of wall seconds and of peak RSS of
the client's and the server's process trees (sampled from /proc every 20 ms); then per
pipeline the median total and its ratio to the floor's median total of the same invocation.
Targets are reported, never asserted. Exit status 0 unless a step failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _e2e_measure import StepFailed
from _e2e_pipelines import BIN, MLFLOW, NUMPY, PIPELINES, REPO, Env, Run

CACHE = Path(os.environ.get("MODELPACK_BENCH_CACHE", Path.home() / ".cache" / "modelpack-bench"))
UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}
MiB = 1 << 20


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]iB|B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100MiB, 1GiB, 6GiB)")
    return int(float(m.group(1)) * UNITS[(m.group(2) or "").upper()])


def human(n: int) -> str:
    return f"{n / (1 << 30):g}GiB" if n >= 1 << 30 else f"{n / MiB:g}MiB"


def uv(*args: str | Path) -> None:
    subprocess.run([str(BIN / "uv"), *map(str, args)], check=True, capture_output=True)


def ensure_wheelhouse() -> Path:
    house = CACHE / "wheelhouse"
    if not list(house.glob("numpy-*.whl")):
        print(f"# first run: pip download {NUMPY} into {house}", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                        "-d", house, NUMPY], check=True, env={**env, "PIP_CONFIG_FILE": os.devnull})  # fmt: skip
    return house


def ensure_mlflow() -> Path:
    venv = CACHE / "mlflow-venv"
    mark = venv / ".modelpack-bench-ok"
    if not mark.exists():
        print(f"# first run: installing {MLFLOW} into {venv}", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        uv("venv", "-q", "--python", sys.executable, venv)
        uv("pip", "install", "-q", "--python", venv / "bin" / "python", MLFLOW, NUMPY)
        mark.write_text(MLFLOW + "\n")
    return venv


def make_tools(work: Path) -> tuple[Path, str]:
    """The data scientist's venv: numpy (the model imports it), modelpack and
    modelpack-registry, installed from a snapshot of the checkout's HEAD (so that
    uncommitted edits in the work tree cannot change the code under test mid-run).
    Returns the venv and the commit measured."""
    venv, src = work / "tools-venv", work / "src"
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
        src.mkdir()
        archive = subprocess.run(["git", "-C", REPO, "archive", "HEAD"], check=True,
                                 capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the files as they are
        commit, src = "work tree", REPO
    uv("venv", "-q", "--python", sys.executable, venv)
    uv("pip", "install", "-q", "--python", venv / "bin" / "python", NUMPY, src,
       src / "registry-server")  # fmt: skip
    return venv, commit


def make_weights(path: Path, size: int) -> None:
    code = (
        "import sys, numpy as np\n"
        "n = int(sys.argv[2]) // 4\n"
        "a = np.lib.format.open_memmap(sys.argv[1], mode='w+', dtype=np.float32, shape=(n,))\n"
        "rng = np.random.default_rng(0)\n"
        "step = 1 << 24\n"
        "for i in range(0, n, step):\n"
        "    a[i:i + step] = rng.standard_normal(min(step, n - i), dtype=np.float32)\n"
        "a.flush()\n"
    )
    subprocess.run([str(path.parent / "tools-venv" / "bin" / "python"), "-c", code, str(path),
                    str(size)], check=True)  # fmt: skip


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])  # fmt: skip


def report(results: dict[str, list[Run]], size: int, runs: int) -> None:
    med = statistics.median
    floor = med(r.total for r in results["floor"]) if results.get("floor") else None
    rows = []
    for name, rs in results.items():
        if not rs:
            continue
        for step, (stage, _) in rs[0].steps.items():
            got = [r.steps[step][1] for r in rs]
            in_total = step in rs[0].total_steps
            rows.append([name, step + ("" if in_total else " *"), stage,
                         f"{med(g.seconds for g in got):.2f}",
                         f"{med(g.client_rss for g in got) / MiB:.0f}",
                         f"{med(g.server_rss for g in got) / MiB:.0f}"])  # fmt: skip
    print(f"\n## Steps: {human(size)} float32, median of {runs} run(s)\n")
    print(table(rows, ["pipeline", "step", "stage", "wall s", "client peak RSS MiB",
                       "server peak RSS MiB"]))  # fmt: skip
    print("\n(* beside the total path: the uv consumer path, shown for comparison)")
    rows = []
    for name, rs in results.items():
        if not rs:
            continue
        stages = {}
        for stage in ("package", "publish", "install", "predict"):
            per_run = [sum(s[1].seconds for n, s in r.steps.items()
                           if s[0] == stage and n in r.total_steps) for r in rs]  # fmt: skip
            stages[stage] = f"{med(per_run):.2f}"
        total = med(r.total for r in rs)
        ratio = f"{total / floor:.2f}x" if floor else "n/a"
        all_totals = " / ".join(f"{r.total:.1f}" for r in rs)
        rows.append([name, *stages.values(), f"{total:.2f}", ratio, all_totals])
        if name == "modelpack":
            uv_tot = [r.total - r.steps["pip install"][1].seconds
                      - r.steps["first prediction (pip venv)"][1].seconds
                      + r.steps["uv pip install"][1].seconds
                      + r.steps["first prediction (uv venv)"][1].seconds for r in rs]  # fmt: skip
            rows.append(["modelpack (uv)", stages["package"], stages["publish"],
                         f"{med(r.steps['uv pip install'][1].seconds for r in rs):.2f}",
                         f"{med(r.steps['first prediction (uv venv)'][1].seconds for r in rs):.2f}",
                         f"{med(uv_tot):.2f}", f"{med(uv_tot) / floor:.2f}x" if floor else "n/a",
                         " / ".join(f"{t:.1f}" for t in uv_tot)])  # fmt: skip
    print(f"\n## End to end: {human(size)}, median seconds of {runs} run(s)\n")
    print(table(rows, ["pipeline", "package", "publish", "install", "first prediction",
                       "total", "x floor", "each run"]))  # fmt: skip
    if floor and results.get("modelpack"):
        mp = med(r.total for r in results["modelpack"])
        print(f"\nmodelpack / floor: {mp / floor:.2f}x (target <= 2.5x)")
        if results.get("mlflow"):
            ml = med(r.total for r in results["mlflow"])
            print(f"MLflow / modelpack: {ml / mp:.2f}x (target >= 2x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=1 << 30, help="weights size (1GiB)")
    ap.add_argument("--runs", type=int, default=3, help="runs per pipeline (3)")
    ap.add_argument(
        "--pipelines",
        default="floor,modelpack,mlflow",
        help=f"comma-separated, of {','.join(PIPELINES)} (floor,modelpack,mlflow)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.pipelines.split(",") if n.strip()]
    if unknown := set(names) - set(PIPELINES):
        ap.error(f"unknown pipeline(s): {', '.join(sorted(unknown))}")
    if "floor" not in names:
        names.insert(0, "floor")  # ratios need the floor of the same invocation

    work = Path(tempfile.mkdtemp(prefix="modelpack-e2e-"))
    need = args.size * 9
    free = shutil.disk_usage(work).free
    if free < need:
        sys.exit(
            f"not enough disk in {work.parent}: {human(free)} free, about {human(need)} needed"
        )
    started = time.monotonic()
    print(
        f"# {human(args.size)}, {args.runs} run(s), pipelines {','.join(names)}; "
        f"{os.cpu_count()} CPUs; load average {load()}; work folder {work}",
        flush=True,
    )
    results: dict[str, list[Run]] = {n: [] for n in names}
    failed = False
    try:
        tools, commit = make_tools(work)
        print(f"# modelpack and modelpack-registry at {commit}", flush=True)
        env = Env(work=work, weights=work / "weights.npy", size=args.size,
                  wheelhouse=ensure_wheelhouse(), tools=tools,
                  mlflow=ensure_mlflow() if "mlflow" in names else None,
                  timeout=max(600.0, 120 * args.size / (1 << 30)), log=work / "steps.log")  # fmt: skip
        make_weights(env.weights, args.size)
        for i in range(1, args.runs + 1):
            for name in names:
                scratch = work / f"{name}-{i}"
                (scratch / "tmp").mkdir(parents=True)
                os.environ["TMPDIR"] = str(scratch / "tmp")
                before = load()
                try:
                    run = PIPELINES[name](env, scratch)
                except (StepFailed, RuntimeError, subprocess.CalledProcessError) as exc:
                    print(f"! {name} run {i} failed: {exc}", flush=True)
                    failed = True
                    continue
                finally:
                    os.environ.pop("TMPDIR")
                    shutil.rmtree(scratch, ignore_errors=True)
                results[name].append(run)
                print(
                    f"# run {i} {name}: {run.total:.2f} s  ("
                    + ", ".join(f"{k} {v[1].seconds:.2f}" for k, v in run.steps.items())
                    + f"); load average before {before}, after {load()}",
                    flush=True,
                )
        report(results, args.size, args.runs)
    finally:
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n# finished in {time.monotonic() - started:.0f} s; load average {load()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
