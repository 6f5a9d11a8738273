"""Back up a running registry with a plain copy of its data folder, restore it elsewhere.

The story a platform team follows (docs/deployment.md, "Backup and restore"): copy the
folder while the server runs and takes uploads (as `rsync -a` does: a temp file that
vanishes mid-copy is skipped, not an error); to restore, run `reindex`
(it drops temp files of uploads that were in flight, rebuilds records from the wheels)
and `verify`, then serve the copy. Everything that was published when the copy started
must come back exactly: same index entries, same hashes and metadata, same yank state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from registry_support import listing, make_wheel, post_upload, send_half_upload

from support import Registry

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
PROJECTS = ("backup-alpha", "backup-beta", "backup-gamma")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "modelpack_registry", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def copy_live_folder(source: Path, target: Path) -> list[str]:
    """``cp -a`` that, like rsync (exit 24), carries on past files that vanish while
    it runs; returns their paths. Only temp files may vanish: published files never
    change or go away."""
    vanished: list[str] = []

    def copy(src: str, dst: str) -> None:
        try:
            shutil.copy2(src, dst)
        except FileNotFoundError:
            vanished.append(os.path.relpath(src, source))

    shutil.copytree(source, target, copy_function=copy)
    return vanished


def index_files(url: str) -> dict[str, dict[str, Any]]:
    """Every file the registry lists, by filename, as its PEP 691 entry."""
    root = requests.get(f"{url}/simple/", headers=JSON, timeout=10).json()
    files: dict[str, dict[str, Any]] = {}
    for project in root["projects"]:
        page = requests.get(f"{url}/simple/{project['name']}/", headers=JSON, timeout=10)
        assert page.status_code == 200
        files.update({f["filename"]: f for f in page.json()["files"]})
    return files


class UploadLoop(threading.Thread):
    """Uploads wheels one after another until told to stop; records when each one
    started and when the server confirmed it."""

    def __init__(self, url: str, wheels: list[Path]) -> None:
        super().__init__(daemon=True)
        self.url, self.wheels = url, wheels
        self.started: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        for wheel in self.wheels:
            if self.stop.is_set():
                return
            self.started[wheel.name] = time.monotonic()
            try:
                resp = post_upload(self.url, wheel.name, wheel.read_bytes())
            except requests.RequestException as exc:
                self.errors.append(f"{wheel.name}: {exc}")
                return
            if resp.status_code == 200:
                self.done[wheel.name] = time.monotonic()
            else:
                self.errors.append(f"{wheel.name}: {resp.status_code} {resp.text}")

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.done) < count:
            assert time.monotonic() < deadline and not self.errors, self.errors
            time.sleep(0.01)


def test_copy_while_serving_and_uploading_then_restore(tmp_path: Path) -> None:
    wheels = [
        make_wheel(tmp_path / "dist", PROJECTS[i % 3], f"1.{i}", payload=bytes(256 * 1024))
        for i in range(60)
    ]
    live, backup = tmp_path / "live", tmp_path / "backup"
    with Registry(live) as reg:
        loop = UploadLoop(reg.url, wheels)
        loop.start()
        loop.wait_for(6)
        # yank markers live in state/, the part that cannot be rebuilt from the wheels
        yank = requests.put(
            f"{reg.url}/api/v1/models/{PROJECTS[0]}/versions/1.0/yank",
            json={"reason": "bad weights"}, timeout=10,
        )  # fmt: skip
        assert yank.status_code == 200, yank.text
        # an upload stuck halfway: its temp file is certainly in the copy
        stuck = send_half_upload(reg.host, reg.port, "backup_alpha-9.9-py3-none-any.whl",
                                 make_wheel(tmp_path / "big", "backup-alpha", "9.9",
                                            payload=bytes(4 << 20)).read_bytes())  # fmt: skip
        deadline = time.monotonic() + 10
        while not listing(live, "tmp") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listing(live, "tmp"), "the half upload never reached tmp/"
        loop.wait_for(10)

        copy_started = time.monotonic()
        complete = {name for name, at in loop.done.items() if at < copy_started}
        vanished = copy_live_folder(live, backup)
        copy_ended = time.monotonic()

        # the server keeps taking uploads during and after the copy
        deadline = time.monotonic() + 20
        while not any(loop.started[n] > copy_ended for n in loop.done):
            assert time.monotonic() < deadline and not loop.errors, loop.errors
            time.sleep(0.01)
        loop.stop.set()
        loop.join(timeout=30)
        stuck.close()
        assert not loop.errors, loop.errors
        original = index_files(reg.url)
        original_catalog = requests.get(f"{reg.url}/api/v1/models", timeout=10).json()

    after_copy = {name for name, at in loop.started.items() if at > copy_ended}
    assert complete and after_copy, "the copy did not overlap the uploads"
    for path in vanished:
        assert path.startswith("tmp/") or os.path.basename(path).startswith("."), path

    # The raw copy: only what a copy taken mid-upload can catch, nothing corrupt.
    raw = run_cli("verify", "--data", str(backup))
    problems = raw.stdout.strip().splitlines()
    assert raw.returncode == 1, "the copy holds the stuck upload's temp file"
    assert any(p.startswith("leftover temp file: tmp/upload-") for p in problems)
    assert all(p.startswith(("leftover temp file:", "missing record:", "orphan:",
                             "missing metadata:")) for p in problems), problems  # fmt: skip

    # The restore procedure: reindex, verify, serve.
    reindexed = run_cli("reindex", "--data", str(backup))
    assert reindexed.returncode == 0, reindexed.stdout + reindexed.stderr
    assert "removed tmp/upload-" in reindexed.stdout
    verified = run_cli("verify", "--data", str(backup))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert listing(backup, "tmp") == []

    with Registry(backup) as restored:
        files = index_files(restored.url)
        catalog = requests.get(f"{restored.url}/api/v1/models", timeout=10).json()
        page = requests.get(f"{restored.url}/", timeout=10).text
        some = sorted(complete)[0]
        wheel = requests.get(f"{restored.url}/packages/{some}", timeout=10)

    for name in complete:
        assert files[name] == original[name], name  # hashes, metadata, time, yank
    assert files[f"{PROJECTS[0].replace('-', '_')}-1.0-py3-none-any.whl"]["yanked"] == (
        "bad weights"
    )
    assert not after_copy & files.keys(), "the copy cannot hold what came after it"
    for name in files.keys() - complete:  # uploads that finished during the copy
        assert files[name] == original[name], name
    assert "backup_alpha-9.9-py3-none-any.whl" not in files
    assert wheel.content == (tmp_path / "dist" / some).read_bytes()

    versions = {m["name"]: set(m["versions"]) for m in catalog["models"]}
    before = {m["name"]: set(m["versions"]) for m in original_catalog["models"]}
    for name in complete:
        project, version = name.split("-")[:2]
        project = project.replace("_", "-")
        assert version in versions[project] <= before[project]
        assert project in page
