"""Real processes for the tests: a registry on a free loopback port, throwaway venvs.

Nothing here is a mock: `Registry` starts `modelpack-registry serve` as a separate
process, and `Venv` creates a real virtual environment with venv (plain pip) or uv.
"""

from __future__ import annotations

import ensurepip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import requests

if TYPE_CHECKING:
    from modelpack_registry.storage.base import Store

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: the bucket of the tests' registries on S3 (each under its own prefix: Storage.fresh)
TEST_BUCKET = "modelpack-tests"


def modelpack(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``modelpack`` console script, as a user would."""
    return subprocess.run(
        [str(BIN / "modelpack"), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def uv_bin() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


class Storage:
    """Where a test registry keeps its state: a data folder or a prefix of a bucket.

    One object per test (two registries given the same one share their state): it gives
    the command-line arguments (:attr:`args`, ``--data DIR`` or ``--storage s3://...
    --s3-endpoint URL``), the environment they need (:attr:`env`, the AWS variables for
    a bucket), and :attr:`store`, the registry's own storage interface on the same state,
    so a test reads and pokes the state the same way on both backends (never by path).
    """

    def __init__(self, location: str, *, workdir: Path, s3: S3Server | None = None) -> None:
        self.location = location
        """What messages name: the folder's path, or ``s3://BUCKET/PREFIX``."""
        self.workdir = workdir
        """A local folder for logs and the like (the data folder's parent)."""
        self.s3 = s3
        self._store: Store | None = None

    @classmethod
    def folder(cls, path: Path) -> Storage:
        return cls(str(path), workdir=Path(path).parent)

    @classmethod
    def bucket(cls, s3: S3Server, bucket: str, prefix: str, *, workdir: Path) -> Storage:
        """State under ``s3://bucket/prefix`` (the bucket exists; the prefix is new)."""
        return cls(f"s3://{bucket}/{prefix}", workdir=workdir, s3=s3)

    @classmethod
    def fresh(cls, s3: S3Server, *, workdir: Path, label: str = "t") -> Storage:
        """A new, empty prefix of :data:`TEST_BUCKET` (which conftest's ``s3_server``
        made): every test's own state on the one S3 server of the run."""
        return cls.bucket(s3, TEST_BUCKET, f"{label}-{uuid.uuid4().hex[:12]}", workdir=workdir)

    @property
    def url(self) -> str:
        """How the registry names this state in its messages (the store's ``url``)."""
        return self.store.url

    @property
    def option(self) -> str:
        """How the registry's fixes name it: ``--data DIR`` or ``--storage s3://...
        --s3-endpoint URL`` (an endpoint other than AWS's is part of the name)."""
        return " ".join([self.args[0], self.url, *self.args[2:]])

    def delete_command(self, key: str) -> str:
        """The shell command the registry's fixes give to delete ``key`` by hand."""
        if self.path is not None:
            return f"rm {self.path / key}"
        assert self.s3 is not None
        return f"aws s3 rm --endpoint-url {self.s3.url} {self.url.rstrip('/')}/{key}"

    @property
    def kind(self) -> str:
        return "folder" if self.s3 is None else "s3"

    @property
    def path(self) -> Path | None:
        """The data folder, or None on a bucket (only folder-only tests use it)."""
        return Path(self.location) if self.s3 is None else None

    @property
    def args(self) -> list[str]:
        if self.s3 is None:
            return ["--data", self.location]
        return ["--storage", self.location, "--s3-endpoint", self.s3.url]

    @property
    def env(self) -> dict[str, str]:
        return {} if self.s3 is None else dict(self.s3.env)

    @property
    def store(self) -> Store:
        if self._store is None:
            from modelpack_registry.storage.folder import FolderStore
            from modelpack_registry.storage.s3 import S3Store, parse_s3_url

            if self.s3 is None:
                self._store = FolderStore(Path(self.location))
            else:
                bucket, prefix = parse_s3_url(self.location)
                self._store = S3Store(bucket, prefix, self.s3.url, client=self.s3.client())
        return self._store

    def listing(self, prefix: str) -> list[str]:
        """The names under ``prefix`` (``"packages"``, ``"state/owners"``), sorted."""
        start = prefix.rstrip("/") + "/"
        return sorted(key.removeprefix(start) for key in self.store.iter_keys(start))

    def read_text(self, key: str) -> str:
        """A document's or blob's content. :raises NotFound:"""
        return self.store.read_bytes(key).decode()

    def exists(self, key: str) -> bool:
        return self.store.stat(key) is not None

    def write_text(self, key: str, text: str, *, private: bool | None = None) -> None:
        """Overwrite (or create) ``key``, as a hand edit would. ``private`` (default: for
        ``state/tokens/``, as the registry writes them): owner-only on a folder."""
        from modelpack_registry.storage.base import ANY

        if private is None:
            private = key.startswith("state/tokens/")
        self.store.write_doc(key, text.encode(), expect=ANY, private=private)

    def put(self, key: str, source: Path) -> None:
        """Copy a local file in as ``key``, as a restore or a hand copy does (a folder:
        ``cp``, even before any registry made it one; a bucket: a new object)."""
        if self.path is not None:
            target = self.path / key
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        else:
            self.store.put_new(key, Path(source).read_bytes())

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def pending(self) -> list[str]:
        """Uploads begun and neither published nor discarded (folder: ``tmp/`` files;
        bucket: multipart uploads and staged objects): empty once every request ended."""
        return self.store.pending_uploads()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``modelpack-registry ARGS`` on this state (``--data``/``--storage`` appended)."""
        return subprocess.run(self.cli_command(*args), capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=timeout)  # fmt: skip

    def cli_command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "modelpack_registry", *args, *self.args]

    def cli_start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``modelpack-registry ARGS`` on this state (stdout, stderr piped)."""
        return subprocess.Popen(self.cli_command(*args), text=True, env={**os.environ, **self.env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    def __repr__(self) -> str:
        return f"Storage({self.location})"


def as_storage(data: Path | Storage) -> Storage:
    """``data`` as a :class:`Storage` (a plain path is a data folder)."""
    return data if isinstance(data, Storage) else Storage.folder(Path(data))


class Registry:
    """A `modelpack-registry serve` process on a free loopback port.

    Unless ``contract=False``, it runs through ``api_recorder.py``, and each of its
    ``/api/v1`` answers is checked against ``openapi.json`` (``api_contract.py``) when it
    stops: leaving the ``with`` block raises AssertionError listing every answer that
    breaks the contract, so every API call of every test is a contract test.
    """

    def __init__(
        self,
        data: Path | Storage,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        args: Sequence[str] = (),
        log: Path | None = None,
        env: dict[str, str] | None = None,
        contract: bool = True,
    ) -> None:
        """``env``: added to the server's environment; with ``SCRIPT_NAME`` (gunicorn
        serves everything under that path prefix) :attr:`url` ends with it.

        ``data``: a data folder, or a :class:`Storage` (a folder or a bucket); either way
        :attr:`storage` is the state's :class:`Storage`, and :attr:`data` the folder
        (on a bucket: a local folder for the log, not the state)."""
        self.storage = as_storage(data)
        self.data = self.storage.path or self.storage.workdir / "data"
        self.env = {**self.storage.env, **(env or {})}
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.log = log or self.data.parent / f"registry-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.contract = contract
        self.recorded = self.log.parent / f"api-answers-{self.port}"
        self.contract_problems: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.env.get('SCRIPT_NAME', '')}"

    @property
    def index_url(self) -> str:
        return f"{self.url}/simple/"

    def command(self) -> list[str]:
        run = [str(REPO / "tests" / "api_recorder.py"), str(self.recorded)]
        return [
            sys.executable, *(run if self.contract else ["-m", "modelpack_registry"]), "serve",
            *self.storage.args, "--host", self.host, "--port", str(self.port),
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> Registry:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **self.env},
        )  # fmt: skip
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"registry exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"registry did not become healthy:\n{self.log.read_text()}")

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=15)
        self._check_contract()

    def _check_contract(self) -> None:
        if self.contract and (self.recorded / "openapi.json").exists():
            from api_contract import check_folder

            self.contract_problems += check_folder(self.recorded)

    def assert_contract(self) -> None:
        """Raise AssertionError if an API answer so far broke ``openapi.json``."""
        self._check_contract()
        problems, self.contract_problems = self.contract_problems, []
        assert not problems, "API answers that break openapi.json:\n" + "\n".join(problems)

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crashed node would."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=15)
        self._check_contract()

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        if exc_type is None:  # a failing test's own error stays the one reported
            self.assert_contract()


@contextmanager
def stock_pypiserver(folder: Path) -> Iterator[str]:
    """Stock pypiserver serving *folder* on a free loopback port (anonymous uploads, no
    fallback to the public index); yields its root URL and stops it afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(port), "-a", ".",
         "-P", ".", "--disable-fallback", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if requests.get(f"{url}/simple/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


class Venv:
    """A throwaway virtual environment, made with plain venv+pip or with uv."""

    def __init__(self, path: Path, tool: str = "pip") -> None:
        self.path = Path(path)
        self.tool = tool
        if tool == "pip":
            subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True)
        elif tool == "uv":
            subprocess.run(
                [uv_bin(), "venv", "-q", "--python", sys.executable, str(self.path)], check=True
            )
        else:
            raise ValueError(tool)
        self.python = self.path / "bin" / "python"

    def install(self, *requirements: str, index_url: str, check: bool = True,
                extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:  # fmt: skip
        env = clean_env()
        if self.tool == "pip":
            cmd = [str(self.python), "-m", "pip", "install", "--no-cache-dir", "--index-url",
                   index_url, *extra, *requirements]  # fmt: skip
        else:
            cmd = [uv_bin(), "pip", "install", "--python", str(self.python), "--no-cache",
                   "--index-url", index_url, *extra, *requirements]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"{cmd} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def run(self, code: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.python), "-c", code],
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=str(self.path),
        )
        if check and result.returncode != 0:
            raise AssertionError(f"python -c failed:\n{result.stdout}\n{result.stderr}")
        return result


def clean_env() -> dict[str, str]:
    """The environment for a consumer: no find-links, nothing of ours on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("PIP_FIND_LINKS", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def confined_env() -> dict[str, str]:
    """:func:`clean_env` in which pip and uv see only the index they are given on the
    command line: no config file, no extra index, no find-links, no ``UV_*`` setting
    (the machine's own config adds an index of its own)."""
    env = clean_env()
    for key in list(env):
        if key.startswith(("PIP_EXTRA", "PIP_INDEX", "UV_")):
            del env[key]
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def make_venv(path: Path, tool: str = "pip") -> Path:
    """An empty venv for a consumer; for pip, with the pip that ``python -m venv`` would
    put there (ensurepip's bundled wheel), installed offline by uv: 0.2 s instead of the
    3 to 8 s of ``python -m venv`` on a busy machine."""
    env = {**clean_env(), "UV_NO_CONFIG": "1"}
    subprocess.run(
        [uv_bin(), "venv", "-q", "--python", sys.executable, str(path)], check=True, env=env
    )
    if tool == "pip":
        bundled = Path(ensurepip.__file__).parent / "_bundled"
        subprocess.run([uv_bin(), "pip", "install", "-q", "--python", str(path / "bin" / "python"),
                        "--no-index", "--find-links", str(bundled), "pip"], check=True, env=env)  # fmt: skip
    return path


class S3Server:
    """moto's standalone S3 server as a separate process on a free loopback port: a real
    HTTP S3 API for the storage backend and the registry processes. It runs through
    ``tests/moto_s3.py``, which adds two guarantees of S3 that moto's server lacks:
    conditional writes are atomic, and an expired presigned URL is refused (403).

    :attr:`env` holds the AWS variables a client (boto3, a registry) needs to reach it;
    :meth:`bucket` creates a bucket. Everything lives in the server's memory and is gone
    when it stops.
    """

    ENV: ClassVar[dict[str, str]] = {"AWS_ACCESS_KEY_ID": "modelpack-test", "AWS_SECRET_ACCESS_KEY": "modelpack-test",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

    def __init__(self, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(self.ENV)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> S3Server:
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "moto_s3.py"), "-H", "127.0.0.1",
             "-p", str(self.port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                requests.get(f"{self.url}/moto-api/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def client(self) -> object:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.ENV["AWS_SECRET_ACCESS_KEY"])  # fmt: skip

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (3-63 characters); return it."""
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
