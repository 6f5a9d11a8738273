"""Model cards are rendered once per file, outside page views, under a CPU budget.

A README of ``"![" * 250_000`` (0.5 MB) cost seconds of CPU on every first view of its
page, in the request thread: 16 concurrent views held ``/health`` for minutes. Its cost
is measured in benchmarks/render.py; here the bounds are loose on purpose.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from registry_support import MULTIPART_TYPE, multipart_body, multipart_head
from test_registry_catalog import model_wheel, upload
from test_registry_ops import wait_until

from support import Registry

HOSTILE = "![" * 250_000
BUDGET_NOTE = "could not be rendered within its budget"
PENDING_NOTE = "The model card is being prepared"


def _card(data: Path, wheel: Path) -> Path:
    return data / "meta" / f"{wheel.name}.card.html"


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def _registry_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "modelpack_registry", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_a_hostile_readme_costs_page_views_nothing(registry: Registry, tmp_path: Path) -> None:
    wheel = model_wheel(tmp_path / "dist", "model-evil", "1.0", readme=HOSTILE)
    body, ctype = multipart_body(wheel.name, wheel.read_bytes())
    # The upload renders the card once: 2.4 s of CPU in a niced child, slow on a busy machine.
    answer = requests.post(f"{registry.url}/", data=body, headers={"Content-Type": ctype},
                           timeout=300)  # fmt: skip
    assert answer.status_code == 200, answer.text
    card = _card(registry.data, wheel)
    assert BUDGET_NOTE in card.read_text()
    stamp = _stamp(card)

    def view(_: int) -> requests.Response:
        return requests.get(f"{registry.url}/models/model-evil/", timeout=20)

    def health(_: int) -> float:
        started = time.monotonic()
        assert requests.get(f"{registry.url}/health", timeout=20).status_code == 200
        return time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(24) as pool:
        views = pool.map(view, range(16))
        probes = pool.map(health, range(8))
        pages, waits = list(views), list(probes)
    # Loose: rendering on each view took minutes here; reading the stored card, no time.
    assert time.monotonic() - started < 15, "16 views of a hostile card stalled the registry"
    assert max(waits) < 10
    for page in pages:
        assert page.status_code == 200
        assert BUDGET_NOTE in page.text and "<pre>![![![" in page.text
    assert _stamp(card) == stamp  # served, never rendered again


def test_a_card_is_rendered_once_and_rebuilt_by_reindex(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dist = tmp_path / "dist"
    wheel = model_wheel(dist, "model-foo", "1.0", readme="# Fraud model\n\n| a |\n|---|\n| 1 |\n")
    with Registry(data) as reg:
        page_url = f"{reg.url}/models/model-foo/"
        upload(reg, wheel)
        card = _card(data, wheel)
        assert "<h1>Fraud model</h1>" in card.read_text()
        stamp = _stamp(card)
        assert "<h1>Fraud model</h1>" in requests.get(page_url).text
        upload(reg, model_wheel(dist, "model-bar", "1.0"))  # a new generation
        assert "<h1>Fraud model</h1>" in requests.get(page_url).text
        assert _stamp(card) == stamp  # not rendered again for the new generation

        card.unlink()  # as after an upgrade, or a file placed by hand
        upload(reg, model_wheel(dist, "model-baz", "1.0"))  # a new snapshot reads it again
        assert PENDING_NOTE in requests.get(page_url).text  # answered at once
        deadline = time.monotonic() + 30
        while not card.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "<h1>Fraud model</h1>" in requests.get(page_url).text  # rendered behind
        stamp = _stamp(card)
        for _ in range(5):
            requests.get(page_url).raise_for_status()
        assert _stamp(card) == stamp

    text = card.read_text()
    card.write_text(text.replace("metadata-sha256=", "metadata-sha256=0"))  # stale
    verify = _registry_cli("verify", "--data", str(data))
    assert verify.returncode == 1 and f"stale card: meta/{wheel.name}.card.html" in verify.stdout
    (data / "meta" / "model_gone-1.0-py3-none-any.whl.card.html").write_text("orphan")
    reindex = _registry_cli("reindex", "--data", str(data))
    assert reindex.returncode == 0, reindex.stderr
    assert "removed meta/model_gone-1.0-py3-none-any.whl.card.html" in reindex.stdout
    assert card.read_text() == text  # rebuilt, as the upload made it
    assert _registry_cli("verify", "--data", str(data)).returncode == 0
    assert not [n for n in os.listdir(data / "tmp") if n.startswith("card-")]


def _renderers(root: int) -> list[int]:
    """The card renderer children among the descendants of process *root* (/proc)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            except FileNotFoundError:
                continue
            for child in map(int, children):
                todo.append(child)
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                except FileNotFoundError:
                    continue
                if b"modelpack_registry.card_render" in cmdline:
                    found.append(child)
    return found


def test_an_upload_starts_its_card_renderer_early_and_never_leaves_it_behind(
    registry: Registry, tmp_path: Path
) -> None:
    """Once an upload passes its early checks, its card's renderer starts while the body
    arrives (at most two waiting per server process); it is gone when the upload ends:
    published, refused after its body, or cut off by the client."""
    assert registry.proc is not None
    root = registry.proc.pid
    dist = tmp_path / "dist"
    wheels = [
        model_wheel(dist, f"model-early{i}", "1.0", readme=f"# Early {i}\n") for i in range(3)
    ]

    def stall(wheel: Path) -> socket.socket:
        """An upload that stops after its file part's first bytes."""
        name = wheel.name.split("-")[0].replace("_", "-")
        head = multipart_head(wheel.name, {"name": name, "version": "1.0"})
        sock = socket.create_connection(("127.0.0.1", registry.port), timeout=30)
        sock.sendall(
            f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {MULTIPART_TYPE}\r\n"
            f"Content-Length: {len(head) + 1_000_000}\r\n\r\n".encode()
            + head
            + b"PK"
        )
        return sock

    stalled = [stall(wheel) for wheel in wheels]
    assert wait_until(lambda: len(_renderers(root)) == 2, 30)  # two started ahead, not three
    time.sleep(0.5)
    assert len(_renderers(root)) == 2
    for sock in stalled:
        sock.close()
    assert wait_until(lambda: not _renderers(root), 30)  # the client went away: stopped
    again = stall(wheels[2])  # and their places are free again
    assert wait_until(lambda: len(_renderers(root)) == 1, 30)
    again.close()
    assert wait_until(lambda: not _renderers(root), 30)

    upload(registry, wheels[0])  # published: its card rendered by the early child
    assert "<h1>Early 0</h1>" in _card(registry.data, wheels[0]).read_text()
    assert not _renderers(root)
    body, ctype = multipart_body(wheels[1].name, wheels[1].read_bytes(),
                                 {"sha256_digest": "0" * 64})  # fmt: skip
    refused = requests.post(f"{registry.url}/", data=body, headers={"Content-Type": ctype},
                            timeout=60)  # fmt: skip
    assert refused.status_code == 400, refused.text  # the digest: after the whole body
    assert not _renderers(root)
    assert not _card(registry.data, wheels[1]).exists()


def test_the_card_renderer_child_imports_nothing_of_the_registry_but_itself() -> None:
    """It starts on every upload: the registry's storage and web modules are not its
    business (importing them made it 40 ms slower to be ready)."""
    code = (
        "import sys, modelpack_registry.card_render\n"
        "print(sorted(m for m in sys.modules if m.startswith('modelpack_registry')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['modelpack_registry', 'modelpack_registry.card_render']"
    child = subprocess.run([sys.executable, "-m", "modelpack_registry.card_render"],
                           input=len(b"# Hi").to_bytes(8, "big") + b"# Hi",
                           capture_output=True, timeout=60)  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert child.stdout[0] == 0 and child.stdout[9:] == b"<h1>Hi</h1>\n"
