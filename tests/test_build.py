"""`modelpack build`: weights stored uncompressed, RECORD correct, reproducible, installable."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from modelpack import assemble
from modelpack.building import build_project
from modelpack.digests import RACY_NS, DigestCache, Digests
from modelpack.scaffold import new_project
from support import BIN, Venv, uv_bin


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The manifest records the build time: SOURCE_DATE_EPOCH fixes it, so the tests here
    # that compare two builds byte for byte compare what they mean to.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    root = new_project("model-big", tmp_path / "src")
    weights = root / "src" / "model_big" / "weights"
    (weights / "extra").mkdir()
    # A first byte that is no pickle opcode: random bytes start like a pickle now and then.
    (weights / "extra" / "embeddings.bin").write_bytes(b"\0" + os.urandom(3 * 1024 * 1024 - 1))
    (weights / "zeros.bin").write_bytes(bytes(1024 * 1024))  # would compress to nothing
    # A .gitignore that hides the weights from hatchling must not drop them from the wheel.
    (root / ".gitignore").write_text("dist/\n*.bin\n")
    return root


def record_rows(zf: zipfile.ZipFile) -> list[list[str]]:
    name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
    return list(csv.reader(io.StringIO(zf.read(name).decode())))


def test_weights_are_stored_and_record_is_correct(project: Path) -> None:
    info = build_project(project).wheel
    weights = {"model_big/weights/model.pkl", "model_big/weights/zeros.bin",
               "model_big/weights/extra/embeddings.bin"}  # fmt: skip
    assert set(info.weights) == weights
    with zipfile.ZipFile(info.path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert len(names) == len(set(names)), "a member is in the wheel twice"
        for zi in zf.infolist():
            expected = zipfile.ZIP_STORED if zi.filename in weights else zipfile.ZIP_DEFLATED
            assert zi.compress_type == expected, zi.filename
        rows = record_rows(zf)
        assert {r[0] for r in rows} == set(names)
        for path, digest, size in rows:
            if path.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = zf.read(path)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={b64}" and int(size) == len(data), path
    test = subprocess.run([sys.executable, "-m", "zipfile", "-t", str(info.path)],
                          capture_output=True, text=True)  # fmt: skip
    assert test.returncode == 0, test.stderr


def test_build_is_reproducible(project: Path, tmp_path: Path) -> None:
    first = build_project(project).wheel.path.read_bytes()
    second = build_project(project).wheel.path.read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    # dist/ holds the wheel and, hidden from `twine upload dist/*`, its digests' record
    assert sorted(p.name for p in (project / "dist").iterdir()) == [
        ".model_big-0.1.0-py3-none-any.whl.digests.json", "model_big-0.1.0-py3-none-any.whl"
    ]  # fmt: skip


@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_assembled_wheel_installs_with_pip_and_uv(project: Path, tmp_path: Path, tool: str) -> None:
    wheel = build_project(project).wheel.path
    venv = Venv(tmp_path / "venv", tool=tool)
    if tool == "pip":
        cmd = [str(venv.python), "-m", "pip", "install", "--no-index", str(wheel)]
    else:
        cmd = [uv_bin(), "pip", "install", "--python", str(venv.python), "--no-index", str(wheel)]
    subprocess.run(cmd, check=True, capture_output=True)
    out = venv.run(
        "import model_big, importlib.resources as r\n"
        "w = r.files('model_big') / 'weights'\n"
        "print(len((w / 'extra' / 'embeddings.bin').read_bytes()), model_big.load().predict([[1, 2, 3]]))"
    )
    assert out.stdout.startswith(str(3 * 1024 * 1024))
    if tool == "pip":  # pip checks RECORD on uninstall too
        venv_check = subprocess.run(
            [str(venv.python), "-m", "pip", "check"], capture_output=True, text=True
        )
        assert venv_check.returncode == 0, venv_check.stdout


def record_of(wheel: Path, arcname: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return next(r[1] for r in record_rows(zf) if r[0] == arcname)


def true_record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


EMBEDDINGS = "model_big/weights/extra/embeddings.bin"


def test_unchanged_weights_take_their_digests_from_the_cache(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is what a rebuild trusts for a file whose stat identity is unchanged
    (shown with a planted entry), and `build --no-cache` hashes everything again."""
    monkeypatch.setenv("MODELPACK_CACHE_DIR", str(tmp_path / "cache"))
    path = project / "src" / "model_big" / "weights" / "extra" / "embeddings.bin"
    cache = DigestCache()
    planted = Digests("ab" * 32, 12345)
    cache.put(path, path.stat(), planted, started_ns=time.time_ns() + RACY_NS * 2)
    cache.save()
    wheel = build_project(project).wheel.path
    assert (
        record_of(wheel, EMBEDDINGS)
        == "sha256=" + base64.urlsafe_b64encode(bytes.fromhex(planted.sha256)).rstrip(b"=").decode()
    )
    with zipfile.ZipFile(wheel) as zf:
        assert zf.getinfo(EMBEDDINGS).CRC == planted.crc32

    out = subprocess.run([str(BIN / "modelpack"), "build", "--no-cache", str(project)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert record_of(wheel, EMBEDDINGS) == true_record_hash(path)
    assert zipfile.ZipFile(wheel).testzip() is None


def test_a_changed_weight_file_is_hashed_again(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPACK_CACHE_DIR", str(tmp_path / "cache"))
    path = project / "src" / "model_big" / "weights" / "extra" / "embeddings.bin"
    cache = DigestCache()
    old = path.stat()
    data = path.read_bytes()
    true = Digests(hashlib.sha256(data).hexdigest(), zlib.crc32(data))
    cache.put(path, old, true, started_ns=time.time_ns() + RACY_NS * 2)
    cache.save()
    with path.open("r+b") as f:  # same size, same inode, new bytes (after the first,
        f.seek(1)  # which keeps the file from looking like a pickle)
        f.write(os.urandom(4096))
    assert path.stat().st_size == old.st_size and path.stat().st_ino == old.st_ino
    wheel = build_project(project).wheel.path
    assert record_of(wheel, EMBEDDINGS) == true_record_hash(path)
    assert zipfile.ZipFile(wheel).testzip() is None


def test_the_cache_keeps_no_file_written_just_now_and_survives_corruption(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MODELPACK_CACHE_DIR", str(folder))
    folder.mkdir()
    (folder / "weight-digests.json").write_text("{not json")
    path = project / "src" / "model_big" / "weights" / "zeros.bin"
    # The weights look written "just now" however slowly this machine gets to the build:
    # their mtime is a minute ahead, so the hash always starts within the racy window.
    ahead = time.time_ns() + 60 * 10**9
    os.utime(path, ns=(ahead, ahead))
    build_project(project)  # a corrupt cache is ignored, not an error
    # A write in the same clock tick as the hash could go unseen, so nothing was remembered.
    assert DigestCache().get(path, path.stat()) is None
    cache = DigestCache()
    cache.put(path, path.stat(), Digests("00" * 32, 0), started_ns=time.time_ns())
    assert cache.get(path, path.stat()) == Digests("00" * 32, 0)  # for this build only
    cache.save()
    assert DigestCache().get(path, path.stat()) is None
    cache.put(path, path.stat(), Digests("00" * 32, 0), started_ns=ahead + 2 * RACY_NS)
    cache.save()
    assert DigestCache().get(path, path.stat()) == Digests("00" * 32, 0)


def test_both_write_paths_make_the_same_wheel(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pread/pwrite path (Linux, BSDs) and the zipfile stream (other systems) agree
    byte for byte; both are real code paths, the flag only picks one."""
    first = build_project(project, cache=False).wheel.path.read_bytes()
    monkeypatch.setattr(assemble, "_FAST", False)
    second = build_project(project, cache=False).wheel.path.read_bytes()
    assert first == second


@pytest.mark.parametrize("when", ["changed after hashing ahead", "hashing ahead cancelled"])
def test_weights_not_hashed_ahead_as_they_are_are_hashed_while_copied(
    project: Path, tmp_path: Path, when: str
) -> None:
    """Digests from the background hashing are used only for the file as it is when
    copied; otherwise the copy hashes it itself, and RECORD and the CRC stay right."""
    wheel = build_project(project, cache=False).wheel.path
    path = project / "src" / "model_big" / "weights" / "extra" / "embeddings.bin"
    ahead = assemble.HashAhead([path], DigestCache(persist=False))
    if when == "hashing ahead cancelled":
        ahead.cancel()
    else:
        assert ahead.digests(path, path.stat()) is not None  # waits until hashed
        with path.open("r+b") as f:
            f.write(os.urandom(4096))
    out = tmp_path / wheel.name
    assemble.add_stored_files(wheel, [(path, EMBEDDINGS)], out, ahead=ahead)
    assert record_of(out, EMBEDDINGS) == true_record_hash(path)
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
