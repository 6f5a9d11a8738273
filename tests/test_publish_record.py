"""`build` hashes the wheel while it writes it and records the digests beside it;
`publish` hands them to twine, so the wheel is not read once more to hash it.

Real builds, real twine uploads to real registries. A record is only ever a shortcut:
stale (the wheel touched or rewritten since) it is ignored, and wrong in spite of
matching the wheel's identity the registry refuses the upload and `publish` says to
rebuild; nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelpack.publishing import publish
from modelpack.wheel_digests import WheelDigests, read_record, record_path
from support import Registry, modelpack, ok

_opened: list[str] = []
_watching: list[str] = []


def _count_opens(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _watching and isinstance(args[0], (str, bytes, os.PathLike)):
        if os.fsdecode(args[0]) in _watching:
            _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_count_opens)  # an audit hook cannot be removed; it counts only when asked


def _opens_during(wheel: Path, fn: Any) -> tuple[int, Any]:
    _opened.clear()
    _watching[:] = [str(wheel)]
    try:
        result = fn()
    finally:
        _watching.clear()
    return len(_opened), result


def _build(tmp_path: Path, name: str = "model-rec") -> Path:
    ok(modelpack("new", name, "-o", tmp_path, "--no-input"))
    project = tmp_path / name
    package = name.replace("-", "_")
    (project / "src" / package / "weights" / "blob.bin").write_bytes(os.urandom(3 << 20))
    return Path(ok(modelpack("build", project)))


def _digests(wheel: Path) -> WheelDigests:
    data = wheel.read_bytes()
    return WheelDigests(hashlib.sha256(data).hexdigest(),
                        hashlib.blake2b(data, digest_size=32).hexdigest())  # fmt: skip


def test_build_records_the_wheels_digests_fresh_and_from_the_cache(tmp_path: Path) -> None:
    wheel = _build(tmp_path)
    assert read_record(wheel) == _digests(wheel)
    # A rebuild takes the weights' digests from the cache: the header is final before
    # the copy, and the wheel's hash runs beside it.
    ok(modelpack("build", wheel.parent.parent))
    assert read_record(wheel) == _digests(wheel)
    ok(modelpack("build", wheel.parent.parent, "--no-cache"))
    assert read_record(wheel) == _digests(wheel)


def test_a_record_is_ignored_once_the_wheel_is_touched_or_rewritten(tmp_path: Path) -> None:
    wheel = _build(tmp_path)
    assert read_record(wheel) is not None
    os.utime(wheel)  # touched: same bytes, new mtime
    assert read_record(wheel) is None

    wheel = _build(tmp_path, "model-rew")
    data = wheel.read_bytes()
    with wheel.open("r+b") as f:  # rewritten in place: same size, same inode, same bytes
        f.write(data[:4096])
    assert read_record(wheel) is None


def test_publish_sends_the_recorded_digests_and_hashes_a_touched_wheel(
    tmp_path: Path, registry: Registry
) -> None:
    """With the record, twine is handed the digests and never opens the wheel to hash it:
    one open fewer than for the same wheel once touched, which twine hashes itself. The
    registry checks the sha256 it receives, and both uploads store the exact bytes."""
    wheel = _build(tmp_path)
    opens_with_record, done = _opens_during(wheel, lambda: publish([wheel], registry=registry.url))
    assert done[0].from_record and done[0].sha256 == _digests(wheel).sha256
    assert (registry.data / "packages" / wheel.name).read_bytes() == wheel.read_bytes()

    os.utime(wheel)
    with Registry(tmp_path / "second-data") as second:
        opens_hashing, again = _opens_during(wheel, lambda: publish([wheel], registry=second.url))
        assert not again[0].from_record and again[0].sha256 == done[0].sha256
        assert (second.data / "packages" / wheel.name).read_bytes() == wheel.read_bytes()
    assert opens_hashing == opens_with_record + 1


def test_a_wrong_record_of_an_unchanged_wheel_uploads_nothing_and_says_rebuild(
    tmp_path: Path, registry: Registry
) -> None:
    wheel = _build(tmp_path)
    record = record_path(wheel)
    data = json.loads(record.read_text())
    data["sha256"] = hashlib.sha256(b"not this wheel").hexdigest()
    record.write_text(json.dumps(data))  # the wheel itself is untouched: identity matches
    assert read_record(wheel) is not None

    res = modelpack("publish", wheel, "--registry", registry.url)
    assert res.returncode != 0
    assert "the wheel changed since it was built: rebuild" in res.stderr
    assert "Traceback" not in res.stderr
    assert "corrupt" not in res.stderr
    assert not list((registry.data / "packages").glob("*"))
    assert not record.exists()  # the wrong record is dropped

    # Without it, publish hashes the wheel and the upload goes through.
    ok(modelpack("publish", wheel, "--registry", registry.url))
    assert (registry.data / "packages" / wheel.name).read_bytes() == wheel.read_bytes()


def test_the_wheels_digests_are_right_when_a_weights_crc_comes_after_its_copy(
    tmp_path: Path,
) -> None:
    """Without cache or hash-ahead, a weight's CRC is known only after the copy and its
    header is rewritten: the wheel is hashed once that header is final."""
    from modelpack.assemble import add_stored_files

    wheel = _build(tmp_path)
    extra = tmp_path / "extra.bin"
    extra.write_bytes(os.urandom((2 << 20) + 7))
    out = tmp_path / "out" / wheel.name
    out.parent.mkdir()
    got = add_stored_files(wheel, [(extra, "model_rec/weights/extra.bin")], out, hash_wheel=True)
    assert got == _digests(out)
    assert add_stored_files(wheel, [(extra, "model_rec/weights/x.bin")], out) is None
