#!/usr/bin/env python3
"""`modelpack serve` against `mlflow models serve`, same model, same machine, one run.

    .venv/bin/python benchmarks/serving.py                    # everything (~4 min)
    .venv/bin/python benchmarks/serving.py --seconds 3 --no-uncached-mlflow

The model is the template's (a pure-Python linear model, so the figures are the
servers', not numpy's). modelpack: built, published to a `modelpack-registry serve`
process and served from it (`modelpack serve NAME`, which installs it into a cached
environment). MLflow 3.17.2 (its own venv, made by benchmarks/end_to_end.py's
ensure_mlflow): the same pickle in a pyfunc PythonModel, `mlflow models serve -m DIR`.

Printed:
- cold start, command to the first successful prediction: modelpack with its environment
  not cached / cached; MLflow with `--env-manager uv` not cached / cached, and `local`;
- throughput and p50/p99 latency at 1, 8 and 32 clients (benchmarks/_serve_load.py, one
  keep-alive connection per client thread) for a 1-row and a 1,000-row `{"inputs": ...}`
  request, both servers at their default worker count, then both with 2;
- server RSS (the process tree) after the load.
Targets (reported, never asserted): 2x MLflow's throughput at 8 clients, half its cold start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _e2e_measure import tree_rss
from end_to_end import ensure_mlflow

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ROW = [1.0, 2.0, 3.0]

_SAVE = r"""
import pickle, sys
import mlflow.pyfunc
sys.path.insert(0, sys.argv[2])
class Model(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        with open(context.artifacts["model"], "rb") as f:
            self.model = pickle.load(f)
    def predict(self, context, model_input, params=None):
        rows = model_input.tolist() if hasattr(model_input, "tolist") else model_input
        return self.model.predict(rows)
mlflow.pyfunc.save_model(sys.argv[1], python_model=Model(), artifacts={"model": sys.argv[3]},
                         code_paths=[sys.argv[4]], pip_requirements=["mlflow==3.17.2"])
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: bytes, timeout: float = 5) -> bool:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class Server:
    def __init__(self, cmd: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}/invocations"
        self.start = time.perf_counter()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # fmt: skip
        self.log = log

    def first_prediction(self, timeout: float = 900) -> float:
        body = json.dumps({"inputs": [ROW]}).encode()
        while time.perf_counter() - self.start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
            if post(self.url, body, 2):
                return time.perf_counter() - self.start
            time.sleep(0.02)
        raise RuntimeError(f"no prediction after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="per load point (default 5)")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--no-uncached-mlflow", action="store_true", help="skip MLflow's uv cold start")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    mlflow_venv = ensure_mlflow()
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("MODELPACK_CACHE_DIR",)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # uv, for both
    print(
        f"# load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs; work in {work}",
        flush=True,
    )
    reg_port = free_port()
    registry = Server([str(BIN / "modelpack-registry"), "serve", "--data", str(work / "data"), "--host",
                       "127.0.0.1", "--port", str(reg_port)], reg_port, env, work / "registry.log")  # fmt: skip
    registry_url = f"http://127.0.0.1:{reg_port}"
    try:
        return run(args, clients, mlflow_venv, work, env, registry_url)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, clients: list[int], mlflow_venv: Path, work: Path,
        env: dict[str, str], registry_url: str) -> int:  # fmt: skip
    def sh(*cmd: str | Path) -> None:
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True, env=env)

    sh(BIN / "modelpack", "new", "model-bench", "-o", work, "--no-input")
    project = work / "model-bench"
    sh(BIN / "modelpack", "build", project)
    for _ in range(100):
        if post(registry_url + "/health", b"", 1) or _get(registry_url + "/health"):
            break
        time.sleep(0.1)
    sh(BIN / "modelpack", "publish", project, "--registry", registry_url)
    package = project / "src" / "model_bench"
    mlmodel = work / "mlflow-model"
    sh(
        mlflow_venv / "bin" / "python",
        "-c",
        _SAVE,
        mlmodel,
        package.parent,
        package / "weights" / "model.pkl",
        package,
    )

    def modelpack_cmd(port: int, workers: int | None) -> list[str]:
        w = ["--workers", str(workers)] if workers else []
        return [
            str(BIN / "modelpack"),
            "serve",
            "model-bench",
            "--registry",
            registry_url,
            "--port",
            str(port),
            *w,
        ]

    def mlflow_cmd(port: int, workers: int | None, manager: str = "local") -> list[str]:
        w = ["--workers", str(workers)] if workers else []
        return [str(mlflow_venv / "bin" / "mlflow"), "models", "serve", "-m", str(mlmodel), "--env-manager",
                manager, "--port", str(port), *w]  # fmt: skip

    cache = work / "modelpack-cache"
    mp_env = {**env, "MODELPACK_CACHE_DIR": str(cache)}
    # as with the MLflow venv activated: `serve --env-manager local` runs `uvicorn` from PATH
    ml_env = {
        **env,
        "PATH": f"{mlflow_venv / 'bin'}{os.pathsep}{env['PATH']}",
        "MLFLOW_ENV_ROOT": str(work / "mlflow-envs"),
        "MLFLOW_TRACKING_URI": f"file://{work}/mlruns",
    }
    print("\n## Cold start: command to first successful prediction (s)", flush=True)
    cold: dict[str, float] = {}
    plans: list[tuple[str, Any, dict[str, str], dict[str, str]]] = [("modelpack, env not cached", modelpack_cmd, mp_env, {}),
             ("modelpack, env cached", modelpack_cmd, mp_env, {})]  # fmt: skip
    if not args.no_uncached_mlflow:
        plans += [("mlflow --env-manager uv, not cached", mlflow_cmd, ml_env, {"manager": "uv"}),
                  ("mlflow --env-manager uv, cached", mlflow_cmd, ml_env, {"manager": "uv"})]  # fmt: skip
    plans.append(("mlflow --env-manager local", mlflow_cmd, ml_env, {}))
    for label, make, e, extra in plans:
        port = free_port()
        server = Server(make(port, None, **extra), port, e, work / "cold.log")
        try:
            cold[label] = server.first_prediction()
        finally:
            server.stop()
        print(f"{label:<40} {cold[label]:8.2f}", flush=True)
    bodies = {}
    for rows in (1, 1000):
        bodies[rows] = work / f"body-{rows}.json"
        bodies[rows].write_text(json.dumps({"inputs": [ROW] * rows}))
    results: dict[tuple[str, str, int, int], dict[str, float]] = {}
    for workers in (None, 2):
        wlabel = "default workers" if workers is None else f"{workers} workers"
        print(f"\n## Throughput, {wlabel}: requests/s, p50/p99 ms", flush=True)
        print(
            f"{'server':<10} {'rows':>5} {'clients':>7} {'req/s':>9} {'p50':>8} {'p99':>8} {'errors':>6}"
        )
        for name, make, e in (("modelpack", modelpack_cmd, mp_env), ("mlflow", mlflow_cmd, ml_env)):
            port = free_port()
            server = Server(make(port, workers), port, e, work / f"{name}.log")
            try:
                server.first_prediction()
                for rows in (1, 1000):
                    for n in clients:
                        out = subprocess.run([sys.executable, str(HERE / "_serve_load.py"), server.url,
                                              str(bodies[rows]), str(n), str(args.seconds)],
                                             capture_output=True, text=True, check=True).stdout  # fmt: skip
                        r = json.loads(out)
                        results[wlabel, name, rows, n] = r
                        print(
                            f"{name:<10} {rows:>5} {n:>7} {r['rps']:9.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:>6}",
                            flush=True,
                        )
                rss = tree_rss(server.proc.pid)
                print(f"{name:<10} server RSS after the load: {rss / 2**20:.0f} MiB", flush=True)
            finally:
                server.stop()
    print("\n## Against the targets", flush=True)
    for wlabel in ("default workers", "2 workers"):
        for rows in (1, 1000):
            mp, ml = (
                results.get((wlabel, "modelpack", rows, 8)),
                results.get((wlabel, "mlflow", rows, 8)),
            )
            if mp and ml and ml["rps"]:
                print(
                    f"throughput at 8 clients, {rows} row(s), {wlabel}: modelpack {mp['rps'] / ml['rps']:.1f}x MLflow (target 2x)"
                )
    if "mlflow --env-manager uv, cached" in cold:
        for a, b in (("modelpack, env not cached", "mlflow --env-manager uv, not cached"),
                     ("modelpack, env cached", "mlflow --env-manager uv, cached")):  # fmt: skip
            print(
                f"cold start, {a}: {cold[a] / cold[b]:.2f}x MLflow's {b.split(', ', 1)[1]} (target <= 0.5x)"
            )
    print(
        f"cold start, modelpack env cached vs mlflow local: {cold['modelpack, env cached'] / cold['mlflow --env-manager local']:.2f}x"
    )
    return 0


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
