"""Slow and hostile clients cannot stall the registry (issue 13, "Slowloris").

Connections that send half a request line, uploads that trickle or stall, and small
request bodies that trickle are held open against a real registry with its default
16 threads; ``/health`` and a ``/simple/`` page must still answer. The bound on each
answer (5 s) is generous: it is no timing assert, only "answered at all" (before the
fix they did not answer for as long as the connections stayed open). The latency
figures are in ``benchmarks/slow_clients.py``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests
from registry_support import (
    MULTIPART_TYPE,
    listing,
    make_wheel,
    multipart_body,
    multipart_head,
    post_upload,
    stream_upload,
    twine_upload,
)

from support import Registry

ANSWER_WITHIN = 5.0


def _connect(reg: Registry, first: bytes) -> socket.socket:
    sock = socket.create_connection((reg.host, reg.port), timeout=10)
    sock.sendall(first)
    return sock


def _upload_head(reg: Registry, filename: str, announced: int) -> bytes:
    """The request head and the form fields of an upload announcing ``announced`` bytes."""
    head = multipart_head(filename)
    return (
        f"POST / HTTP/1.1\r\nHost: {reg.host}:{reg.port}\r\nContent-Type: {MULTIPART_TYPE}\r\n"
        f"Content-Length: {len(head) + announced}\r\n\r\n"
    ).encode() + head


@contextmanager
def _hostile(reg: Registry, half_lines: int, uploads: int, small_bodies: int,
             filename: str) -> Iterator[list[socket.socket]]:  # fmt: skip
    """Open the hostile connections; yield the trickling ones; close all at the end."""
    with ExitStack() as stack:
        for _ in range(half_lines):
            stack.enter_context(_connect(reg, b"GET /simple/ HT"))
        for _ in range(small_bodies):  # a JSON API write whose 100-byte body trickles
            first = (f"POST /api/v1/tokens HTTP/1.1\r\nHost: {reg.host}\r\nContent-Type: "
                     "application/json\r\nContent-Length: 100\r\n\r\n{").encode()  # fmt: skip
            stack.enter_context(_connect(reg, first))
        trickling = [
            stack.enter_context(_connect(reg, _upload_head(reg, filename, 10_000_000)))
            for _ in range(uploads)
        ]
        yield trickling


def _answers(url: str) -> None:
    for path in ("/health", "/simple/model-foo/") * 3:
        assert requests.get(url + path, timeout=ANSWER_WITHIN).status_code == 200, path


def _read_answer(sock: socket.socket, within: float) -> bytes:
    """What the server sends until it closes the connection (at most ``within`` seconds)."""
    sock.settimeout(within)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # the server closed with unread bytes; what arrived before is the answer
    return answer


def test_half_request_lines_and_trickling_uploads_do_not_stall_reads(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "dist", "model-foo", "1.0")
    with Registry(tmp_path / "data") as reg:  # the defaults: one worker, 16 threads
        assert post_upload(reg.url, wheel.name, wheel.read_bytes()).status_code == 200
        with _hostile(reg, 48, 16, 16, "model_foo-2.0-py3-none-any.whl") as trickling:
            for round_ in range(3):
                for sock in trickling:
                    sock.sendall(b"x")
                _answers(reg.url)
                time.sleep(0.2 * round_)
            # a small upload (its body arrives with its head) is served beside them too
            second = make_wheel(tmp_path / "dist", "model-foo", "1.1")
            assert post_upload(reg.url, second.name, second.read_bytes()).status_code == 200


def test_clients_that_do_not_read_their_downloads_do_not_stall_reads(tmp_path: Path) -> None:
    """20 downloads of a 32 MiB wheel whose clients read nothing: sendfile blocks."""
    big = make_wheel(tmp_path / "dist", "model-big", "1.0", payload=bytes(32 << 20))
    with Registry(tmp_path / "data") as reg:
        assert stream_upload(reg.url, big).status_code == 200
        wheel = make_wheel(tmp_path / "dist", "model-foo", "1.0")
        assert post_upload(reg.url, wheel.name, wheel.read_bytes()).status_code == 200
        get = f"GET /packages/{big.name} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        with ExitStack() as stack:
            for _ in range(20):
                sock = stack.enter_context(_connect(reg, get))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            time.sleep(0.5)  # the server's sends fill the buffers and block
            _answers(reg.url)


def test_a_trickled_upload_is_cut_off_leaves_nothing_and_can_be_sent_again(
    tmp_path: Path,
) -> None:
    wheel = make_wheel(tmp_path / "dist", "model-foo", "1.0", payload=bytes(200_000))
    content = wheel.read_bytes()
    args = ["--body-timeout", "1", "--min-upload-rate", "10KiB"]
    with Registry(tmp_path / "data", args=args) as reg:
        trickle = _connect(reg, _upload_head(reg, wheel.name, len(content)) + content[:10])
        stall = _connect(reg, _upload_head(reg, wheel.name, len(content)) + content[:10])
        with trickle, stall:
            for i in range(100):  # 1 byte every 0.05 s (20 bytes/s) for at most 5 s
                try:
                    trickle.sendall(content[10 + i : 11 + i])
                except OSError:
                    break  # cut off: the answer is waiting in the receive buffer
                time.sleep(0.05)
            slow = _read_answer(trickle, ANSWER_WITHIN)
            silent = _read_answer(stall, ANSWER_WITHIN)
        assert slow.startswith(b"HTTP/1.1 408 Request Timeout"), slow[:300]
        assert b"--min-upload-rate" in slow and b"nothing was stored" in slow, slow
        assert silent.startswith(b"HTTP/1.1 408 Request Timeout"), silent[:300]
        assert b"no data from the client for 1 s (--body-timeout)" in silent, silent
        for sub in ("tmp", "packages", "meta"):
            assert listing(reg.data, sub) == [], sub
        assert requests.get(f"{reg.url}/simple/model-foo/", timeout=10).status_code == 404

        result = twine_upload(reg.url, wheel)
        assert result.returncode == 0, result.stdout + result.stderr
        page = requests.get(f"{reg.url}/simple/model-foo/", timeout=10)
        assert page.status_code == 200 and wheel.name in page.text
        assert listing(reg.data, "packages") == [wheel.name]
        assert listing(reg.data, "tmp") == []


def test_a_request_head_that_does_not_arrive_in_time_is_answered_408(tmp_path: Path) -> None:
    with Registry(tmp_path / "data", args=["--header-timeout", "1"]) as reg:
        start = time.monotonic()
        with _connect(reg, b"GET /health HT") as half, _connect(reg, b"") as silent:
            answer = _read_answer(half, ANSWER_WITHIN)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
            assert b"within 1 s (--header-timeout)" in answer
            assert _read_answer(silent, ANSWER_WITHIN) == b""  # closed without a word
        assert time.monotonic() - start < ANSWER_WITHIN
        # a head that arrives in pieces, in time, is served
        with _connect(reg, b"GET /hea") as sock:
            time.sleep(0.3)
            sock.sendall(b"lth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_answer(sock, ANSWER_WITHIN).startswith(b"HTTP/1.1 200 OK")


def test_kept_alive_and_pipelined_requests_are_served_in_order(tmp_path: Path) -> None:
    with Registry(tmp_path / "data") as reg:
        two = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /simple/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # fmt: skip
        with _connect(reg, two) as sock:
            answer = _read_answer(sock, ANSWER_WITHIN)
        assert answer.count(b"HTTP/1.1 200 OK") == 2, answer
        assert answer.index(b'"status": "ok"') < answer.index(b"<title>Simple index")
        # a small upload whose body comes in a second write, as uv publish sends it
        small = make_wheel(tmp_path / "dist", "model-bar", "1.0")
        body, ctype = multipart_body(small.name, small.read_bytes())
        head = (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        with _connect(reg, head + body[:100]) as sock:
            time.sleep(0.3)
            sock.sendall(body[100:])
            assert _read_answer(sock, ANSWER_WITHIN).startswith(b"HTTP/1.1 200 OK")
        with requests.Session() as session:  # keep-alive, then a write that closes
            for _ in range(3):
                assert session.get(f"{reg.url}/health", timeout=10).status_code == 200
            wheel = make_wheel(tmp_path / "dist", "model-foo", "1.0")
            assert post_upload(reg.url, wheel.name, wheel.read_bytes()).status_code == 200
            assert session.get(f"{reg.url}/simple/model-foo/", timeout=10).status_code == 200


def test_the_server_raises_its_open_file_limit_for_its_connections(tmp_path: Path) -> None:
    """Started with a soft limit of 256, it still holds 400 idle connections and answers."""

    class LowLimit(Registry):
        def command(self) -> list[str]:
            return ["sh", "-c", 'ulimit -Sn 256 && exec "$@"', "sh", *super().command()]

    with LowLimit(tmp_path / "data", args=["--max-connections", "1000"]) as reg:
        with ExitStack() as stack:
            for _ in range(400):
                stack.enter_context(_connect(reg, b"GET / HT"))
            assert requests.get(f"{reg.url}/health", timeout=ANSWER_WITHIN).status_code == 200


def test_past_max_connections_a_new_client_closes_the_longest_waiting_one(
    tmp_path: Path,
) -> None:
    with Registry(tmp_path / "data", args=["--max-connections", "50"]) as reg:
        with ExitStack() as stack:
            held = [stack.enter_context(_connect(reg, b"GET / HT")) for _ in range(80)]
            assert requests.get(f"{reg.url}/health", timeout=ANSWER_WITHIN).status_code == 200
            # the first ones were closed to make room, without an answer
            assert _read_answer(held[0], ANSWER_WITHIN) == b""
        for _ in range(50):  # the server reports it within a quarter of a second
            if "to make room for new ones (--max-connections 50)" in reg.log.read_text():
                break
            time.sleep(0.1)
        else:
            raise AssertionError(reg.log.read_text())


def test_bad_timeouts_are_one_line_errors(tmp_path: Path) -> None:
    for flag, value in [("--header-timeout", "0"), ("--max-connections", "0")]:
        result = subprocess.run(
            [sys.executable, "-m", "modelpack_registry", "serve", "--data", str(tmp_path / "d"),
             flag, value], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1 and flag in result.stderr, result.stderr
