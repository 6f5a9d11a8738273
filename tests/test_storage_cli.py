"""``--storage s3://BUCKET/PREFIX`` on the command line: each way to get it wrong is one
line naming the problem and the fix, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from registry_support import make_wheel, twine_upload

from support import S3Server, free_port


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def registry(*args: str, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPACK_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "modelpack_registry", *args], capture_output=True, text=True,
        env={**clean, **S3Server.ENV, **(env or {})}, cwd=cwd, timeout=120,
    )  # fmt: skip


def reported(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


COMMANDS = [["serve", "--port", "0"], ["verify"], ["reindex"], ["reserve", "--list"],
            ["owners", "list", "m"], ["tokens", "list"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_missing_bucket_is_named_with_its_fix(s3: S3Server, command: list[str]) -> None:
    reported(registry(*command, "--storage", "s3://nosuchbucket/reg", "--s3-endpoint", s3.url),
             "no bucket 'nosuchbucket'", "create it")  # fmt: skip


def test_environment_variables_name_the_bucket_too(s3: S3Server) -> None:
    env = {"MODELPACK_STORAGE": "s3://nosuchbucket/reg", "MODELPACK_S3_ENDPOINT": s3.url}
    reported(registry("verify", env=env), "no bucket 'nosuchbucket'")


def test_data_option_beats_the_storage_variable(tmp_path: Path) -> None:
    env = {"MODELPACK_STORAGE": "s3://nosuchbucket/reg"}
    reported(registry("verify", "--data", str(tmp_path), env=env), "is not a registry data folder")


def test_unreachable_endpoint(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    reported(registry("verify", "--storage", "s3://bucket/reg", "--s3-endpoint", dead),
             "cannot reach the S3 endpoint", "--s3-endpoint")  # fmt: skip


@pytest.mark.parametrize(
    ("url", "needle"),
    [("s3://ab/reg", "is not a bucket name"), ("s3://bucket/a/../b", "'..'"),
     ("gs://bucket/reg", "not a storage URL")],
)  # fmt: skip
def test_bad_url(url: str, needle: str) -> None:
    reported(registry("verify", "--storage", url), needle, "s3://BUCKET/PREFIX")


def test_data_and_storage_exclude_each_other(tmp_path: Path) -> None:
    reported(registry("reindex", "--data", str(tmp_path), "--storage", "s3://bucket/reg"),
             "either --data DIR or --storage URL")  # fmt: skip


def test_endpoint_without_a_bucket(tmp_path: Path) -> None:
    reported(registry("verify", "--data", str(tmp_path), "--s3-endpoint", "http://x"),
             "--s3-endpoint needs --storage s3://")  # fmt: skip


def test_without_boto3(tmp_path: Path) -> None:
    """A registry installed without the [s3] extra: boto3 cannot be imported."""
    shadow = tmp_path / "no-boto3"
    shadow.mkdir()
    (shadow / "boto3.py").write_text("raise ImportError(\"No module named 'boto3'\")\n")
    result = registry("verify", "--storage", "s3://bucket/reg", env={"PYTHONPATH": str(shadow)})
    reported(result, "needs boto3", "pip install 'modelpack-registry[s3]'")


def test_every_data_command_documents_storage() -> None:
    for command in COMMANDS:
        out = registry(*command[: 2 if command[0] in ("owners", "tokens") else 1], "--help")
        assert "--storage URL" in out.stdout and "MODELPACK_STORAGE" in out.stdout, command
    assert "--no-s3-redirect" in registry("serve", "--help").stdout


@contextmanager
def serving(*args: str) -> Iterator[str]:
    """``modelpack-registry serve ARGS`` on a free port until the block ends; its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPACK_", "AWS_"))}
    server = subprocess.Popen(
        [sys.executable, "-m", "modelpack_registry", "serve", "--port", str(port), *args],
        env={**env, **S3Server.ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert server.poll() is None, "serve exited"
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_commands_work_on_a_bucket(s3: S3Server) -> None:
    """serve starts on a bucket (and writes its generation document), and the
    maintenance commands read it back."""
    bucket = s3.bucket("cli-bucket")
    where = ["--storage", f"s3://{bucket}/reg", "--s3-endpoint", s3.url]
    with serving(*where) as url:
        assert requests.get(f"{url}/simple/", timeout=5).ok
    keys = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])  # type: ignore[attr-defined]
    assert "reg/generation" in [k["Key"] for k in keys]
    verify = registry("verify", *where)
    assert verify.returncode == 0 and f"s3://{bucket}/reg: OK" in verify.stdout, verify
    reindex = registry("reindex", *where)
    assert reindex.returncode == 0 and "indexed 0 distribution(s)" in reindex.stdout, reindex
    tokens = registry("tokens", "list", *where)
    assert tokens.returncode == 0, tokens


@pytest.mark.parametrize("redirect", [True, False], ids=["redirect", "proxied"])
def test_upload_and_download_through_a_bucket(s3: S3Server, tmp_path: Path,
                                              redirect: bool) -> None:  # fmt: skip
    bucket = s3.bucket(f"up-{'r' if redirect else 'p'}-bucket")
    where = ["--storage", f"s3://{bucket}/reg", "--s3-endpoint", s3.url]
    wheel = make_wheel(tmp_path, "model-s3", "1.0")
    with serving(*where, *([] if redirect else ["--no-s3-redirect"])) as url:
        assert twine_upload(url, wheel).returncode == 0
        assert twine_upload(url, wheel).returncode == 0  # the same bytes again: a no-op
        other = make_wheel(tmp_path / "other", "model-s3", "1.0", summary="other bytes")
        assert other.name == wheel.name and other.read_bytes() != wheel.read_bytes()
        again = twine_upload(url, other)
        assert again.returncode != 0 and "409" in again.stdout + again.stderr
        answer = requests.get(f"{url}/packages/{wheel.name}", allow_redirects=False, timeout=10)
        if redirect:
            assert answer.status_code in (302, 303, 307), answer
            assert answer.headers["Location"].startswith(f"{s3.url}/{bucket}/reg/packages/")
        else:
            assert answer.status_code == 200, answer
        got = requests.get(f"{url}/packages/{wheel.name}", timeout=10)
        assert got.content == wheel.read_bytes()
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="reg/packages/")  # type: ignore[attr-defined]
    assert [o["Key"] for o in listed["Contents"]] == [f"reg/packages/{wheel.name}"]
    uploads = s3.client().list_multipart_uploads(Bucket=bucket)  # type: ignore[attr-defined]
    assert uploads.get("Uploads", []) == []
