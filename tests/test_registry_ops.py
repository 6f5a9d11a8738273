"""The registry as a platform team runs it: credentials, safe defaults, crashes, replicas.

Real server processes only: clients that hang up, servers killed with SIGKILL, two
servers on one folder, and the `verify` / `reindex` maintenance commands.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import bcrypt
import requests
from registry_support import listing, make_wheel, post_upload, send_half_upload, twine_upload

from support import Registry, free_port


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "modelpack_registry", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_htpasswd_guards_uploads_but_not_reads(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    wheel = make_wheel(tmp_path / "dist", "auth-model", "1.0")
    with Registry(tmp_path / "data", args=["--htpasswd", str(htpasswd)]) as reg:
        anonymous = post_upload(reg.url, wheel.name, wheel.read_bytes())
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="modelpack"'
        wrong = post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=("alice", "nope"))
        assert wrong.status_code == 403
        assert twine_upload(reg.url, wheel, user="alice", password="wrong").returncode != 0
        assert listing(reg.data, "packages") == []
        result = twine_upload(reg.url, wheel, user="alice", password="s3cret")
        assert result.returncode == 0, result.stdout + result.stderr
        assert requests.get(reg.index_url + "auth-model/").status_code == 200
        # A repeated request is answered from the verified-credentials cache.
        started = time.perf_counter()
        again = post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=("alice", "s3cret"))
        assert again.status_code == 200  # the same bytes again: a re-run succeeds
        assert time.perf_counter() - started < 0.5


def test_refuses_anonymous_uploads_on_a_public_address(tmp_path: Path) -> None:
    result = run_cli("serve", "--data", str(tmp_path / "d"), "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 1
    assert "--htpasswd FILE" in result.stderr and "--insecure" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    with Registry(tmp_path / "data", host="0.0.0.0", args=["--insecure"]) as reg:
        assert requests.get(f"{reg.url}/health").status_code == 200


def test_startup_errors_are_one_line(tmp_path: Path) -> None:
    missing = run_cli("serve", "--data", str(tmp_path / "d"), "--htpasswd", str(tmp_path / "no"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        taken = run_cli("serve", "--data", str(tmp_path / "d"), "--port", port)
    assert taken.returncode == 1 and "cannot listen" in taken.stderr
    assert "Traceback" not in taken.stderr + missing.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    not_dir = run_cli("serve", "--data", str(blocker / "data"), "--port", str(free_port()))
    assert not_dir.returncode == 1 and "not writable" in not_dir.stderr
    usage = run_cli("serve", "--max-upload-size", "lots")
    assert usage.returncode == 2


def test_oversize_body_is_refused_with_413(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "big-model", "1.0", payload=b"\x01" * 300_000)
    with Registry(tmp_path / "data", args=["--max-upload-size", "100KiB"]) as reg:
        response = post_upload(reg.url, wheel.name, wheel.read_bytes())
        assert response.status_code == 413 and "--max-upload-size" in response.text
        assert listing(reg.data, "packages") == [] and listing(reg.data, "tmp") == []


def test_client_disconnect_mid_upload_leaves_nothing(registry: Registry, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "flaky-model", "1.0", payload=b"\x02" * 2_000_000)
    sock = send_half_upload(registry.host, registry.port, wheel.name, wheel.read_bytes())
    assert wait_until(lambda: listing(registry.data, "tmp") != [])  # the upload is in flight
    sock.close()
    assert wait_until(lambda: listing(registry.data, "tmp") == [])
    assert listing(registry.data, "packages") == [] and listing(registry.data, "meta") == []
    assert requests.get(registry.index_url + "flaky-model/").status_code == 404
    assert twine_upload(registry.url, wheel).returncode == 0
    assert requests.get(registry.index_url + "flaky-model/").status_code == 200


def test_server_killed_mid_upload_then_restarted(registry: Registry, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "crash-model", "1.0", payload=b"\x03" * 2_000_000)
    sock = send_half_upload(registry.host, registry.port, wheel.name, wheel.read_bytes())
    assert wait_until(lambda: listing(registry.data, "tmp") != [])
    registry.kill()
    sock.close()
    assert listing(registry.data, "tmp") != []  # the dead server's partial upload
    registry.start()
    assert listing(registry.data, "tmp") == []
    assert listing(registry.data, "packages") == []
    assert requests.get(registry.index_url + "crash-model/").status_code == 404
    assert twine_upload(registry.url, wheel).returncode == 0
    assert listing(registry.data, "packages") == [wheel.name]


def test_two_servers_on_one_folder_see_each_others_uploads(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Registry(data) as one, Registry(data) as two:
        assert requests.get(two.index_url + "shared-model/").status_code == 404
        wheel = make_wheel(tmp_path, "shared-model", "1.0")
        assert twine_upload(one.url, wheel).returncode == 0
        published = time.monotonic()
        assert wait_until(
            lambda: requests.get(two.index_url + "shared-model/").status_code == 200, 1.0
        )
        assert time.monotonic() - published < 1.0
        # And the other server refuses other bytes under that name: immutability holds
        # across replicas (the same bytes again are a success on both).
        other = make_wheel(tmp_path / "other", "shared-model", "1.0", payload=b"other")
        assert post_upload(two.url, other.name, other.read_bytes()).status_code == 409
        assert post_upload(two.url, wheel.name, wheel.read_bytes()).status_code == 200


def test_concurrent_uploads_of_one_filename_exactly_one_wins(tmp_path: Path) -> None:
    a = make_wheel(tmp_path / "a", "race-model", "1.0", payload=b"a" * 3_000_000)
    b = make_wheel(tmp_path / "b", "race-model", "1.0", payload=b"b" * 3_000_000)
    with Registry(tmp_path / "data", args=["--workers", "2"]) as reg:
        barrier = threading.Barrier(2)
        statuses: dict[str, int] = {}

        def upload(path: Path) -> None:
            barrier.wait()
            statuses[path.parent.name] = post_upload(
                reg.url, path.name, path.read_bytes()
            ).status_code

        threads = [threading.Thread(target=upload, args=(p,)) for p in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses.values()) == [200, 409]
        winner = a if statuses["a"] == 200 else b
        stored = reg.data / "packages" / a.name
        assert stored.read_bytes() == winner.read_bytes()
        assert run_cli("verify", "--data", str(reg.data)).returncode == 0
        assert listing(reg.data, "tmp") == []


def test_verify_and_reindex(registry: Registry, tmp_path: Path) -> None:
    good = make_wheel(tmp_path, "good-model", "1.0")
    bad = make_wheel(tmp_path, "bad-model", "1.0", payload=b"\x00" * 5000)
    assert twine_upload(registry.url, good, bad).returncode == 0
    data = str(registry.data)
    clean = run_cli("verify", "--data", data)
    assert clean.returncode == 0, clean.stdout

    stored = registry.data / "packages" / bad.name
    raw = bytearray(stored.read_bytes())
    raw[200:210] = b"CORRUPTED!"
    stored.write_bytes(bytes(raw))
    (registry.data / "meta" / "gone-1.0-py3-none-any.whl.json").write_text("{}")
    report = run_cli("verify", "--data", data)
    assert report.returncode == 1
    assert f"corrupt: packages/{bad.name}" in report.stdout
    assert "orphan: meta/gone-1.0-py3-none-any.whl.json" in report.stdout
    assert good.name not in report.stdout

    stored.write_bytes(bad.read_bytes())  # restore, then lose every derived file
    for path in (registry.data / "meta").iterdir():
        path.unlink()
    assert run_cli("verify", "--data", data).returncode == 1
    rebuilt = run_cli("reindex", "--data", data)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert sorted(listing(registry.data, "meta")) == sorted(
        f"{w.name}{ext}" for w in (good, bad) for ext in (".json", ".metadata", ".card.html")
    )
    assert run_cli("verify", "--data", data).returncode == 0
    page = requests.get(registry.index_url + "good-model/", timeout=10)
    assert page.status_code == 200 and "data-core-metadata" in page.text
