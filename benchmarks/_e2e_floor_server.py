"""The raw floor's server: PUT stores the body under the path, GET sends it back.

No auth, no index, no validation: the least an HTTP file store can do. Bodies are
streamed in 1 MiB chunks to a temporary file that is renamed into place, and sent
with ``sendfile``. Usage: ``python _e2e_floor_server.py DATA_DIR PORT``.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 1 << 20


class Handler(BaseHTTPRequestHandler):
    root: Path

    def _path(self) -> Path:
        name = self.path.lstrip("/").replace("/", "_")
        return self.root / name

    def do_PUT(self) -> None:
        left = int(self.headers["Content-Length"])
        target = self._path()
        tmp = target.with_name(target.name + ".part")
        with tmp.open("wb") as f:
            while left:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    break
                f.write(data)
                left -= len(data)
        tmp.replace(target)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        target = self._path()
        if self.path == "/health" or not target.is_file():
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = target.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.flush()
        with target.open("rb") as f:
            offset = 0
            while offset < size:
                offset += os.sendfile(self.connection.fileno(), f.fileno(), offset, size - offset)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    Handler.root = Path(sys.argv[1])
    Handler.root.mkdir(parents=True, exist_ok=True)
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()


if __name__ == "__main__":
    main()
