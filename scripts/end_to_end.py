#!/usr/bin/env python3
"""The main job, end to end, on a fresh machine (README's first command).

Starts a registry on a temporary folder and a free loopback port, scaffolds a model,
builds and publishes it, installs it into a clean virtual environment with plain pip,
predicts with it, and stops the registry. Every step is the command a user would type.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    shown = " ".join(shlex.quote(str(c)) for c in cmd)
    print(f"\n$ {shown}", flush=True)
    start = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, text=True, capture_output=True)
    out = (proc.stdout + proc.stderr).strip()
    if out:
        print(out)
    if proc.returncode != 0:
        sys.exit(f"step failed with exit status {proc.returncode}: {shown}")
    print(f"  ({time.monotonic() - start:.1f} s)")
    return proc.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="modelpack-demo-"))
    port = free_port()
    registry = f"http://127.0.0.1:{port}"
    log = (work / "registry.log").open("wb")
    serve = [str(BIN / "modelpack-registry"), "serve", "--data", str(work / "registry-data"),
             "--port", str(port)]  # fmt: skip
    print(f"$ {' '.join(serve)} &")
    server = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{registry}/health", timeout=1):
                    break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"the registry did not start; see {work / 'registry.log'}")
                time.sleep(0.05)
        mp = BIN / "modelpack"
        run(mp, "new", "model-demo", "-o", work, "--no-input")
        project = work / "model-demo"
        run(sys.executable, "train.py", cwd=project)
        wheel = run(mp, "build", project)
        run(mp, "publish", project, "--registry", registry)
        consumer = work / "consumer-venv"
        run(sys.executable, "-m", "venv", consumer)
        env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
        run(consumer / "bin" / "pip", "install", "--no-cache-dir", "--index-url",
            f"{registry}/simple/", "model-demo==0.1.0", env=env)  # fmt: skip
        code = (
            "import model_demo; m = model_demo.load(); "
            "print(type(m).__module__ + '.' + type(m).__qualname__, m.predict([[1.0, 2.0, 3.0]]))"
        )
        out = run(consumer / "bin" / "python", "-c", code, cwd=consumer)
        print(f"\nOK: built {Path(wheel).name}, published to {registry}, installed with pip "
              f"into a clean venv, predicted: {out}")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        print(f"registry stopped; files kept in {work}")


if __name__ == "__main__":
    main()
