"""Shared by the ``s3_*.py`` benchmarks: moto's S3 server and registries on a bucket.

``moto_server`` (from ``moto[server]``) runs as a separate process on a free loopback
port; the registries run as ``modelpack-registry serve --storage s3://BUCKET/PREFIX
--s3-endpoint URL``, with test credentials in the environment (the standard AWS chain).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from registry import PY, Server, free_port

AWS_ENV = {"AWS_ACCESS_KEY_ID": "modelpack-bench", "AWS_SECRET_ACCESS_KEY": "modelpack-bench",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def require_s3_serving() -> None:
    """Exit with a clear message if this checkout cannot serve from a bucket yet."""
    missing = []
    try:
        importlib.import_module("boto3")
    except ImportError:
        missing.append("boto3 (pip install boto3)")
    if shutil.which("moto_server", path=str(Path(PY).parent)) is None:
        missing.append("moto_server (pip install 'moto[server]')")
    usage = subprocess.run([PY, "-m", "modelpack_registry", "serve", "--help"],
                           capture_output=True, text=True)  # fmt: skip
    if "--storage" not in usage.stdout:
        missing.append("`modelpack-registry serve --storage s3://...` (the S3 backend)")
    if missing:
        print("cannot run: this checkout lacks " + "; ".join(missing) + ". Not measured.",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)


def aws_environment() -> None:
    """Test credentials for every process started from here on (registries, clients)."""
    os.environ.update(AWS_ENV)


def moto(log: Path) -> Server:
    """moto's standalone S3 server on a free loopback port."""
    port = free_port()
    cmd = [str(Path(PY).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    return Server(cmd, port, log, "/moto-api/")


def s3_client(endpoint: str) -> Any:
    boto3 = importlib.import_module("boto3")  # no type stubs
    return boto3.client("s3", endpoint_url=endpoint, region_name=AWS_ENV["AWS_REGION"])


def registry_on_s3(s3: Server, bucket: str, prefix: str, log: Path, *extra: str) -> Server:
    """``modelpack-registry serve`` on ``s3://bucket/prefix`` (redirects by default)."""
    port = free_port()
    cmd = [PY, "-m", "modelpack_registry", "serve", "--storage", f"s3://{bucket}/{prefix}",
           "--s3-endpoint", s3.url, "--port", str(port), *extra]  # fmt: skip
    return Server(cmd, port, log, "/health")


def mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB"
