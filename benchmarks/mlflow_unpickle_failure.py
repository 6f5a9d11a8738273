#!/usr/bin/env python3
"""MLflow's unpickling failure, reproduced; and the same class shipped by modelpack.

    .venv/bin/python benchmarks/mlflow_unpickle_failure.py

1. Starts an MLflow 3.17.2 tracking server (sqlite backend, proxied artifacts) on a temp
   folder, in the benchmark's MLflow venv (``~/.cache/modelpack-bench/mlflow-venv``, made
   on first use as ``end_to_end.py`` makes it).
2. Producer: ``mlflow.pyfunc.log_model`` of ``my_model_code.MyModel`` (a PythonModel whose
   class lives in ``my_model_code.py`` beside this script) with registration. It succeeds.
3. Consumer: ``mlflow.pyfunc.load_model("models:/unpickle-demo/1")`` in a clean process
   whose sys.path does not hold ``my_model_code``. It fails with ModuleNotFoundError:
   cloudpickle stored the class by reference (module + name), not its code.
4. modelpack: the same ``my_model_code.py`` goes inside a model package made by
   ``modelpack new``; the pickled instance refers to ``model_demo.my_model_code.MyModel``;
   ``modelpack build`` + ``publish`` to ``modelpack-registry serve``; ``pip install`` into
   a fresh venv; ``load()`` unpickles it and predicts, with nothing else on sys.path.

Exit status 0 when MLflow fails as described and modelpack works; 1 otherwise.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _e2e_pipelines import BIN, free_port, server  # noqa: E402
from end_to_end import ensure_mlflow  # noqa: E402

PRODUCER = """
import mlflow
from my_model_code import MyModel
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(name="model", python_model=MyModel(scale=2.0),
                                   registered_model_name="unpickle-demo")
print("log_model succeeded:", info.model_uri)
"""
CONSUMER = """
import sys, mlflow
print("consumer sys.path:", sys.path)
model = mlflow.pyfunc.load_model("models:/unpickle-demo/1")
print(model.predict([[1.0, 2.0, 3.0]]))
"""
LOAD = '''
"""model-demo: MyModel, pickled; its class ships in this wheel."""
import pickle
from pathlib import Path

from model_demo.my_model_code import MyModel

__all__ = ["MyModel", "load"]


def load() -> MyModel:
    return pickle.loads((Path(__file__).parent / "weights" / "model.pkl").read_bytes())
'''


def sh(cmd: list[str | Path], cwd: Path | None = None,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    print("$", " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, cwd=cwd, env=env)
    print(textwrap.indent((proc.stdout + proc.stderr).strip(), "  "), flush=True)
    return proc


def mlflow_half(work: Path) -> bool:
    venv = ensure_mlflow()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    cmd = [venv / "bin" / "mlflow", "server", "--host", "127.0.0.1", "--port", port,
           "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
           "--artifacts-destination", work / "artifacts", "--serve-artifacts"]  # fmt: skip
    print(f"\n## MLflow 3.17.2: {' '.join(map(str, cmd))}")
    with server(cmd, f"{uri}/health", work / "mlflow-server.log", env=env):
        print("\n### producer (my_model_code.py importable, as on the data scientist's machine)")
        made = sh([venv / "bin" / "python", "-c", PRODUCER], cwd=HERE,
                  env={**env, "PYTHONPATH": str(HERE)})  # fmt: skip
        if made.returncode != 0:
            print("unexpected: log_model failed")
            return False
        consumer = work / "consumer"
        consumer.mkdir()
        print("\n### consumer (a clean process: the model code is not on sys.path)")
        used = sh([venv / "bin" / "python", "-c", CONSUMER], cwd=consumer, env=env)
    failed = used.returncode != 0 and "ModuleNotFoundError: No module named 'my_model_code'" in (
        used.stdout + used.stderr
    )
    print(f"\n=> MLflow consumer {'FAILED with ModuleNotFoundError' if failed else 'did not fail'}")
    return failed


def modelpack_half(work: Path) -> bool:
    print("\n## modelpack: the same class inside the wheel")
    mp = BIN / "modelpack"
    if sh([mp, "new", "model-demo", "-o", work, "--no-input"]).returncode:
        return False
    project = work / "model-demo"
    package = project / "src" / "model_demo"
    shutil.copy(HERE / "my_model_code.py", package / "my_model_code.py")
    (package / "model.py").unlink()
    (package / "__init__.py").write_text(LOAD)
    (project / "train.py").unlink()
    shutil.rmtree(project / "tests")
    sys.path.insert(0, str(project / "src"))
    # The class as the package has it; model_demo exists only once `modelpack new` above
    # has made it, under the temp folder just put on sys.path.
    from model_demo.my_model_code import MyModel  # type: ignore[import-not-found]

    (package / "weights").mkdir(exist_ok=True)
    (package / "weights" / "model.pkl").write_bytes(pickle.dumps(MyModel(scale=2.0), protocol=4))
    port = free_port()
    registry = f"http://127.0.0.1:{port}"
    cmd = [BIN / "modelpack-registry", "serve", "--data", work / "registry-data", "--port", port]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    with server(cmd, f"{registry}/health", work / "registry.log"):
        ok = sh([mp, "build", project]).returncode == 0
        ok = ok and sh([mp, "publish", project, "--registry", registry]).returncode == 0
        venv = work / "consumer-venv"
        ok = ok and sh([sys.executable, "-m", "venv", venv]).returncode == 0
        ok = ok and sh([venv / "bin" / "pip", "install", "-q", "--no-cache-dir", "--index-url",
                        f"{registry}/simple/", "model-demo==0.1.0"], env=env).returncode == 0  # fmt: skip
        code = ("import sys, model_demo; print('consumer sys.path:', sys.path); "
                "m = model_demo.load(); print(type(m), m.predict(None, [[1.0, 2.0, 3.0]]))")  # fmt: skip
        consumer = work / "consumer"
        consumer.mkdir(exist_ok=True)
        ok = ok and sh([venv / "bin" / "python", "-c", code], cwd=consumer, env=env).returncode == 0
    print(f"\n=> modelpack consumer {'loaded and predicted' if ok else 'FAILED'}")
    return ok


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="mlflow-unpickle-"))
    try:
        failed = mlflow_half(work)
        works = modelpack_half(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if failed and works else 1


if __name__ == "__main__":
    sys.exit(main())
