"""``modelpack publish --verify``: install what was just published into a clean virtual
environment, exactly as a consumer would, and call ``load()`` and ``predict``.

The environment is made with uv when it is available (about a second), else with
``venv`` + pip. It sees the registry as its index (plus whatever ``PIP_*`` / ``UV_*``
settings the user has, e.g. an extra index for public dependencies), and never
modelpack itself: a model must work with nothing but its own declared dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from modelpack.building import uv_bin
from modelpack.config import Credentials
from modelpack.errors import VerificationError

__all__ = ["Verified", "verify_published"]

_PROBE = r"""
import json, sys
from importlib.metadata import entry_points
name, example = sys.argv[1], json.loads(sys.argv[2])
eps = [ep for ep in entry_points(group="modelpack.models")]
if len(eps) != 1:
    sys.exit(f"expected one modelpack.models entry point, found {[ep.name for ep in eps]}")
model = eps[0].load()()
if example is None:
    print(json.dumps({"loaded": type(model).__module__ + "." + type(model).__qualname__}))
else:
    out = model.predict(example)
    try:
        out = out.tolist()
    except AttributeError:
        pass
    print(json.dumps({"loaded": type(model).__module__ + "." + type(model).__qualname__,
                      "prediction": out}, default=repr))
"""


@dataclass(frozen=True)
class Verified:
    loaded: str
    """``module.Class`` of the object ``load()`` returned."""
    prediction: Any
    """What ``predict(input_example)`` returned, or ``None`` without an input example."""


def _input_example(wheel: Path) -> Any:
    with zipfile.ZipFile(wheel) as zf:
        name = next((n for n in zf.namelist() if n.endswith(".dist-info/modelpack.json")), None)
        return json.loads(zf.read(name)).get("input_example") if name else None


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def verify_published(wheel: Path, name: str, version: str, registry: str) -> Verified:
    """Install ``name==version`` from *registry* into a fresh environment and predict.

    :raises VerificationError: the install, ``load()`` or ``predict`` failed; the
        message says which, with the tool's last lines, and how to yank the version.
    """
    example = _input_example(wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    from modelpack.config import resolve_credentials
    from modelpack.index import IndexClient

    credentials = resolve_credentials(registry)
    index = IndexClient(registry, credentials).simple_url
    # The index goes to pip and uv through the environment, never the command line: with
    # credentials (a registry with --protect-reads) the URL carries them, and `ps` shows
    # every user a command line but not another user's environment.
    env["PIP_INDEX_URL"] = env["UV_DEFAULT_INDEX"] = _with_credentials(index, credentials)
    env.pop("UV_INDEX_URL", None)
    yank = f"`modelpack yank {name}=={version} --reason '...'`"
    with tempfile.TemporaryDirectory(prefix="modelpack-verify-") as tmp:
        venv = Path(tmp) / "venv"
        found = uv_bin()
        uv = str(found) if found else None
        python = str(venv / "bin" / "python")
        if uv:
            steps = [
                [uv, "venv", "-q", "--python", sys.executable, str(venv)],
                [uv, "pip", "install", "-q", "--python", python, "--no-cache",
                 f"{name}=={version}"],
            ]  # fmt: skip
        else:
            steps = [
                [sys.executable, "-m", "venv", str(venv)],
                [python, "-m", "pip", "install", "-q", "--no-cache-dir", f"{name}=={version}"],
            ]  # fmt: skip
        for step in steps:
            proc = _run(step, env)
            if proc.returncode != 0:
                raise VerificationError(
                    f"{name} {version} is published but does not install in a clean environment:\n"
                    f"{_tail(proc, credentials)}\nfix the model, publish a new version and yank this one with {yank}"
                )
        proc = subprocess.run(
            [python, "-c", _PROBE, name, json.dumps(example)],
            capture_output=True, text=True, env=env, cwd=tmp,
        )  # fmt: skip
        if proc.returncode != 0:
            what = "load() or predict(input_example)" if example is not None else "load()"
            raise VerificationError(
                f"{name} {version} is published and installs, but {what} fails in a clean "
                f"environment:\n{_tail(proc, credentials)}\nfix the model, publish a new version and yank "
                f"this one with {yank}"
            )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        return Verified(result["loaded"], result.get("prediction"))


def _with_credentials(url: str, credentials: Credentials | None) -> str:
    if credentials is None:
        return url
    parts = urlsplit(url)
    auth = f"{quote(credentials.username, safe='')}:{quote(credentials.password, safe='')}"
    return urlunsplit((parts.scheme, f"{auth}@{parts.netloc}", parts.path, "", ""))


def _tail(
    proc: subprocess.CompletedProcess[str], credentials: Credentials | None, lines: int = 8
) -> str:
    output = proc.stderr or proc.stdout
    if credentials is not None:  # pip redacts URLs it prints; make sure nothing else leaks
        for secret in {credentials.password, quote(credentials.password, safe="")}:
            output = output.replace(secret, "****")
    text = output.strip().splitlines()
    return "\n".join(f"  {line}" for line in text[-lines:])
