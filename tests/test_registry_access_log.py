"""``serve --access-log`` counts the bytes of files sent with sendfile.

gunicorn counts only what it writes itself; every ``/packages/`` download goes out with
``sendfile`` and was logged with 0 bytes.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from pathlib import Path

import requests
from registry_support import make_wheel, post_upload

from support import Registry

SIZE = 32 * 1024 * 1024  # far more than the socket buffers hold


def logged_bytes(reg: Registry, request_line: str, status: int, timeout: float = 15.0) -> list[int]:
    """The body sizes the access log gives for ``request_line`` answered with ``status``."""
    pattern = re.compile(rf'"{re.escape(request_line)} HTTP/1.1" {status} (\d+) ')
    deadline = time.monotonic() + timeout
    while True:
        found = [int(n) for n in pattern.findall(reg.log.read_text())]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_the_access_log_counts_bytes_sent_with_sendfile(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "model-big", "1.0", payload=bytes(SIZE))
    size = wheel.stat().st_size
    with Registry(tmp_path / "data", args=["--access-log"]) as reg:
        assert post_upload(reg.url, wheel.name, wheel.read_bytes()).status_code == 200
        path = f"/packages/{wheel.name}"
        whole = requests.get(reg.url + path, timeout=30)
        assert whole.status_code == 200 and len(whole.content) == size
        assert logged_bytes(reg, f"GET {path}", 200) == [size]

        part = requests.get(reg.url + path, headers={"Range": "bytes=100-1099"}, timeout=30)
        assert part.status_code == 206 and len(part.content) == 1000
        assert logged_bytes(reg, f"GET {path}", 206) == [1000]

        page = requests.get(f"{reg.url}/simple/model-big/", timeout=10)
        assert logged_bytes(reg, "GET /simple/model-big/", 200) == [len(page.content)]

        # A client that reads a little and hangs up: what was sent, not the Content-Length.
        with socket.create_connection((reg.host, reg.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET {path}?cut HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            time.sleep(0.5)  # sendfile fills the buffers, then waits
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        (cut,) = logged_bytes(reg, f"GET {path}?cut", 200)
        assert 0 < cut < size, cut
