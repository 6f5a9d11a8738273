"""A throwaway virtual environment that installs a model the way a consumer would.

Used by ``modelpack publish --verify`` (:mod:`modelpack.verify`). Where the model's
dependencies come from depends on the registry:

- **The registry has an upstream** (its ``/health`` names one): everything resolves
  through the registry alone, exactly as a consumer with ``--index-url
  <registry>/simple/`` would install. The machine's pip and uv configuration is shut
  out (``PIP_CONFIG_FILE=os.devnull``, ``UV_NO_CONFIG=1``, and no ``PIP_*``/``UV_*``
  variables that choose an index), so a package the registry cannot serve fails here,
  not on the consumer's machine.
- **It has none** (a plain index, or a registry without ``--upstream``): public
  dependencies come from the user's own configured index (pip.conf and ``PIP_*`` for
  pip; uv.toml and ``UV_*`` for uv), with the registry added as an extra index for
  private dependencies.

Credentials for the registry go to pip and uv through a private ``netrc`` file
(``NETRC``), never in a URL on a command line that ``ps`` shows. uv is used when it is
installed (an environment in ~50 ms), else ``venv`` and pip; ``MODELPACK_VERIFY_TOOL=pip``
(or ``uv``) chooses. With pip, the environment is made ``--without-pip`` and the pip that
runs modelpack installs into it (``pip --python``, pip 22.3+): ``ensurepip`` would
otherwise take most of the time (about 3 s of every environment on an idle machine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from modelpack.building import uv_bin
from modelpack.config import Credentials

__all__ = ["CleanEnv", "Failure", "Resolution"]

# Variables kept when the registry alone must resolve: they say how to connect, not where.
_KEEP_PIP = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_TIMEOUT", "PIP_PROXY",
             "PIP_RETRIES", "PIP_CACHE_DIR", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}  # fmt: skip
_KEEP_UV = {"UV_CACHE_DIR", "UV_NO_CACHE", "UV_NATIVE_TLS", "UV_HTTP_TIMEOUT", "UV_LINK_MODE",
            "UV_CONCURRENT_DOWNLOADS", "UV_CONCURRENT_INSTALLS", "UV_OFFLINE"}  # fmt: skip

_PROBE = r"""
import json, re, sys, traceback
from importlib.metadata import entry_points
name, example = sys.argv[1], json.loads(sys.argv[2])
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
stage = "import"
try:
    eps = [ep for ep in entry_points(group="modelpack.models")
           if canon(getattr(ep.dist, "name", "") or ep.name) == canon(name)]
    if len(eps) != 1:
        raise LookupError(f"{name} has {len(eps)} entry points in group modelpack.models")
    load = eps[0].load()
    stage = "load()"
    model = load()
    loaded = type(model).__module__ + "." + type(model).__qualname__
    out = None
    if example is not None:
        stage = "predict(input_example)"
        out = model.predict(example)
        out = out.tolist() if hasattr(out, "tolist") else out
except BaseException:
    traceback.print_exc()
    print(json.dumps({"failed": stage}), flush=True)
    sys.exit(3)
print(json.dumps({"loaded": loaded, "prediction": out}, default=repr))
"""


@dataclass(frozen=True)
class Resolution:
    """Where a clean environment gets a model's dependencies."""

    registry_index: str
    """The registry's simple index URL, without credentials."""
    upstream: bool
    """The registry proxies an upstream index: it alone resolves everything."""
    credentials: Credentials | None = None

    def describe(self) -> str:
        if self.upstream:
            return f"the registry alone ({self.registry_index}, which has an upstream index)"
        return (
            f"your configured index, plus the registry ({self.registry_index}, which has no "
            "upstream index) for private ones"
        )


@dataclass(frozen=True)
class Failure:
    """A step in the clean environment failed."""

    fault: str
    """``"model"`` or ``"environment"``."""
    step: str
    """``create``, ``install``, ``import``, ``load()`` or ``predict(input_example)``."""
    output: str
    """The tool's last lines, credentials removed."""
    missing: str | None = None
    """The requirement that could not be resolved, when the tool named one."""
    unreachable: bool = False
    """An index did not answer."""


@dataclass
class CleanEnv:
    """A virtual environment under *root*, made and used under one :class:`Resolution`."""

    root: Path
    resolution: Resolution
    cache: bool = True
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        found = uv_bin() if os.environ.get("MODELPACK_VERIFY_TOOL", "uv") != "pip" else None
        self.uv = str(found) if found else None
        self.venv = self.root / "venv"
        self.python = str(self.venv / "bin" / "python")
        self.outer_pip = not self.uv and _pip_with_python_option()
        self.env = self._environment()

    @property
    def tool(self) -> str:
        return "uv" if self.uv else "pip"

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}  # fmt: skip
        if self.resolution.upstream:
            for key in list(env):
                if (key.startswith("PIP_") and key not in _KEEP_PIP) or (
                    key.startswith("UV_") and key not in _KEEP_UV
                ):
                    del env[key]
            env["PIP_CONFIG_FILE"] = os.devnull
            env["UV_NO_CONFIG"] = "1"
        creds = self.resolution.credentials
        if creds is not None:
            env["NETRC"] = str(self._netrc(creds, env.get("NETRC")))
        return env

    def _netrc(self, creds: Credentials, theirs: str | None) -> Path:
        """A private netrc with the registry's credentials, then the user's own entries."""
        host = urlsplit(self.resolution.registry_index).hostname or ""
        text = f"machine {host}\nlogin {creds.username}\npassword {creds.password}\n"
        mine = Path(theirs) if theirs else Path.home() / ".netrc"
        if mine.is_file():
            text += "\n" + mine.read_text(encoding="utf-8", errors="replace")
        path = self.root / "netrc"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def create(self) -> Failure | None:
        """Make the environment (with the Python running modelpack)."""
        if self.uv:
            cmd = [self.uv, "venv", "-q", "--python", sys.executable, str(self.venv)]
        elif self.outer_pip:
            cmd = [sys.executable, "-m", "venv", "--without-pip", str(self.venv)]
        else:
            cmd = [sys.executable, "-m", "venv", str(self.venv)]
        proc = self._run("create", cmd)
        if proc.returncode != 0:
            return Failure("environment", "create", self._tail(proc))
        return None

    def install(self, requirement: str) -> Failure | None:
        """Install *requirement* (a wheel path, ``name==version`` or ``name @ url``)."""
        index = self.resolution.registry_index
        where = ["--index-url", index] if self.resolution.upstream else ["--extra-index-url", index]
        if self.uv:
            cmd = [self.uv, "pip", "install", "-q", "--python", self.python, *where, requirement]
            cmd[3:3] = [] if self.cache else ["--no-cache"]
        else:
            pip = ([sys.executable, "-m", "pip", "--python", self.python] if self.outer_pip
                   else [self.python, "-m", "pip"])  # fmt: skip
            cmd = [*pip, "install", "-q", "--disable-pip-version-check", *where, requirement]
            cmd[len(pip) + 1 : len(pip) + 1] = [] if self.cache else ["--no-cache-dir"]
        proc = self._run("install", cmd)
        if proc.returncode == 0:
            return None
        output = self._tail(proc, 12)
        return Failure(
            "environment", "install", output, _missing(proc.stderr + proc.stdout),
            _unreachable(proc.stderr + proc.stdout),
        )  # fmt: skip

    def probe(self, name: str, example: Any) -> dict[str, Any] | Failure:
        """Import the model through its entry point, ``load()`` it, predict *example*."""
        proc = self._run(
            "import and predict",
            [self.python, "-I", "-c", _PROBE, name, json.dumps(example)],
        )
        lines = proc.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else {}
        except ValueError:
            result = {}
        if proc.returncode != 0 or not isinstance(result, dict) or "loaded" not in result:
            step = str(result.get("failed", "import")) if isinstance(result, dict) else "import"
            return Failure("model", step, self._tail(proc))
        return result

    def _run(self, what: str, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        start = time.perf_counter()
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=self.root)
        finally:
            self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - start

    def _tail(self, proc: subprocess.CompletedProcess[str], lines: int = 8) -> str:
        output = proc.stderr or proc.stdout
        creds = self.resolution.credentials
        if creds is not None:  # pip redacts URLs it prints; make sure nothing else leaks
            for secret in {creds.password, quote(creds.password, safe="")}:
                output = output.replace(secret, "****")
        text = [line for line in output.strip().splitlines() if line.strip()]
        return "\n".join(f"  {line}" for line in text[-lines:])


# pip: "No matching distribution found for nosuch-pkg>=1"; uv: "Because nosuch-pkg was
# not found in the package registry" / "Because there are no versions of nosuch-pkg>=1".
_MISSING = (
    re.compile(r"No matching distribution found for ([^\s]+)"),
    re.compile(r"Because ([^\s]+) was not found in the package registry"),
    re.compile(r"Because there are no versions of ([^\s]+?)(?: and|,|\s)"),
)
_UNREACHABLE = re.compile(
    r"Connection refused|Failed to establish a new connection|NewConnectionError|"
    r"Could not fetch URL|error sending request|Failed to fetch|dns error|timed out",
    re.IGNORECASE,
)


def _pip_with_python_option() -> bool:
    """The interpreter running modelpack has a pip that can install into another
    environment (``--python``, pip 22.3+)."""
    if importlib.util.find_spec("pip") is None:
        return False
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        return Version(version("pip")) >= Version("22.3")
    except PackageNotFoundError:
        return False


def _missing(output: str) -> str | None:
    for pattern in _MISSING:
        found = pattern.search(output)
        if found:
            return found.group(1).rstrip(".,")
    return None


def _unreachable(output: str) -> bool:
    return bool(_UNREACHABLE.search(output))
