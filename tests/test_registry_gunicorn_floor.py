"""The oldest gunicorn that modelpack-registry's pin allows serves it as the newest does.

The registry reads upload bodies from gunicorn's socket (duck-typed) and tells gunicorn
to close after a refused upload (linger.py); settings such as ``control_socket_disable``
exist only in newer releases. The suite itself runs on whatever gunicorn the resolver
picks (the newest), so this test installs the lower bound of the pin, read from
registry-server/pyproject.toml, into a throwaway environment with the registry from this
checkout, and drives it: serve, upload, list, an early 409 with the connection
closed, and a request served while half request lines are held open.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from packaging.requirements import Requirement
from registry_support import make_big_wheel, make_wheel, post_upload, stream_upload
from test_registry_upload_early import BIG, REFUSED

from support import REPO, Registry, clean_env

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SERVER = REPO / "registry-server"


def gunicorn_floor() -> str:
    """The lowest version the pin allows, from ``>=X``."""
    project = tomllib.loads((SERVER / "pyproject.toml").read_text())["project"]
    (pin,) = [Requirement(r) for r in project["dependencies"] if r.startswith("gunicorn")]
    (lower,) = [s.version for s in pin.specifier if s.operator == ">="]
    return lower


class FloorRegistry(Registry):
    def __init__(self, python: Path, data: Path, args: list[str]) -> None:
        super().__init__(data, args=args)
        self.python = python

    def command(self) -> list[str]:
        return [str(self.python), *super().command()[1:]]


@pytest.fixture(scope="module")
def floor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("gunicorn-floor") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    floor = gunicorn_floor()
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"gunicorn=={floor}.*", str(SERVER)],
        capture_output=True, text=True, env=clean_env(),
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    version = subprocess.run(
        [str(python), "-c", "import gunicorn; print(gunicorn.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert version.split(".")[0] == floor.split(".")[0], version
    return python


def test_the_oldest_allowed_gunicorn_serves_uploads_and_refuses_early(
    tmp_path: Path, floor_python: Path
) -> None:
    small = make_wheel(tmp_path / "dist", "model-foo", "2.0")
    big = make_big_wheel(tmp_path / "big", "model-foo", "2.0", BIG)
    fields = {"name": "model-foo", "version": "2.0"}
    with FloorRegistry(floor_python, tmp_path / "data", ["--threads", "1", "--access-log"]) as reg:
        assert post_upload(reg.url, small.name, small.read_bytes(), fields).status_code == 200
        page = requests.get(f"{reg.url}/simple/model-foo/", timeout=10)
        assert page.status_code == 200 and small.name in page.text

        # Other bytes under that name, announced as twine does (sha256_digest first).
        refused = stream_upload(reg.url, big, {**fields, "sha256_digest": "f" * 64})
        assert refused.status_code == 409, refused.text
        assert refused.headers["Connection"] == "close"
        ((name, got, total, code, _),) = REFUSED.findall(reg.log.read_text())
        assert (name, code) == (big.name, "409") and int(got) < int(total) // 64

        good = make_wheel(tmp_path / "dist", "model-foo", "2.1")
        assert post_upload(reg.url, good.name, good.read_bytes()).status_code == 200

        # The worker (worker.py) reads request heads in its loop on this gunicorn too:
        # half request lines do not take the only thread.
        with ExitStack() as stack:
            for _ in range(4):
                stack.enter_context(socket.create_connection((reg.host, reg.port))).sendall(
                    b"GET /health HT"
                )
            assert requests.get(f"{reg.url}/health", timeout=5).status_code == 200
    log = reg.log.read_text()
    assert "control_socket" not in log
    assert '"GET /simple/model-foo/ HTTP/1.1" 200 ' in log  # the access log format works
