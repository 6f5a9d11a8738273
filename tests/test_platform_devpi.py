"""The client is not tied to modelpack-registry: publish to, list and install from devpi.

devpi-server comes from PyPI into its own throwaway venv (made with uv once per test
session), runs on a free loopback port with its server folder in tmp, and gets a user
``alice`` and a non-volatile index ``alice/dev`` (published versions are immutable, as
in our registry). Its URL shapes differ from ours:

    index (twine upload URL)   http://HOST/alice/dev/
    simple API                 http://HOST/alice/dev/+simple/    (not .../simple/)

``modelpack publish --registry http://HOST/alice/dev`` uploads through twine to the
index URL; the client finds the simple API under ``+simple/`` when ``simple/`` is a 404,
and tells devpi's JSON 404s from modelpack-registry's API answers.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from registry_support import make_wheel

from support import Venv, clean_env, free_port, uv_bin

BIN = Path(sys.executable).parent
USER, PASSWORD = "alice", "s3cret"
MODEL = "devpi-model"


@pytest.fixture(scope="session")
def devpi_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """devpi-server and devpi-client in a venv of their own, made once per session."""
    venv = Venv(tmp_path_factory.mktemp("devpi-venv") / "venv", tool="uv")
    subprocess.run(
        [uv_bin(), "pip", "install", "-q", "--python", str(venv.python),
         "devpi-server>=6.10,<7", "devpi-client>=7,<8"],
        check=True, env=clean_env(), timeout=600,
    )  # fmt: skip
    return venv.path / "bin"


def devpi_env() -> dict[str, str]:
    env = clean_env()
    env["PYTHONWARNINGS"] = "ignore"  # devpi imports pkg_resources
    return env


@pytest.fixture(scope="module")
def devpi(devpi_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A devpi-server with user alice and index alice/dev; yields the index URL."""
    root = tmp_path_factory.mktemp("devpi")
    server_dir, client_dir = root / "server", root / "client"
    env = devpi_env()
    subprocess.run(
        [str(devpi_bin / "devpi-init"), "--serverdir", str(server_dir), "--no-root-pypi"],
        check=True, capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    port = free_port()
    log = (root / "devpi-server.log").open("wb")
    proc = subprocess.Popen(
        [str(devpi_bin / "devpi-server"), "--serverdir", str(server_dir),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "devpi-server.log").read_text()
            try:
                if requests.get(f"{url}/+api", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "devpi-server did not start"
            time.sleep(0.1)

        def client(*args: str) -> None:
            subprocess.run(
                [str(devpi_bin / "devpi"), *args, "--clientdir", str(client_dir)],
                check=True, capture_output=True, env=env, timeout=60,
            )  # fmt: skip

        client("use", url)
        client("login", "root", "--password", "")
        client("user", "-c", USER, f"password={PASSWORD}", "email=alice@example.com")
        client("login", USER, "--password", PASSWORD)
        client("index", "-c", "dev", "bases=", "volatile=False")
        yield f"{url}/{USER}/dev"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def model_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two versions of a small model wheel: entry point, weights, load()."""
    folder = tmp_path_factory.mktemp("devpi-dist")
    return [
        make_wheel(
            folder,
            MODEL,
            version,
            summary="A model served by devpi",
            extra_members=wheel_members(version),
        )
        for version in ("1.0", "1.1")
    ]


def wheel_members(version: str) -> dict[str, bytes]:
    """What makes a wheel a model to `modelpack publish`: entry point, weights, load()."""
    package = MODEL.replace("-", "_")
    return {
        f"{package}/__init__.py": f"def load():\n    return {version!r}\n".encode(),
        f"{package}/weights/w.bin": bytes(64),
        f"{package}-{version}.dist-info/entry_points.txt": (
            f"[modelpack.models]\n{MODEL} = {package}:load\n".encode()
        ),
    }


def modelpack(*args: str | Path, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPACK_", "TWINE_"))}
    env.update(MODELPACK_USERNAME=USER, MODELPACK_PASSWORD=password)
    return subprocess.run(
        [str(BIN / "modelpack"), *map(str, args)], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip


def simple_files(index: str) -> dict[str, str]:
    """filename -> sha256 from devpi's PEP 691 page of the model."""
    page = requests.get(
        f"{index}/+simple/{MODEL}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        timeout=10,
    )
    if page.status_code == 404:
        return {}
    assert page.headers["Content-Type"].startswith("application/vnd.pypi.simple.v1+json")
    return {f["filename"]: f["hashes"]["sha256"] for f in page.json()["files"]}


def test_publish_reaches_devpi_and_uv_installs_from_it(
    devpi: str, model_wheels: list[Path], tmp_path: Path
) -> None:
    first = model_wheels[0]
    refused = modelpack("publish", first, "--registry", devpi, password="wrong")
    assert refused.returncode == 1 and "refused the upload" in refused.stderr
    assert simple_files(devpi) == {}

    # twine uploads to the index URL; the check before and after reads <index>/+simple/
    published = modelpack("publish", first, "--registry", devpi)
    assert published.returncode == 0, published.stderr
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert simple_files(devpi) == {first.name: digest}

    # devpi takes the same bytes again as a no-op, but never other bytes for a version
    other = make_wheel(tmp_path / "other", MODEL, "1.0", payload=b"other bytes",
                       extra_members=wheel_members("1.0"))  # fmt: skip
    again = modelpack("publish", other, "--registry", devpi)
    assert again.returncode == 1 and "already" in again.stderr  # devpi: HTTP 409
    assert simple_files(devpi) == {first.name: digest}

    venv = Venv(tmp_path / "venv", tool="uv")
    venv.install(MODEL, index_url=f"{devpi}/+simple/")
    loaded = venv.run(
        "from importlib.metadata import entry_points\n"
        f"(ep,) = entry_points(group='modelpack.models', name={MODEL!r})\n"
        "print(ep.load()())"
    )
    assert loaded.stdout.strip() == "1.0"


def test_devpi_url_shapes(devpi: str) -> None:
    """What the client adapts to: uploads go to the index URL itself, the simple API
    lives under +simple/, <index>/simple/<name>/ is a 404, and /api/v1/ is not ours."""
    api = requests.get(f"{devpi}/+api", headers={"Accept": "application/json"}, timeout=10)
    assert api.json()["result"]["pypisubmit"] == f"{devpi}/"
    assert api.json()["result"]["simpleindex"] == f"{devpi}/+simple/"
    assert requests.get(f"{devpi}/simple/{MODEL}/", timeout=10).status_code == 404
    no_api = requests.get(f"{devpi}/api/v1/models", headers={"Accept": "application/json"})
    assert no_api.status_code == 404 and "error" not in no_api.json()  # not our API


def test_publish_list_show_against_devpi(devpi: str, model_wheels: list[Path]) -> None:
    second = model_wheels[1]
    published = modelpack("publish", second, "--registry", devpi)
    assert published.returncode == 0, published.stderr

    listed = modelpack("list", "--registry", devpi)
    assert listed.returncode == 0, listed.stderr
    assert MODEL in listed.stdout and "1.1" in listed.stdout
    shown = modelpack("show", MODEL, "--registry", devpi)
    assert shown.returncode == 0, shown.stderr
    assert f"--index-url {devpi}/+simple/" in shown.stdout

    refused = modelpack("promote", f"{MODEL}==1.1", "--stage", "production", "--registry", devpi)
    assert refused.returncode == 1 and "has no modelpack API" in refused.stderr
