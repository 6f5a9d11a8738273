"""A full data folder: an upload is all or nothing, answered 507, and the retry works.

Issue 13 §3 "Disk full": out of inodes, an upload answered 500 and left the wheel and its
record without an owners file, locking the uploader out of their own model. Each test
mounts a small tmpfs (size and inode limits; the tests run as root) and runs a real
registry on it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from registry_support import (
    PASSWORDS,
    listing,
    make_big_wheel,
    make_wheel,
    post_upload,
    stream_upload,
    twine_upload,
)

from support import Registry

FULL = "data folder is full"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB and 64 inodes, unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=64,mode=0755", "tmpfs",
                    str(mount)], check=True)  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_inodes(folder: Path, leave: int) -> None:
    """Create empty files in ``folder`` until no inode is left, then free ``leave`` of them."""
    folder.mkdir(exist_ok=True)
    made = []
    while True:
        path = folder / f"f{len(made)}"
        try:
            path.touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            break
        made.append(path)
    for path in made[len(made) - leave :]:
        path.unlink()


def published(data: Path, name: str) -> dict[str, bool]:
    """Which parts of ``name``'s publication exist."""
    packages = [f for f in listing(data, "packages") if f.startswith(name.replace("-", "_"))]
    meta = [f for f in listing(data, "meta") if f.startswith(name.replace("-", "_"))]
    return {"file": bool(packages), "meta": bool(meta),
            "owners": (data / "state/owners" / f"{name}.json").exists()}  # fmt: skip


def test_out_of_inodes_an_upload_is_all_or_nothing(small_fs: Path, tmp_path: Path,
                                                   htpasswd: Path) -> None:  # fmt: skip
    data, filler = small_fs / "data", small_fs / "filler"
    args = ["--htpasswd", str(htpasswd)]
    alice = ("alice", PASSWORDS["alice"])
    with Registry(data, args=args, log=tmp_path / "registry.log") as reg:
        answers = []
        for free in range(8):  # each step of a publication in turn finds no inode
            name = f"model-k{free}"
            wheel = make_wheel(tmp_path / name, name, "1.0")
            fill_inodes(filler, leave=free)
            answer = post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=alice)
            answers.append(answer.status_code)
            if answer.status_code == 507:
                assert FULL in answer.text and "nothing was changed" in answer.text
                assert published(data, name) == {"file": False, "meta": False, "owners": False}
                assert requests.get(f"{reg.index_url}{name}/", timeout=10).status_code == 404
            else:
                assert answer.status_code == 200, answer.text
            assert listing(data, "tmp") == []
            shutil.rmtree(filler)
            retry = post_upload(reg.url, wheel.name, wheel.read_bytes(), auth=alice)
            assert retry.status_code == 200, retry.text  # the uploader is not locked out
            assert published(data, name) == {"file": True, "meta": True, "owners": True}
            owners = json.loads((data / "state/owners" / f"{name}.json").read_text())
            assert owners["owners"] == ["alice"]
            assert requests.get(f"{reg.index_url}{name}/", timeout=10).status_code == 200
        # Every step was reached: refused at first, published once enough was free.
        assert answers[0] == 507 and answers[-1] == 200, answers
        assert answers.count(507) >= 4, answers

        # Any other write on a full disk: 507 too, in the API's JSON form.
        fill_inodes(filler, leave=0)
        stage = requests.put(f"{reg.url}/api/v1/models/model-k7/stages/production",
                             json={"version": "1.0"}, auth=alice, timeout=10)  # fmt: skip
        assert stage.status_code == 507 and FULL in stage.json()["error"], stage.text
        shutil.rmtree(filler)
        stage = requests.put(f"{reg.url}/api/v1/models/model-k7/stages/production",
                             json={"version": "1.0"}, auth=alice, timeout=10)  # fmt: skip
        assert stage.status_code == 200, stage.text
    assert "Traceback" not in (tmp_path / "registry.log").read_text()


def test_out_of_space_mid_body_the_client_hears_507(small_fs: Path, tmp_path: Path) -> None:
    big = make_big_wheel(tmp_path / "big", "model-big", "1.0", 24 * 1024**2)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    data = small_fs / "data"
    with Registry(data, log=tmp_path / "registry.log") as reg:
        fields = {"name": "model-big", "version": "1.0", "sha256_digest": digest}
        answer = stream_upload(reg.url, big, fields)
        assert answer.status_code == 507, answer.text
        assert FULL in answer.text and "No space left on device" in answer.text
        assert listing(data, "tmp") == [] and listing(data, "packages") == []

        result = twine_upload(reg.url, big)  # twine reports the answer, not a broken pipe
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "507 Insufficient Storage" in output, output
        assert "BrokenPipe" not in output and "ConnectionError" not in output, output

        small = make_wheel(tmp_path / "small", "model-big", "1.0")
        assert twine_upload(reg.url, small).returncode == 0  # the space came back
        assert listing(data, "packages") == [small.name] and listing(data, "tmp") == []
    assert os.path.ismount(small_fs)
