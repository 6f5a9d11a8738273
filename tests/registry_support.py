"""Helpers for the registry tests: tiny real wheels, twine, raw multipart uploads."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import requests

TWINE_ENV_DROP = ("TWINE_USERNAME", "TWINE_PASSWORD", "TWINE_REPOSITORY_URL")


PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
# `openssl passwd -apr1 -salt abcdefgh s3cret` (Apache MD5, `htpasswd -m`).
DAVE = "dave:$apr1$abcdefgh$M2T3erDstkD7SsE2QQnfH0"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(
    folder: Path,
    name: str = "model-foo",
    version: str = "1.0",
    *,
    meta_name: str | None = None,
    meta_version: str | None = None,
    requires_python: str | None = None,
    summary: str = "A tiny test model",
    payload: bytes = b"",
    extra_members: dict[str, bytes] | None = None,
    requires: tuple[str, ...] = (),
) -> Path:
    """Write a valid (installable) pure-Python wheel and return its path.

    ``requires``: its ``Requires-Dist`` lines (dependencies pip and uv resolve).
    """
    dist = name.replace("-", "_")
    filename = f"{dist}-{version}-py3-none-any.whl"
    distinfo = f"{dist}-{version}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {meta_name or name}\n"
        f"Version: {meta_version or version}\n"
        f"Summary: {summary}\n"
        + (f"Requires-Python: {requires_python}\n" if requires_python else "")
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
        + "\n"
    ).encode()
    files = {
        f"{dist}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist}/weights.bin": payload,
        f"{distinfo}/METADATA": metadata,
        f"{distinfo}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: modelpack-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
        **(extra_members or {}),
    }
    record = "\n".join(_record_line(k, v) for k, v in files.items())
    record += f"\n{distinfo}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(f"{distinfo}/RECORD", record)
    return path


def make_big_wheel(folder: Path, name: str, version: str, size: int) -> Path:
    """A model wheel (entry point, weights) whose weights are ``size`` zero bytes.

    Written in 1 MiB blocks, so it costs a fraction of a second. The weights are not in
    RECORD: the wheel is for uploads the registry refuses before reading them (twine
    and ``modelpack publish`` read METADATA and the entry point, and hash the file).
    """
    package = name.replace("-", "_")
    entry_points = f"[modelpack.models]\n{name} = {package}:load\n".encode()
    distinfo = f"{package}-{version}.dist-info"
    path = make_wheel(folder, name, version,
                      extra_members={f"{distinfo}/entry_points.txt": entry_points})  # fmt: skip
    block = bytes(1 << 20)
    member = f"{package}/weights/weights.bin"
    with zipfile.ZipFile(path, "a") as zf, zf.open(member, "w", force_zip64=True) as f:
        for start in range(0, size, len(block)):
            f.write(block[: size - start])
    return path


def twine_upload(
    url: str, *files: Path, user: str | None = None, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real twine against the registry's upload URL."""
    env = {k: v for k, v in os.environ.items() if k not in TWINE_ENV_DROP}
    env["TWINE_USERNAME"] = user or "anonymous"
    env["TWINE_PASSWORD"] = password or "none"
    cmd = [sys.executable, "-m", "twine", "upload", "--non-interactive",
           "--disable-progress-bar", "--repository-url", f"{url}/", *map(str, files)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


BOUNDARY = "modelpackTestBoundary7MA4YWxkTrZu0gW"


MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
MULTIPART_END = f"\r\n--{BOUNDARY}--\r\n".encode()


def multipart_head(filename: str, fields: dict[str, str] | None = None) -> bytes:
    """Everything of a twine-like multipart body before the file's bytes."""
    form = {":action": "file_upload", "protocol_version": "1", **(fields or {})}
    parts = []
    for key, value in form.items():
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
    )
    return b"".join(parts)


def multipart_body(
    filename: str, content: bytes, fields: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """A twine-like multipart body; returns (body, content type)."""
    return multipart_head(filename, fields) + content + MULTIPART_END, MULTIPART_TYPE


class MultipartFile:
    """A twine-like multipart body around a file on disk, read in blocks as it is sent.

    requests sends it with a Content-Length (it has ``__len__``), as twine does.
    """

    def __init__(self, path: Path, fields: dict[str, str] | None = None) -> None:
        head = multipart_head(path.name, fields)
        self._parts: list[BinaryIO] = [io.BytesIO(head), path.open("rb"), io.BytesIO(MULTIPART_END)]
        self._length = len(head) + path.stat().st_size + len(MULTIPART_END)

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        while self._parts:
            block = self._parts[0].read(size)
            if block:
                return block
            self._parts.pop(0).close()
        return b""


def stream_upload(
    url: str, path: Path, fields: dict[str, str] | None = None, **kw: Any
) -> requests.Response:
    """POST a file from disk the way twine does (fields first), with plain requests."""
    body: Any = MultipartFile(path, fields)
    headers = {"Content-Type": MULTIPART_TYPE}
    return requests.post(f"{url}/", data=body, headers=headers, timeout=30, **kw)


def post_upload(
    url: str, filename: str, content: bytes, fields: dict[str, str] | None = None, **kw: object
) -> requests.Response:
    """POST one file the way twine does, with requests."""
    body, ctype = multipart_body(filename, content, fields)
    return requests.post(f"{url}/", data=body, headers={"Content-Type": ctype}, timeout=30, **kw)  # type: ignore[arg-type]


def send_half_upload(host: str, port: int, filename: str, content: bytes) -> socket.socket:
    """Open a raw socket and send the headers and half of a multipart body; return it open."""
    body, ctype = multipart_body(filename, content)
    head = (
        f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(head + body[: len(body) // 2])
    return sock


def listing(data: Path, sub: str) -> list[str]:
    folder = data / sub
    return sorted(os.listdir(folder)) if folder.is_dir() else []
