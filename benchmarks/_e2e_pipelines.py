"""The pipelines of the end-to-end benchmark: each one run packages, publishes, installs
and loads the same weights file, to the first prediction, against a server of its own
started on a fresh data folder (server start-up is not timed).

Every step is a command a user would type; :func:`_e2e_measure.run_step` times it and
samples the memory of the client's and the server's process trees. Each step has a
stage (package, publish, install, predict); a pipeline's total is the sum of its steps
along one consumer path (pip for modelpack, whose uv path is reported beside it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _e2e_measure import StepResult, run_step

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent  # the dev venv: modelpack-registry, pypi-server, uv
NUMPY = "numpy==2.4.6"
MLFLOW = "mlflow==3.17.2"
PREDICT_ROW = "[[1.0, 2.0, 3.0]]"


@dataclass
class Env:
    """What every pipeline shares within one invocation of the benchmark."""

    work: Path  # temp folder of this invocation
    weights: Path  # the .npy file, made once
    size: int
    wheelhouse: Path  # numpy wheel, so installs do not time the network
    tools: Path  # numpy + modelpack + modelpack-registry, from a snapshot of HEAD
    mlflow: Path | None  # venv with MLflow, cached across invocations
    timeout: float
    log: Path

    def clean_env(self, **extra: str) -> dict[str, str]:
        """os.environ without pip/uv configuration that would add indexes to an install."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV", "MLFLOW_"))}  # fmt: skip
        env["PIP_CONFIG_FILE"] = os.devnull
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PATH"] = f"{self.tools / 'bin'}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env


@dataclass
class Run:
    """The steps of one run of one pipeline, in order."""

    steps: dict[str, tuple[str, StepResult]] = field(
        default_factory=dict
    )  # name -> (stage, result)
    total_steps: list[str] = field(default_factory=list)

    def add(self, name: str, stage: str, result: StepResult, in_total: bool = True) -> None:
        self.steps[name] = (stage, result)
        if in_total:
            self.total_steps.append(name)

    @property
    def total(self) -> float:
        return sum(self.steps[n][1].seconds for n in self.total_steps)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(cmd: Sequence[object], url: str, log: Path, env: dict[str, str] | None = None,
           ready: float = 120) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """Start *cmd* in its own process group, wait until *url* answers, stop it after."""
    with log.open("ab") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + ready
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {cmd}; see {log}") from None
                time.sleep(0.1)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _predict_code(module: str) -> str:
    return f"import {module}; print({module}.load().predict({PREDICT_ROW}))"


# --- raw floor -------------------------------------------------------------------------


def run_floor(env: Env, scratch: Path) -> Run:
    """cp + HTTP PUT + HTTP GET + np.load: what moving the bytes costs at least."""
    run, port = Run(), free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, HERE / "_e2e_floor_server.py", scratch / "server", port]
    with server(cmd, f"{base}/health", env.log) as srv:
        kw: dict[str, Any] = {"server_pid": srv.pid, "timeout": env.timeout, "log": env.log}
        staged, got = scratch / "stage" / "weights.npy", scratch / "consumer" / "weights.npy"
        staged.parent.mkdir()
        got.parent.mkdir()
        run.add("cp weights", "package", run_step(["cp", env.weights, staged], **kw))
        curl = ["curl", "-sS", "--fail", "-H", "Expect:"]
        run.add("HTTP PUT (curl)", "publish",
                run_step([*curl, "-T", staged, f"{base}/weights.npy"], **kw))  # fmt: skip
        run.add("HTTP GET (curl)", "install",
                run_step([*curl, "-o", got, f"{base}/weights.npy"], **kw))  # fmt: skip
        code = (f"import numpy as np; w = np.load({str(got)!r}); "
                f"print((np.asarray({PREDICT_ROW}, dtype=np.float32) @ w[:3]).tolist())")  # fmt: skip
        run.add("np.load + predict", "predict",
                run_step([env.tools / "bin" / "python", "-c", code], **kw))  # fmt: skip
    return run


# --- modelpack ---------------------------------------------------------------------------

MODEL_INIT = '''"""model-bench: a float32 array saved with np.save, loaded with np.load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["ArrayModel", "load"]

WEIGHTS = Path(__file__).parent / "weights" / "weights.npy"


class ArrayModel:
    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[float]:
        x = np.asarray(rows, dtype=np.float32)
        return (x @ self.weights[: x.shape[1]]).tolist()


def load() -> ArrayModel:
    return ArrayModel(np.load(WEIGHTS))
'''


def make_project(env: Env, scratch: Path, name: str = "model-bench") -> Path:
    """`modelpack new`, then the numpy model: __init__.py, dependencies, no pickle."""
    subprocess.run([env.tools / "bin" / "modelpack", "new", name, "-o", scratch, "--no-input"],
                   check=True, capture_output=True, env=env.clean_env())  # fmt: skip
    project = scratch / name
    package = project / "src" / name.replace("-", "_")
    (package / "__init__.py").write_text(MODEL_INIT)
    (package / "model.py").unlink()
    for stale in ("train.py", "tests"):
        path = project / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert "dependencies = []" in text, "the template's pyproject.toml changed"
    text = text.replace("dependencies = []", 'dependencies = ["numpy>=1.24"]')
    text = text.replace('include = ["src", "tests", "train.py", "README.md"]',
                        'include = ["src", "README.md"]')  # fmt: skip
    pyproject.write_text(text)
    # The starter model train.py wrote (a pickle of model.py's class, gone above): the
    # pickle check of `build` would refuse it, and this model has its own weights.
    shutil.rmtree(package / "weights", ignore_errors=True)
    (package / "weights").mkdir()
    return project


def run_modelpack(env: Env, scratch: Path) -> Run:
    run, port = Run(), free_port()
    registry = f"http://127.0.0.1:{port}"
    project = make_project(env, scratch)
    e = env.clean_env()
    cmd = [
        env.tools / "bin" / "modelpack-registry",
        "serve",
        "--data",
        scratch / "registry-data",
        "--port",
        port,
    ]
    with server(cmd, f"{registry}/health", env.log) as srv:
        kw: dict[str, Any] = {
            "server_pid": srv.pid,
            "timeout": env.timeout,
            "log": env.log,
            "env": e,
        }
        mp = env.tools / "bin" / "modelpack"
        weights = project / "src" / "model_bench" / "weights" / "weights.npy"
        run.add("cp weights", "package", run_step(["cp", env.weights, weights], **kw))
        run.add("modelpack build", "package", run_step([mp, "build", project], **kw))
        run.add("modelpack publish", "publish",
                run_step([mp, "publish", project, "--registry", registry], **kw))  # fmt: skip
        index = ["--index-url", f"{registry}/simple/", "--find-links", env.wheelhouse]
        pip_venv, uv_venv = scratch / "consumer-pip", scratch / "consumer-uv"
        subprocess.run([sys.executable, "-m", "venv", pip_venv], check=True, env=e)
        subprocess.run([BIN / "uv", "venv", "-q", "--python", sys.executable, uv_venv],
                       check=True, env=e)  # fmt: skip
        run.add("pip install", "install",
                run_step([pip_venv / "bin" / "pip", "install", "-q", "--no-cache-dir", *index,
                          "model-bench==0.1.0"], **kw))  # fmt: skip
        run.add("first prediction (pip venv)", "predict",
                run_step([pip_venv / "bin" / "python", "-c", _predict_code("model_bench")],
                         cwd=scratch, **kw))  # fmt: skip
        uv_env = env.clean_env(UV_CACHE_DIR=str(scratch / "uv-cache"))
        run.add("uv pip install", "install",
                run_step([BIN / "uv", "pip", "install", "-q", "--python", uv_venv / "bin" / "python",
                          *index, "model-bench==0.1.0"], **{**kw, "env": uv_env}),
                in_total=False)  # fmt: skip
        run.add("first prediction (uv venv)", "predict",
                run_step([uv_venv / "bin" / "python", "-c", _predict_code("model_bench")],
                         cwd=scratch, **kw), in_total=False)  # fmt: skip
    return run


# --- naive wheel -------------------------------------------------------------------------


def run_naive(env: Env, scratch: Path) -> Run:
    """python -m build (hatchling deflates the weights) + twine to stock pypiserver + pip."""
    run, port = Run(), free_port()
    index = f"http://127.0.0.1:{port}"
    project = make_project(env, scratch)
    (scratch / "packages").mkdir()
    e = env.clean_env(TWINE_USERNAME="bench", TWINE_PASSWORD="bench")
    cmd = [BIN / "pypi-server", "run", "-p", port, "-a", ".", "-P", ".", "--disable-fallback",
           scratch / "packages"]  # fmt: skip
    with server(cmd, f"{index}/simple/", env.log) as srv:
        kw: dict[str, Any] = {
            "server_pid": srv.pid,
            "timeout": env.timeout,
            "log": env.log,
            "env": e,
        }
        weights = project / "src" / "model_bench" / "weights" / "weights.npy"
        run.add("cp weights", "package", run_step(["cp", env.weights, weights], **kw))
        py = env.tools / "bin" / "python"
        run.add("python -m build --wheel", "package",
                run_step([py, "-m", "build", "--wheel", "--installer", "uv", project], **kw))  # fmt: skip
        wheels = sorted((project / "dist").glob("*.whl"))
        run.add("twine upload", "publish",
                run_step([py, "-m", "twine", "upload", "--repository-url", f"{index}/", *wheels],
                         **kw))  # fmt: skip
        venv = scratch / "consumer-pip"
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=e)
        run.add("pip install", "install",
                run_step([venv / "bin" / "pip", "install", "-q", "--no-cache-dir", "--index-url",
                          f"{index}/simple/", "--find-links", env.wheelhouse, "model-bench==0.1.0"],
                         **kw))  # fmt: skip
        run.add("first prediction", "predict",
                run_step([venv / "bin" / "python", "-c", _predict_code("model_bench")],
                         cwd=scratch, **kw))  # fmt: skip
    return run


# --- MLflow ------------------------------------------------------------------------------


def run_mlflow(env: Env, scratch: Path) -> Run:
    """Tracking server (sqlite, proxied artifacts); log_model + registration; load_model."""
    assert env.mlflow is not None
    run, port = Run(), free_port()
    uri = f"http://127.0.0.1:{port}"
    py = env.mlflow / "bin" / "python"
    e = env.clean_env(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    e["PATH"] = f"{env.mlflow / 'bin'}{os.pathsep}{e['PATH']}"
    cmd = [env.mlflow / "bin" / "mlflow", "server", "--host", "127.0.0.1", "--port", port,
           "--backend-store-uri", f"sqlite:///{scratch / 'mlflow.db'}",
           "--artifacts-destination", scratch / "artifacts", "--serve-artifacts"]  # fmt: skip
    client = HERE / "_e2e_mlflow_client.py"
    with server(cmd, f"{uri}/health", env.log, env=e) as srv:
        kw: dict[str, Any] = {
            "server_pid": srv.pid,
            "timeout": env.timeout,
            "log": env.log,
            "env": e,
        }
        logged = run_step([py, client, "log", env.weights, "bench-model"], cwd=scratch, **kw)
        np_load = json.loads(logged.stdout.strip().splitlines()[-1])["np_load_seconds"]
        logged.seconds -= np_load  # the data scientist has the array in memory already
        run.add("log_model + register", "publish", logged)
        consumer = scratch / "consumer"
        consumer.mkdir()
        run.add("load_model (registry) + predict", "predict",
                run_step([py, client, "load", "bench-model"], cwd=consumer, **kw))  # fmt: skip
    return run


PIPELINES: dict[str, Callable[[Env, Path], Run]] = {
    "floor": run_floor,
    "modelpack": run_modelpack,
    "naive": run_naive,
    "mlflow": run_mlflow,
}
