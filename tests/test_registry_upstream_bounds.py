"""`serve --upstream` against a broken or hostile upstream: bounded in time and size.

The upstream is a real TCP server on loopback (a thread in the test) that answers the
way a broken index or an attacker could: never, with an endless page, or an endless file.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
from test_registry_upstream import JSON, proxy


class HostileUpstream:
    """A real TCP server on loopback that answers like a broken or hostile index.

    ``/simple/hang/``: reads the request and never answers. ``/simple/endless/``: a JSON
    page that never ends. ``/simple/bigfile/``: a valid page whose one file never ends.
    """

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/simple/"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        with contextlib.suppress(OSError), conn:
            request = conn.recv(65536).decode(errors="replace")
            path = request.split(" ", 2)[1] if " " in request else ""
            head = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {}\r\n\r\n"
            if path == "/simple/hang/":
                self.stop.wait(60)
            elif path == "/simple/bigfile/":
                page = {"meta": {"api-version": "1.0"}, "name": "bigfile", "files": [
                    {"filename": "bigfile-1.0-py3-none-any.whl", "hashes": {"sha256": "0" * 64},
                     "url": "/files/bigfile-1.0-py3-none-any.whl"}]}  # fmt: skip
                conn.sendall(head.format(JSON).encode() + json.dumps(page).encode())
            else:
                kind = JSON if path == "/simple/endless/" else "application/octet-stream"
                conn.sendall(head.format(kind).encode())
                while not self.stop.is_set():
                    conn.sendall(b" " * (1 << 20))

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_hostile_upstream_neither_hangs_the_registry_nor_fills_its_disk(tmp_path: Path) -> None:
    import time
    from concurrent.futures import ThreadPoolExecutor

    hostile = HostileUpstream()
    try:
        with proxy(tmp_path, hostile.url, "--max-upload-size", "5MiB") as reg:
            with ThreadPoolExecutor(2) as pool:
                hung = pool.submit(requests.get, f"{reg.index_url}hang/", timeout=120)
                time.sleep(1)
                started = time.monotonic()
                assert requests.get(f"{reg.url}/health", timeout=5).status_code == 200
                assert time.monotonic() - started < 2  # the others are served meanwhile
                endless = requests.get(f"{reg.index_url}endless/", timeout=120)
                assert endless.status_code == 502 and "over 52428800 bytes" in endless.text
                answer = hung.result()
            assert answer.status_code == 502 and "timed out" in answer.text
            page = requests.get(f"{reg.index_url}bigfile/", headers={"Accept": JSON})
            big = requests.get(urljoin(f"{reg.index_url}bigfile/", page.json()["files"][0]["url"]), timeout=120)  # fmt: skip
            assert big.status_code == 502 and "cap" in big.text
            assert not list((reg.data / "mirror" / "files").rglob("*.whl"))
            assert os.listdir(reg.data / "mirror" / "tmp") == []
            status = requests.get(f"{reg.url}/health").json()["upstream"]
            assert status["ok"] is False and status["last_error"]
    finally:
        hostile.close()
