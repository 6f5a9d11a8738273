"""The container image, without a container engine: the entrypoint script run as a
process (the command the image runs), and the Containerfile read as text.

What an engine would add (layers, the base image) is not tested here; what decides
whether the container is safe is: it serves on 0.0.0.0 only with the htpasswd secret,
and stops with a clear message when the secret is missing.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
from registry_support import make_wheel, post_upload, twine_upload

from support import REPO, Venv, clean_env, free_port, uv_bin

SERVER = REPO / "registry-server"
ENTRYPOINT = SERVER / "docker-entrypoint.sh"
CONTAINERFILE = SERVER / "Containerfile"
BIN = Path(sys.executable).parent


def entrypoint_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        MODELPACK_DATA=str(tmp_path / "data"),
        MODELPACK_HTPASSWD=str(tmp_path / "secrets" / "htpasswd"),
        MODELPACK_PORT=str(port),
        MODELPACK_THREADS="4",
    )
    env.update(extra)
    return env


def run_entrypoint(
    env: dict[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


class Container:
    """The entrypoint as PID 1 of a would-be container: started, awaited, stopped."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{env['MODELPACK_PORT']}{env.get('SCRIPT_NAME', '')}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(ENTRYPOINT)], env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{log.read_text()}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"never healthy:\n{log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # what `docker stop` / the kubelet send
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
                raise
        return self.proc.returncode


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "htpasswd"
    path.parent.mkdir()
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"# written by htpasswd -nB alice\nalice:{hashed}\n")
    path.chmod(0o600)  # as the server's own secret should be
    return path


@pytest.fixture
def container(tmp_path: Path, htpasswd: Path) -> Iterator[Container]:
    box = Container(entrypoint_env(tmp_path, free_port()), tmp_path / "container.log")
    try:
        yield box
    finally:
        box.stop()


def test_serves_on_all_interfaces_with_the_mounted_htpasswd(
    container: Container, tmp_path: Path
) -> None:
    # exec: the registry itself is the entrypoint's process, so SIGTERM reaches it
    cmdline = Path(f"/proc/{container.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert any(b"modelpack-registry" in part for part in cmdline), cmdline
    assert b"--htpasswd" in cmdline and b"0.0.0.0" in cmdline

    wheel = make_wheel(tmp_path / "dist", "boxed-model", "1.0")
    assert post_upload(container.url, wheel.name, wheel.read_bytes()).status_code == 401
    done = twine_upload(container.url, wheel, user="alice", password="s3cret")
    assert done.returncode == 0, done.stdout + done.stderr
    assert requests.get(f"{container.url}/simple/boxed-model/").status_code == 200

    env = container.env
    assert run_entrypoint(env, "healthcheck").returncode == 0  # the image's HEALTHCHECK
    verified = run_entrypoint(env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip() == f"{tmp_path / 'data'}: OK"
    assert (tmp_path / "data" / "packages" / wheel.name).is_file()
    # verify reads the mounted secret too: an owner who cannot sign in is reported
    data = str(tmp_path / "data")
    added = run_entrypoint(env, "modelpack-registry", "owners", "add", "boxed-model", "zoe",
                           "--data", data)  # fmt: skip
    assert added.returncode == 0, added.stderr
    (warning,) = [
        line for line in run_entrypoint(env, "verify").stdout.splitlines() if "zoe" in line
    ]
    assert warning.startswith("warning: state/owners/boxed-model.json: ") and "htpasswd" in warning
    elsewhere = tmp_path / "other-htpasswd"
    elsewhere.write_text("zoe:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode() + "\n")
    elsewhere.chmod(0o600)
    told = run_entrypoint(env, "verify", "--htpasswd", str(elsewhere)).stdout  # the one given
    assert "zoe" not in told and "alice" in told, told

    assert container.stop() == 0
    unhealthy = run_entrypoint(env, "healthcheck")
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stderr


def test_the_healthcheck_follows_a_path_prefix(tmp_path: Path, htpasswd: Path) -> None:
    env = entrypoint_env(tmp_path, free_port(), SCRIPT_NAME="/team/models")
    box = Container(env, tmp_path / "container.log")  # healthy at /team/models/health
    try:
        assert box.url.endswith("/team/models")
        checked = run_entrypoint(env, "healthcheck")
        assert checked.returncode == 0, checked.stderr
        assert "pip install --index-url " + box.url in requests.get(f"{box.url}/").text
    finally:
        box.stop()


def test_missing_secret_stops_the_container_with_a_message(tmp_path: Path) -> None:
    port = free_port()
    result = run_entrypoint(entrypoint_env(tmp_path, port))
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith("modelpack-registry container: error: no htpasswd secret at")
    assert str(tmp_path / "secrets" / "htpasswd") in message
    assert "MODELPACK_INSECURE=1" in message and "Traceback" not in message
    assert not (tmp_path / "data").exists()  # nothing was started
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=1)


def test_empty_secret_is_refused_too(tmp_path: Path) -> None:
    secret = tmp_path / "secrets" / "htpasswd"
    secret.parent.mkdir()
    secret.write_text("# replace with the output of `htpasswd -nB alice`\n\n")
    result = run_entrypoint(entrypoint_env(tmp_path, free_port()))
    assert result.returncode == 1
    assert "has no 'user:hash' line" in result.stderr and "htpasswd -nB" in result.stderr


def test_insecure_only_when_asked_for_and_said_loudly(tmp_path: Path) -> None:
    env = entrypoint_env(tmp_path, free_port(), MODELPACK_INSECURE="1")
    box = Container(env, tmp_path / "insecure.log")
    try:
        wheel = make_wheel(tmp_path / "dist", "open-model", "1.0")
        assert post_upload(box.url, wheel.name, wheel.read_bytes()).status_code == 200
    finally:
        box.stop()
    assert "WARNING: no htpasswd" in box.log.read_text()


def test_maintenance_commands_use_the_data_volume(tmp_path: Path) -> None:
    env = entrypoint_env(tmp_path, free_port())
    not_yet = run_entrypoint(env, "verify")
    assert not_yet.returncode == 1 and "not a registry data folder" in not_yet.stderr
    (tmp_path / "data" / "packages").mkdir(parents=True)
    assert run_entrypoint(env, "reindex").returncode == 0
    assert run_entrypoint(env, "verify").stdout.strip().endswith("OK")
    assert run_entrypoint(env, "sh", "-c", "echo $MODELPACK_DATA").stdout.strip() == str(
        tmp_path / "data"
    )


# --- the Containerfile, read as text ----------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_containerfile_runs_as_non_root_with_volume_healthcheck_and_port() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    known = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "LABEL", "USER", "VOLUME",
             "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD"}  # fmt: skip
    assert {k for k, _ in steps} <= known
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG")
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.1[0-9]-slim(-\w+)?", base), base

    runtime = final_stage(steps)
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE}")
    users = [a for k, a in runtime if k == "USER"]
    assert users, "no USER in the runtime stage: the container would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "a numeric non-root uid (runAsNonRoot)"
    after_user = runtime[[s[0] for s in runtime].index("USER") :]
    assert not [a for k, a in after_user if k == "RUN"], "RUN as the app user: nothing"

    def one(keyword: str) -> str:
        found = [a for k, a in runtime if k == keyword]
        assert len(found) == 1, f"{keyword}: {found}"
        return found[0]

    assert one("VOLUME") in ('["/data"]', "/data")
    assert one("EXPOSE") == "8080"
    health = one("HEALTHCHECK")
    assert "CMD" in health and "healthcheck" in health and "--interval" in health
    assert one("ENTRYPOINT") == '["docker-entrypoint.sh"]'
    assert one("CMD") == '["serve"]'
    env = one("ENV")
    for setting in ("MODELPACK_DATA=/data", "MODELPACK_HTPASSWD=/run/secrets/htpasswd",
                    "MODELPACK_HOST=0.0.0.0", "MODELPACK_PORT=8080"):  # fmt: skip
        assert setting in env.split()

    # small: no compilers, no pip cache, nothing fetched at run time
    text = " ".join(a for _, a in steps)
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get|apk)\b", text)
    pip_installs = [a for k, a in steps if k == "RUN" and "pip install" in a]
    assert pip_installs and all("--no-cache-dir" in a for a in pip_installs)
    assert "--only-binary=:all:" in pip_installs[0]


def test_entrypoint_script_is_posix_sh_and_executable() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)


def test_build_context_installs_the_registry(tmp_path: Path) -> None:
    """Copy exactly what the build stage COPYs into a fresh context, then install it
    the way the RUN step does (with uv here, for speed): the context is complete."""
    steps = instructions(CONTAINERFILE.read_text())
    context = tmp_path / "context"
    context.mkdir()
    for keyword, args in steps:
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            src = SERVER / source
            assert src.exists(), f"COPY {source}: not in the build context"
            dst = context / source
            if src.is_dir():
                subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
            else:
                dst.write_bytes(src.read_bytes())
    venv = Venv(tmp_path / "venv", tool="uv")
    subprocess.run(
        [uv_bin(), "pip", "install", "-q", "--python", str(venv.python), str(context)],
        check=True, env=clean_env(),
    )  # fmt: skip
    version = subprocess.run(
        [str(venv.path / "bin" / "modelpack-registry"), "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert version.stdout.startswith("modelpack-registry ")


def test_admins_protected_reads_and_grace_from_the_environment(
    tmp_path: Path, htpasswd: Path
) -> None:
    env = entrypoint_env(tmp_path, free_port(), MODELPACK_PROTECT_READS="1",
                         MODELPACK_ADMINS="alice", MODELPACK_GRACEFUL_TIMEOUT="45",
                         MODELPACK_ACCESS_LOG="1", MODELPACK_HEADER_TIMEOUT="15",
                         MODELPACK_BODY_TIMEOUT="90", MODELPACK_MIN_UPLOAD_RATE="1KiB",
                         MODELPACK_MAX_CONNECTIONS="2000")  # fmt: skip
    box = Container(env, tmp_path / "container.log")
    try:
        cmdline = Path(f"/proc/{box.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert [b"--admin", b"alice"] == cmdline[cmdline.index(b"--admin") :][:2]
        assert b"--graceful-timeout" in cmdline and b"45" in cmdline
        assert requests.get(f"{box.url}/simple/").status_code == 401
        assert requests.get(f"{box.url}/simple/", auth=("alice", "s3cret")).status_code == 200
        assert requests.get(f"{box.url}/health").status_code == 200
        assert b"--access-log" in cmdline
        for flag, value in [(b"--header-timeout", b"15"), (b"--body-timeout", b"90"),
                            (b"--min-upload-rate", b"1KiB"), (b"--max-connections", b"2000")]:  # fmt: skip
            assert cmdline[cmdline.index(flag) + 1] == value, cmdline
    finally:
        assert box.stop() == 0
    assert (
        " alice [" in box.log.read_text() and '"GET /simple/ HTTP/1.1" 200 ' in box.log.read_text()
    )
