"""A refused upload is refused before its body is read, and the client hears why.

twine sends every form field before the file, so after the first few KiB of a 256 MiB
upload the registry knows the model, the version and the file name. A user who may not
publish that model (403), a file that is already published (409) or a bad file name (400)
is answered then, with the message the same check gives after the whole body, and the
connection is closed without losing that answer (linger.py). The server logs how much of
the body it had read when it refused: the tests assert on that, never on timing. Real
registry processes, real twine and ``modelpack publish``, plain requests, raw sockets.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
import requests
from registry_support import (
    MULTIPART_TYPE,
    PASSWORDS,
    listing,
    make_big_wheel,
    make_wheel,
    multipart_head,
    post_upload,
    stream_upload,
)
from test_registry_access import server, twine

from support import Registry, modelpack

BIG = 256 * 1024**2
REFUSED = re.compile(r"refused (\S+) after (\d+) of (\d+) bytes: (\d{3}) (.*)")


BIG_WHEEL_SHA256 = "f" * 64  # what a client would announce: not the small wheel's


@pytest.fixture(scope="module")
def big_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model_foo-2.0-py3-none-any.whl with 256 MiB of weights (a model wheel for modelpack)."""
    return make_big_wheel(tmp_path_factory.mktemp("big"), "model-foo", "2.0", BIG)


def refusals(reg: Registry) -> list[tuple[str, int, int, int, str]]:
    """(file, bytes read, body size, status, message) of each refusal the server logged."""
    found = REFUSED.findall(reg.log.read_text())
    return [(f, int(got), int(total), int(code), msg) for f, got, total, code, msg in found]


def assert_refused_early(reg: Registry, count: int, filename: str, status: int) -> str:
    """The ``count``-th refusal was of ``filename`` with ``status``, after a few KiB."""
    logged = refusals(reg)
    assert len(logged) == count, logged
    name, got, total, code, message = logged[-1]
    assert (name, code) == (filename, status)
    assert total > BIG and got < total // 64, f"the server read {got} of {total} bytes first"
    return message


def state(data: Path) -> tuple[list[str], ...]:
    return tuple(listing(data, sub) for sub in ("packages", "meta", "tmp", "state/owners"))


def test_an_upload_the_user_may_not_make_is_refused_before_its_body(
    tmp_path: Path, htpasswd: Path, big_wheel: Path
) -> None:
    dist = tmp_path / "dist"
    # One thread per worker: a thread held by a refused upload would block the next one.
    with server(tmp_path, htpasswd, "--threads", "1") as reg:
        code, out = twine(reg, make_wheel(dist, "model-foo", "1.0"), "alice")
        assert code == 0, out
        owners = (reg.data / "state/owners/model-foo.json").read_bytes()
        before = state(reg.data)

        # twine: bob is told who owns model-foo, not "connection reset".
        code, out = twine(reg, big_wheel, "bob")
        assert code != 0 and "403 Forbidden" in out and "owned by alice" in out, out
        assert "reset" not in out.lower() and "aborted" not in out.lower(), out
        message = assert_refused_early(reg, 1, big_wheel.name, 403)
        assert message.startswith("model-foo is owned by alice; bob may not upload it")

        # modelpack publish (its own existence check passes: 2.0 is new) says the same.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_")}
        env.update(MODELPACK_USERNAME="bob", MODELPACK_PASSWORD=PASSWORDS["bob"])
        refused = modelpack("publish", big_wheel, "--registry", reg.url, env=env)
        assert refused.returncode == 1, refused.stderr
        assert "HTTP 403: model-foo is owned by alice" in refused.stderr, refused.stderr
        assert "lost the connection" not in refused.stderr
        assert_refused_early(reg, 2, big_wheel.name, 403)

        # Nothing was written, the owners are untouched, and the worker serves alice.
        assert state(reg.data) == before and listing(reg.data, "tmp") == []
        assert (reg.data / "state/owners/model-foo.json").read_bytes() == owners
        code, out = twine(reg, make_wheel(dist, "model-foo", "2.0"), "alice")
        assert code == 0, out
        assert requests.get(f"{reg.url}/health", timeout=10).status_code == 200


def test_an_existing_file_is_refused_before_its_body(tmp_path: Path, big_wheel: Path) -> None:
    small = make_wheel(tmp_path / "dist", "model-foo", "2.0")
    fields = {"name": "model-foo", "version": "2.0"}
    with Registry(tmp_path / "data", args=["--threads", "1"]) as reg:
        assert post_upload(reg.url, small.name, small.read_bytes(), fields).status_code == 200
        before = state(reg.data)

        # Plain requests (no client-side existence check), fields first as twine sends,
        # with the sha256_digest that tells the registry these are other bytes (the
        # same bytes again would be a success, known only after the body).
        fields["sha256_digest"] = BIG_WHEEL_SHA256
        resp = stream_upload(reg.url, big_wheel, fields)
        assert resp.status_code == 409, resp.text
        assert resp.headers["Connection"] == "close"
        assert "already exists; published versions are immutable" in resp.text
        assert_refused_early(reg, 1, big_wheel.name, 409)

        # The same wheel under another spelling of its name.
        respelled = tmp_path / "respelled" / "Model_Foo-2.0-py3-none-any.whl"
        respelled.parent.mkdir()
        os.link(big_wheel, respelled)
        resp = stream_upload(reg.url, respelled, fields)
        assert resp.status_code == 409, resp.text
        assert f"already exists as {small.name}" in resp.text
        assert_refused_early(reg, 2, respelled.name, 409)

        # A file name the registry refuses anyway (400).
        renamed = tmp_path / "renamed" / "model_foo-2.0.exe"
        renamed.parent.mkdir()
        os.link(big_wheel, renamed)
        resp = stream_upload(reg.url, renamed, fields)
        assert resp.status_code == 400 and "unsupported file type" in resp.text, resp.text
        assert_refused_early(reg, 3, renamed.name, 400)

        assert state(reg.data) == before and listing(reg.data, "tmp") == []
        good = make_wheel(tmp_path / "dist", "model-foo", "2.1")
        assert post_upload(reg.url, good.name, good.read_bytes()).status_code == 200
        assert listing(reg.data, "packages") == [small.name, good.name]
        assert listing(reg.data, "tmp") == []


def test_a_refused_client_that_stops_sending_does_not_hold_the_worker(tmp_path: Path) -> None:
    small = make_wheel(tmp_path / "dist", "model-foo", "1.0")
    with Registry(tmp_path / "data", args=["--threads", "1"]) as reg:
        assert post_upload(reg.url, small.name, small.read_bytes()).status_code == 200
        # Announce 256 MiB, send the fields, the file's headers and 64 KiB, then go quiet
        # with the connection open.
        fields = {"name": "model-foo", "version": "1.0", "sha256_digest": BIG_WHEEL_SHA256}
        head = multipart_head(small.name, fields)
        request = (
            f"POST / HTTP/1.1\r\nHost: {reg.host}:{reg.port}\r\nContent-Type: {MULTIPART_TYPE}"
            f"\r\nContent-Length: {len(head) + BIG}\r\n\r\n"
        ).encode()
        with socket.create_connection((reg.host, reg.port), timeout=20) as sock:
            sock.sendall(request + head + bytes(64 * 1024))
            answer = b""
            while chunk := sock.recv(65536):  # the server closes: no timeout
                answer += chunk
            status, *headers = answer.split(b"\r\n\r\n")[0].split(b"\r\n")
            assert status.startswith(b"HTTP/1.1 409 Conflict: model_foo-1.0"), answer[:300]
            assert b"Connection: close" in headers, headers
            assert_refused_early(reg, 1, small.name, 409)

            # With the silent client still connected, the only thread takes the next upload.
            good = make_wheel(tmp_path / "dist", "model-foo", "1.1")
            assert post_upload(reg.url, good.name, good.read_bytes()).status_code == 200
        assert listing(reg.data, "tmp") == []
