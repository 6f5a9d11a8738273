"""What an upload of a model wheel could cost: the legacy upload form (what twine sends),
streamed in 1 MiB blocks with one read of the file and one sha256, by http.client.

A probe for the suggested fix of ``modelpack publish`` (see benchmarks/README.md), not
part of modelpack. twine reads the file twice (blake2b + sha256 first, then the upload
through requests-toolbelt's MultipartEncoder in 16 KiB reads with per-read length
bookkeeping). Usage: ``python _e2e_upload_probe.py WHEEL REGISTRY_URL``; prints seconds.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


def upload(wheel: Path, url: str) -> float:
    name, version = wheel.name.split("-")[:2]
    boundary = uuid.uuid4().hex
    fields = {":action": "file_upload", "protocol_version": "1", "name": name,
              "version": version, "filetype": "bdist_wheel", "pyversion": "py3",
              "metadata_version": "2.1"}  # fmt: skip
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
             f'filename="{wheel.name}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()  # fmt: skip
    digest = hashlib.sha256()

    def tail() -> bytes:
        return (f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="sha256_digest"'
                f"\r\n\r\n{digest.hexdigest()}\r\n--{boundary}--\r\n").encode()  # fmt: skip

    def body() -> Iterator[bytes]:
        yield head
        with wheel.open("rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                yield block
        yield tail()

    length = len(head) + wheel.stat().st_size + len(tail())  # the digest's length is fixed
    parts = urllib.parse.urlsplit(url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=600)
    conn.request("POST", "/", body=body(), headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(length)})  # fmt: skip
    resp = conn.getresponse()
    text = resp.read()
    if resp.status != 200:
        raise SystemExit(f"upload answered {resp.status}: {text[:300]!r}")
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"{upload(Path(sys.argv[1]), sys.argv[2]):.2f}")
