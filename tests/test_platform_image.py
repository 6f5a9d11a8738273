"""The container image, built and run for real: `scripts/build-image` builds it from
registry-server/Containerfile with buildah (no daemon), and two containers of it serve
as replicas of one registry.

`buildah run --isolation chroot` runs the image's entrypoint as the image's user, in
the image's filesystem, with the host's network: each container listens on its own
loopback port. What the replicas share is one parameter, :class:`Storage`: a data
folder mounted into both, or a bucket on an S3 server (moto) on the host's loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from registry_support import PASSWORDS, make_wheel, post_upload, twine_upload

from support import REPO, S3Server, clean_env, free_port, make_venv

BUILD_IMAGE = REPO / "scripts" / "build-image"
UID = 10001  # the image's user (USER 10001:10001 in the Containerfile)


def buildah(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """buildah on the storage scripts/build-image builds into."""
    return subprocess.run([str(BUILD_IMAGE), "buildah", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@dataclass(frozen=True)
class Storage:
    """Where the replicas keep the registry's state, as each container is given it:
    bind mounts (``HOST:CONTAINER[:OPTIONS]``), environment, and `serve` options."""

    volumes: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    serve_args: tuple[str, ...] = ()


@pytest.fixture(params=["folder", "bucket"])
def shared_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """What the replicas share: one data folder mounted into every container at /data
    (the image's VOLUME), as a read-write-many volume would be, owned by the image's
    user as an fsGroup makes it; or one bucket on an S3 server on the host's loopback
    (MODELPACK_STORAGE, the endpoint and the AWS credentials), and no volume."""
    if request.param == "folder":
        data = tmp_path / "data"
        data.mkdir()
        os.chown(data, UID, UID)
        yield Storage(volumes=(f"{data}:/data",))
        return
    with S3Server(tmp_path / "s3.log") as s3:
        bucket = s3.bucket("modelpack-image")
        yield Storage(env={**s3.env, "MODELPACK_STORAGE": f"s3://{bucket}/registry",
                           "MODELPACK_S3_ENDPOINT": s3.url})  # fmt: skip


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image, built by scripts/build-image under a tag of this run's own (another
    checkout's test run may be building at the same time)."""
    tag = f"localhost/modelpack-registry:test-{uuid.uuid4().hex[:12]}"
    # cold, the base is built first (debootstrap: 25 s to 2 min)
    built = subprocess.run([str(BUILD_IMAGE), tag], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == tag
    print(built.stderr.strip())
    try:
        yield tag
    finally:
        buildah("rmi", tag)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return []


def in_session(sid: int) -> list[int]:
    """Every live process of session *sid* (what the container started lives there)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class Container:
    """A container of the image (`buildah from`), running its entrypoint (`buildah run`)."""

    def __init__(self, image: str, storage: Storage, secret: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"modelpack-test-{uuid.uuid4().hex[:12]}"
        self.log = log
        self.removing: subprocess.Popen[bytes] | None = None
        made = buildah("from", "--name", self.name, image)
        assert made.returncode == 0, made.stderr
        self.env = {"MODELPACK_HOST": "127.0.0.1", "MODELPACK_PORT": str(self.port),
                    "MODELPACK_THREADS": "4", **storage.env}  # fmt: skip
        env_args = [a for k, v in self.env.items() for a in ("-e", f"{k}={v}")]
        volumes = [f"{secret}:/run/secrets/htpasswd:ro", *storage.volumes]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(BUILD_IMAGE), "buildah", "run", "--isolation", "chroot", *env_args,
                 *[a for v in volumes for a in ("-v", v)], self.name, "--",
                 "docker-entrypoint.sh", "serve", *storage.serve_args],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.remove()
                self.removed()
                raise AssertionError(f"exited {self.proc.returncode}:\n{log.read_text()}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        self.removed()
        raise AssertionError(f"never healthy:\n{log.read_text()}")

    def server_pid(self) -> int:
        """The registry's main process: the command the entrypoint execs (gunicorn's
        master), the first process below `buildah run` that is the registry."""
        queue = children(self.proc.pid)
        while queue:
            pid = queue.pop(0)
            command = cmdline(pid)
            if any(part.endswith("/modelpack-registry") for part in command[:2]):
                return pid
            queue += children(pid)
        raise AssertionError(f"no registry process below {self.proc.pid}")

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a command in the running container (its filesystem, user, environment)."""
        env_args = [a for k, v in self.env.items() for a in ("-e", f"{k}={v}")]
        return buildah("run", "--isolation", "chroot", *env_args, self.name, "--", *command)

    def stop(self) -> int:
        """SIGTERM to the registry, as `docker stop` sends it to the container's first
        process. (`buildah run` itself answers SIGTERM by killing its child outright.)"""
        try:
            if self.proc.poll() is None:
                os.kill(self.server_pid(), signal.SIGTERM)
                self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:  # no registry to stop, or it did not: leave nothing
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.remove()
        return self.proc.returncode

    def remove(self) -> None:
        """`buildah rm`, in the background: deleting the container's copy of the image
        (vfs) takes seconds, so two containers are removed at once. :meth:`removed`
        waits for it."""
        self.removing = subprocess.Popen([str(BUILD_IMAGE), "buildah", "rm", self.name],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def removed(self) -> None:
        if self.removing is not None:
            self.removing.wait(timeout=120)


def pip_install(venv: Path, index_url: str, *requirements: str) -> None:
    """pip confined to one index: the machine's pip config and find-links are dropped."""
    env = {**clean_env(), "PIP_CONFIG_FILE": os.devnull}
    env.pop("PIP_EXTRA_INDEX_URL", None)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir",
         "--index-url", index_url, *requirements],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_the_built_image_keeps_its_user_volume_port_and_healthcheck(image: str) -> None:
    inspected = buildah("inspect", "--type", "image", image)
    assert inspected.returncode == 0, inspected.stderr
    config = json.loads(inspected.stdout)["Docker"]["config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["docker-entrypoint.sh"] and config["Cmd"] == ["serve"]
    assert list(config["Volumes"]) == ["/data"] and list(config["ExposedPorts"]) == ["8080/tcp"]
    # kept only in the docker format (scripts/build-image builds with --format docker)
    assert config["Healthcheck"]["Test"] == ["CMD", "docker-entrypoint.sh", "healthcheck"]
    assert "MODELPACK_DATA=/data" in config["Env"]


@pytest.mark.slow
def test_two_containers_of_the_image_serve_one_registry(
    image: str, shared_storage: Storage, htpasswd: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret-htpasswd"  # as a Secret volume with fsGroup mounts it
    shutil.copy(htpasswd, secret)
    os.chown(secret, UID, UID)
    secret.chmod(0o400)
    containers: list[Container] = []
    with ExitStack() as stack:  # each container stopped and removed, whatever happens
        stack.callback(lambda: [box.removed() for box in containers])  # last: both at once
        for name in ("first", "second"):
            containers.append(Container(image, shared_storage, secret, tmp_path / f"{name}.log"))
            stack.callback(containers[-1].stop)
        first, second = containers
        for box in containers:
            assert requests.get(f"{box.url}/health").json()["status"] == "ok"
            status = Path(f"/proc/{box.server_pid()}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uids.split()[1:] == [str(UID)] * 4, uids  # the image's user, not root
            assert box.exec("docker-entrypoint.sh", "healthcheck").returncode == 0
        inside = first.exec("sh", "-c", "id -u; ls /opt/modelpack-registry/bin")
        uid, *tools = inside.stdout.split()
        assert uid == str(UID) and "modelpack-registry" in tools, inside.stdout + inside.stderr
        assert not {"pip", "pip3"} & set(tools), tools  # removed from the runtime venv

        wheel = make_wheel(tmp_path / "dist", "boxed-model", "1.0")
        refused = post_upload(first.url, wheel.name, wheel.read_bytes(), auth=("alice", "nope"))
        assert refused.status_code == 403  # the mounted secret is the one checked
        done = twine_upload(first.url, wheel, user="alice", password=PASSWORDS["alice"])
        assert done.returncode == 0, done.stdout + done.stderr

        page = f"{second.url}/simple/boxed-model/"  # the other replica sees it, soon
        deadline = time.monotonic() + 15
        while wheel.name not in requests.get(page).text:
            assert time.monotonic() < deadline, f"{page} never listed {wheel.name}"
            time.sleep(0.2)
        venv = make_venv(tmp_path / "venv")
        pip_install(venv, f"{second.url}/simple/", "boxed-model==1.0")
        imported = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import boxed_model; print(boxed_model.VERSION)"],
            capture_output=True, text=True, env=clean_env(), cwd=venv,
        )  # fmt: skip
        assert imported.stdout.strip() == "1.0", imported.stderr
    codes = [box.proc.returncode for box in containers]
    assert codes == [0, 0], [box.log.read_text() for box in containers]
    for box in containers:
        assert "Shutting down: Master" in box.log.read_text()
        assert in_session(box.proc.pid) == [], "processes left behind"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{box.url}/health", timeout=1)
        assert box.name not in buildah("containers", "--format", "{{.ContainerName}}").stdout
