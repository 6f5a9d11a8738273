"""`publish` has twine send the wheel's bytes from the file itself, not through
requests-toolbelt's multipart encoder (which copies every block twice): the form's
fields and the closing boundary still come from the encoder, so the body is the
encoder's, byte for byte. Real twine, real encoder, a real registry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor

from modelpack import twine_speed
from modelpack.publishing import publish
from modelpack.twine_speed import UPLOAD_BLOCK, DirectFileBody
from support import Registry, modelpack, ok

BOUNDARY = "0123456789abcdef0123456789abcdef"  # twine's encoder makes a uuid4 hex one


def _form(fp: Any, *, file_last: bool = True) -> list[tuple[str, Any]]:
    """Fields as twine's ``Repository._upload`` gives them to the encoder."""
    fields: list[tuple[str, Any]] = [
        ("name", "model-body"), ("version", "1.0"), ("filetype", "bdist_wheel"),
        ("sha256_digest", "0" * 64), (":action", "file_upload"), ("protocol_version", "1"),
    ]  # fmt: skip
    content = ("content", ("model_body-1.0-py3-none-any.whl", fp, "application/octet-stream"))
    return [*fields, content] if file_last else [content, *fields]


def _encoded(path: Path, **kwargs: bool) -> bytes:
    with path.open("rb") as fp:
        return bytes(MultipartEncoder(_form(fp, **kwargs), boundary=BOUNDARY).to_string())


def _send(body: Any, block: int) -> bytes:
    """Read *body* as urllib3 does: ``read(blocksize)`` until it gives nothing."""
    out = bytearray()
    while data := body.read(block):
        out += data
    return bytes(out)


SMALL = [0, 1, 4099]
BLOCKS = [1, 8, 16 * 1024, UPLOAD_BLOCK]  # urllib3 asks for its blocksize: 16 KiB by default


@pytest.mark.parametrize(
    ("size", "block"),
    [(size, block) for size in SMALL for block in BLOCKS]
    + [(3 * UPLOAD_BLOCK + 77, block) for block in BLOCKS[1:]],  # not a byte at a time
)
def test_the_body_is_the_encoders_bytes_with_the_file_read_directly(
    tmp_path: Path, size: int, block: int
) -> None:
    wheel = tmp_path / "model_body-1.0-py3-none-any.whl"
    wheel.write_bytes(os.urandom(size))
    seen: list[int] = []
    with wheel.open("rb") as fp:
        monitor = MultipartEncoderMonitor(MultipartEncoder(_form(fp), boundary=BOUNDARY),
                                          lambda m: seen.append(m.bytes_read))  # fmt: skip
        body = DirectFileBody.wrap(monitor)
        assert isinstance(body, DirectFileBody)
        sent = _send(body, block)
    assert body.direct  # the file's bytes did not go through the encoder
    assert sent == _encoded(wheel)
    assert len(sent) == body.len == monitor.len  # what Content-Length said
    assert seen[-1] == monitor.bytes_read == len(sent)  # the progress bar reaches the end


def test_a_body_of_another_shape_is_sent_through_the_encoder(tmp_path: Path) -> None:
    """The file not the last part, or already read from: the encoder's own stream."""
    wheel = tmp_path / "model_body-1.0-py3-none-any.whl"
    wheel.write_bytes(os.urandom(5000))
    with wheel.open("rb") as fp:
        monitor = MultipartEncoderMonitor(MultipartEncoder(_form(fp, file_last=False),
                                                           boundary=BOUNDARY))  # fmt: skip
        assert DirectFileBody.wrap(monitor) is monitor
        assert _send(monitor, 1000) == _encoded(wheel, file_last=False)
    with wheel.open("rb") as fp:
        fp.read(10)
        monitor = MultipartEncoderMonitor(MultipartEncoder(_form(fp), boundary=BOUNDARY))
        assert DirectFileBody.wrap(monitor) is monitor
    assert DirectFileBody.wrap(b"a body of bytes") == b"a body of bytes"


def test_publish_sends_the_wheel_from_the_file_and_the_registry_stores_it_intact(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel of several 1 MiB blocks and an odd size, published: twine's body went
    through :class:`DirectFileBody` (reading the file itself), and the registry, which
    checks the sha256 twine announced, stores exactly the wheel's bytes."""
    ok(modelpack("new", "model-direct", "-o", tmp_path, "--no-input"))
    project = tmp_path / "model-direct"
    weights = project / "src" / "model_direct" / "weights" / "direct.bin"
    weights.write_bytes(os.urandom(4 * UPLOAD_BLOCK + 4321))
    wheel = Path(ok(modelpack("build", project)))

    bodies: list[Any] = []
    wrap = DirectFileBody.wrap

    def watched(body: Any) -> Any:  # the real wrap, its results kept to look at
        bodies.append(wrap(body))
        return bodies[-1]

    monkeypatch.setattr(twine_speed.DirectFileBody, "wrap", staticmethod(watched))
    done = publish([wheel], registry=registry.url)
    uploads = [b for b in bodies if isinstance(b, DirectFileBody)]
    assert len(uploads) == 1 and uploads[0].direct
    stored = (registry.data / "packages" / wheel.name).read_bytes()
    assert stored == wheel.read_bytes()
    assert done[0].sha256 == hashlib.sha256(stored).hexdigest()
