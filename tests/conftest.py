from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import api_contract
import bcrypt
import pytest
from registry_support import DAVE, PASSWORDS

from support import TEST_BUCKET, Registry, S3Server, Storage, stock_pypiserver, uv_bin

# The packaging tools nobody here wrote, for the tests that drive them (consumer recipes,
# publishers). pdm 2.29 imports hishel.SyncSqliteStorage, which hishel 2.0 removed
# ("module 'hishel' has no attribute 'SyncSqliteStorage'").
PACKAGING_TOOLS = ("poetry>=2,<3", "pdm>=2.20,<3", "hishel<2", "pip-tools>=7,<8", "hatch>=1.13,<2",
                   "flit>=3.9,<5")  # fmt: skip
PACKAGING_COMMANDS = ("poetry", "pdm", "pip-compile", "hatch", "flit")


@pytest.fixture(autouse=True, scope="session")
def _digest_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Builds in tests keep their weight-digest cache out of the user's ~/.cache."""
    old = os.environ.get("MODELPACK_CACHE_DIR")
    os.environ["MODELPACK_CACHE_DIR"] = str(tmp_path_factory.mktemp("modelpack-cache"))
    yield
    if old is None:
        del os.environ["MODELPACK_CACHE_DIR"]
    else:
        os.environ["MODELPACK_CACHE_DIR"] = old


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A fresh registry (anonymous uploads, loopback) on a free port, stopped afterwards."""
    with Registry(tmp_path / "registry-data") as reg:
        yield reg


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3 server (moto, ``support.S3Server``) for the whole run, with TEST_BUCKET.
    Started only when a test asks for a bucket."""
    with S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        server.bucket(TEST_BUCKET)
        yield server


@pytest.fixture(params=["folder", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """The registry's state on each backend in turn (issue 16: every behaviour test runs
    on both): a data folder, or a fresh prefix of TEST_BUCKET on the session's S3 server.
    A test module opts in by taking this fixture (or ``registry`` defined on it)."""
    if request.param == "folder":
        return Storage.folder(tmp_path / "data")
    s3: S3Server = request.getfixturevalue("s3_server")
    return Storage.fresh(s3, workdir=tmp_path)


@pytest.fixture(scope="module", params=["folder", "s3"])
def module_storage(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Storage:  # fmt: skip
    """``storage`` for a module-scoped registry (one per backend, shared by its tests)."""
    workdir = tmp_path_factory.mktemp("shared")
    if request.param == "folder":
        return Storage.folder(workdir / "data")
    s3: S3Server = request.getfixturevalue("s3_server")
    return Storage.fresh(s3, workdir=workdir, label="shared")


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    """alice, bob and carol (bcrypt; PASSWORDS) and dave (apr1), as an htpasswd file."""
    path = tmp_path / "htpasswd"
    lines = [
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, pw in PASSWORDS.items()
    ]
    path.write_text("\n".join([*lines, DAVE]) + "\n")
    return path


@pytest.fixture(scope="session")
def packaging_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with poetry, pdm, pip-compile, hatch, flit and uv, to put first on PATH.

    They are installed once per test run into a tool venv with uv from the machine's
    package index (1.5 s with a warm uv cache), shared by every test file that needs them.
    """
    root = tmp_path_factory.mktemp("packaging-tools")
    started = time.monotonic()
    venv = root / "venv"
    uv = uv_bin()
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                    *PACKAGING_TOOLS], check=True, timeout=300)  # fmt: skip
    tools = root / "bin"
    tools.mkdir()
    for name in PACKAGING_COMMANDS:
        (tools / name).symlink_to(venv / "bin" / name)
    (tools / "uv").symlink_to(uv)
    print(f"tool venv ({', '.join(PACKAGING_COMMANDS)}): {time.monotonic() - started:.1f} s")
    return tools


@pytest.fixture
def plain_index(tmp_path: Path) -> Iterator[str]:
    """Stock pypiserver: a standard index with no modelpack API, no PEP 691/658."""
    (tmp_path / "pkgs").mkdir()
    with stock_pypiserver(tmp_path / "pkgs") as url:
        yield url


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """How much of openapi.json the tests produced (see api_contract.py).

    ``MODELPACK_API_COVERAGE=list`` lists the documented answers no test produced;
    ``=strict`` lists them and fails the run if there are any (for full runs).
    """
    doc = api_contract.DOCUMENTS.get("last")
    listing = os.environ.get("MODELPACK_API_COVERAGE") in ("list", "strict")
    if doc is None or not (api_contract.SEEN or listing):
        return
    missing = sorted(api_contract.documented(doc) - api_contract.SEEN)
    terminalreporter.write_sep("-", f"API contract: {len(api_contract.SEEN)} documented answers "
                               f"produced and valid, {len(missing)} never produced")  # fmt: skip
    if listing:
        for template, method, status in missing:
            terminalreporter.write_line(
                f"  never produced: {method.upper()} {template} -> {status}"
            )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``MODELPACK_API_COVERAGE=strict``, an answer never produced fails the run."""
    doc = api_contract.DOCUMENTS.get("last")
    if doc is None or os.environ.get("MODELPACK_API_COVERAGE") != "strict":
        return
    if api_contract.documented(doc) - api_contract.SEEN and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
