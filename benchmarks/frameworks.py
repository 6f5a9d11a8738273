#!/usr/bin/env python3
"""Each framework template, timed from `modelpack new` to a consumer's first prediction,
next to MLflow's flavor for the same trained model.

    .venv/bin/python benchmarks/frameworks.py
    .venv/bin/python benchmarks/frameworks.py --frameworks sklearn,onnx --runs 3 --no-mlflow

modelpack, per framework (the dev venv's ``modelpack``, one registry for the run):

- ``new``: ``modelpack new NAME --framework F --no-input`` (renders and trains);
- ``build``: ``modelpack build``; the wheel's size is printed too;
- ``publish --verify``: the wheel installed and asked to predict in a clean environment
  before the upload and as served after it, then the upload (a fresh version each run);
- ``pip install``: a fresh ``python -m venv`` and plain ``pip install NAME==V`` (the
  registry as extra index, public dependencies from the configured index and the pip cache);
- ``first predict``: a new process importing the model, ``load()`` and one prediction.

MLflow (sklearn, xgboost and onnx have a flavor; the pure-Python model has none), in its own
venv with the same library versions (made once under ~/.cache/modelpack-bench): the model
that modelpack's ``load()`` returns is logged with ``mlflow.<flavor>.log_model`` to a
sqlite-backed local store (``log_model``, a new process), then ``mlflow.<flavor>.load_model``
and one prediction in another new process (``load+predict``); the logged artifact's size is
printed beside the wheel's. MLflow 3.17's sklearn flavor saves with skops by default and
refuses the pipeline's own transformer unless ``skops_trusted_types`` names it (given here);
loading needs the model's package importable (``PYTHONPATH`` here), which MLflow does not
ship unless ``code_paths`` is given.

Printed: the median wall seconds of each step over ``--runs``, and the load average.
Targets are reported, never asserted. Exit status 0 unless a step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import Registry, clean_env

BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("MODELPACK_BENCH_CACHE", Path.home() / ".cache" / "modelpack-bench"))
MLFLOW = "mlflow==3.17.2"
FRAMEWORKS = ("python", "sklearn", "xgboost", "onnx")
FLAVORED = ("sklearn", "xgboost", "onnx")
# The libraries the MLflow venv needs to load what the templates train, at the versions
# installed here (so that both sides handle the very same model).
LIBRARIES = ("numpy", "scikit-learn", "skops", "joblib", "xgboost-cpu", "onnx", "onnxruntime")

LOG = r"""
import importlib, sys, mlflow
flavor, package, uri, out = sys.argv[1:5]
mlflow.set_tracking_uri(uri)
model = importlib.import_module(package).load()
if flavor == "sklearn":
    # MLflow 3.17 saves with skops by default, and asks for the trusted types too
    trusted = importlib.import_module(package + ".model").TRUSTED
    info = mlflow.sklearn.log_model(model, name="model", skops_trusted_types=trusted)
elif flavor == "xgboost":
    info = mlflow.xgboost.log_model(model.booster, name="model", model_format="ubj")
else:
    import onnx
    info = mlflow.onnx.log_model(onnx.load_from_string(model.model), name="model")
open(out, "w").write(info.model_uri)
"""
PREDICT = r"""
import json, sys, mlflow, numpy as np
flavor, uri, model_uri, rows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
mlflow.set_tracking_uri(uri)
if flavor == "sklearn":
    print(mlflow.sklearn.load_model(model_uri).predict(rows)[:1])
elif flavor == "xgboost":
    import xgboost
    print(mlflow.xgboost.load_model(model_uri).inplace_predict(np.asarray(rows))[:1])
else:
    import onnxruntime
    proto = mlflow.onnx.load_model(model_uri)
    s = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    print(s.run(None, {s.get_inputs()[0].name: np.asarray(rows, dtype=np.float32)})[0][:1])
"""


def timed(cmd: list[str | Path], **kw: object) -> float:
    start = time.perf_counter()
    result = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    took = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed: {cmd}\n{result.stdout}\n{result.stderr}")
    return took


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ensure_mlflow_venv() -> Path:
    pins = [f"{d}=={metadata.version(d)}" for d in LIBRARIES]
    venv = CACHE / "mlflow-frameworks-venv"
    mark = venv / ".modelpack-bench-ok"
    want = "\n".join([MLFLOW, *pins]) + "\n"
    if not mark.exists() or mark.read_text() != want:
        print(f"# installing {MLFLOW} and {', '.join(pins)} into {venv}", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        uv = str(BIN / "uv")
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                        MLFLOW, *pins], check=True)  # fmt: skip
        mark.write_text(want)
    return venv


def modelpack_run(framework: str, run: int, work: Path, registry: Registry) -> dict[str, float]:
    name = f"bench-{framework}"
    out = work / f"{framework}-{run}"
    mp = BIN / "modelpack"
    row = {"new": timed([mp, "new", name, "--framework", framework, "--no-input", "-o", out])}
    project = out / name
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace('version = "0.1.0"', f'version = "0.1.{run}"')
    )
    row["build"] = timed([mp, "build", project])
    (wheel,) = (project / "dist").glob("*.whl")
    row["wheel KiB"] = wheel.stat().st_size / 1024
    row["publish --verify"] = timed(
        [mp, "publish", project, "--verify", "--registry", registry.url]
    )
    venv = out / "consumer"
    py = venv / "bin" / "python"
    env = clean_env()
    row["pip install"] = timed([sys.executable, "-m", "venv", venv]) + timed(
        [py, "-m", "pip", "install", "-q", f"{name}==0.1.{run}", "--extra-index-url",
         registry.index_url], env=env,
    )  # fmt: skip
    package = name.replace("-", "_")
    (venv / "rows.json").write_text(_rows(project))
    probe = f"import json, {package} as m; print(m.predict(json.load(open('rows.json'))))"
    row["first predict"] = timed([py, "-c", probe], env=env, cwd=venv)
    return row


def _rows(project: Path) -> str:
    return json.dumps(json.loads((project / "tests" / "predictions.json").read_text())["rows"])


def mlflow_run(framework: str, run: int, work: Path, venv: Path) -> dict[str, float]:
    name = f"bench-{framework}"
    project = work / f"{framework}-{run}" / name
    py = venv / "bin" / "python"
    store = work / f"mlflow-{framework}-{run}"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {**clean_env(), "PYTHONPATH": str(project / "src")}  # the model package, importable
    out = store / "uri.txt"
    row = {"log_model": timed([py, "-c", LOG, framework, name.replace("-", "_"), uri, out],
                              env=env, cwd=store)}  # fmt: skip
    row["load+predict"] = timed(
        [py, "-c", PREDICT, framework, uri, out.read_text(), _rows(project)], env=env, cwd=store
    )
    artifacts = [p for p in store.rglob("MLmodel")]
    row["artifact KiB"] = du(artifacts[0].parent) / 1024 if artifacts else float("nan")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow side")
    args = parser.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    venv = None if args.no_mlflow else ensure_mlflow_venv()
    print(f"# load average before: {os.getloadavg()[0]:.2f}", flush=True)
    mp_rows: dict[str, list[dict[str, float]]] = {f: [] for f in frameworks}
    ml_rows: dict[str, list[dict[str, float]]] = {f: [] for f in frameworks}
    with tempfile.TemporaryDirectory(prefix="mp-frameworks-") as tmp:
        work = Path(tmp)
        with Registry(work / "registry-data", contract=False) as registry:
            for run in range(args.runs):  # interleaved, so that load changes hit all alike
                for f in frameworks:
                    mp_rows[f].append(modelpack_run(f, run, work, registry))
                    if venv is not None and f in FLAVORED:
                        ml_rows[f].append(mlflow_run(f, run, work, venv))
    print(f"# load average after: {os.getloadavg()[0]:.2f}; median of {args.runs} run(s), seconds")
    steps = ["new", "build", "publish --verify", "pip install", "first predict"]
    head = ["framework", *steps, "total", "wheel KiB", "| mlflow log_model", "load+predict",
            "total", "artifact KiB"]  # fmt: skip
    print(" | ".join(head))
    for f in frameworks:
        med = {k: statistics.median(r[k] for r in mp_rows[f]) for k in [*steps, "wheel KiB"]}
        cells = [f, *(f"{med[s]:.2f}" for s in steps), f"{sum(med[s] for s in steps):.2f}",
                 f"{med['wheel KiB']:.0f}"]  # fmt: skip
        if ml_rows[f]:
            ml = {k: statistics.median(r[k] for r in ml_rows[f])
                  for k in ("log_model", "load+predict", "artifact KiB")}  # fmt: skip
            cells += [f"| {ml['log_model']:.2f}", f"{ml['load+predict']:.2f}",
                      f"{ml['log_model'] + ml['load+predict']:.2f}", f"{ml['artifact KiB']:.0f}"]  # fmt: skip
        else:
            cells += ["| -", "-", "-", "-"]
        print(" | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
