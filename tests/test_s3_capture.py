"""What a streamed wheel keeps for validation (``storage.s3_capture``): for real zip files
of every layout, fed in blocks of several sizes, validation reads the same answers from
the kept bytes as from the whole file, or is refused with a 400; never another answer."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from modelpack_registry.errors import BadRequest
from modelpack_registry.storage.s3_capture import TAIL, NotCaptured, WheelCapture
from modelpack_registry.validate import inspect_distribution, read_manifest

NAME = "m-1.0-py3-none-any.whl"
META = b"Metadata-Version: 2.1\nName: m\nVersion: 1.0\nSummary: kept\n\n"
BIG = TAIL + 4 * 1024 * 1024  # the weights push a METADATA written first out of the tail


class Unseekable(io.RawIOBase):
    """A stream ``zipfile`` cannot seek back in: it writes data descriptors."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        view = memoryview(b)  # type: ignore[arg-type]
        self.data += view
        return len(view)


def wheel(order: list[str], *, streamed: bool = False, members: int = 0) -> bytes:
    out: io.BytesIO | Unseekable = Unseekable() if streamed else io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in order:
            if part == "meta":
                zf.writestr("m-1.0.dist-info/METADATA", META)
            elif part == "manifest":
                zf.writestr("m-1.0.dist-info/modelpack.json", b'{"kept": true}')
            elif part == "weights":
                zf.writestr("m/weights.bin", os.urandom(BIG), zipfile.ZIP_STORED)
        for i in range(members):
            zf.writestr(f"m/data/a-long-member-name-that-grows-the-directory-{i:07d}", b"")
    return bytes(out.data) if isinstance(out, Unseekable) else out.getvalue()


def kept(blob: bytes, block: int) -> tuple[str | None, object]:
    capture = WheelCapture(NAME)
    for start in range(0, len(blob), block):
        capture.feed(blob[start : start + block])
    reader = capture.reader()
    return inspect_distribution(reader, NAME).summary, read_manifest(reader)


@pytest.mark.parametrize("streamed", [False, True], ids=["sizes", "data-descriptors"])
@pytest.mark.parametrize(
    "order",
    [
        ["meta", "manifest", "weights"],
        ["weights", "manifest", "meta"],
        ["manifest", "weights", "meta"],
    ],
)
@pytest.mark.parametrize("block", [1 << 20, 4099])
def test_the_kept_bytes_answer_as_the_whole_file(
    order: list[str], streamed: bool, block: int
) -> None:
    blob = wheel(order, streamed=streamed)
    whole = io.BytesIO(blob)
    expected = (inspect_distribution(whole, NAME).summary, read_manifest(whole))
    assert expected == ("kept", {"kept": True})
    assert kept(blob, block) == expected


def test_a_central_directory_longer_than_the_tail_is_kept() -> None:
    blob = wheel(["meta"], members=120_000)
    assert len(blob) - blob.index(b"PK\x01\x02") > TAIL
    assert kept(blob, 1 << 20) == ("kept", None)


def test_a_member_the_directory_places_inside_another_is_refused() -> None:
    """The directory says METADATA starts inside the weights, where a well-formed entry
    hides: the stream skips a member's data, so the byte is not kept: 400, no answer."""
    hidden = wheel(["meta"])
    entry = hidden[: hidden.index(b"PK\x01\x02")]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("m/weights.bin", entry + os.urandom(BIG))
        zf.writestr("m-1.0.dist-info/METADATA", META)
    blob = bytearray(out.getvalue())
    at = blob.rindex(b"m-1.0.dist-info/METADATA") - 46
    assert blob[at : at + 4] == b"PK\x01\x02"
    blob[at + 42 : at + 46] = blob.index(entry).to_bytes(4, "little")
    blob[at + 10 : at + 28] = entry[8:26]  # and the hidden entry's method, CRC and sizes
    assert inspect_distribution(io.BytesIO(blob), NAME).summary == "kept"  # a whole read
    with pytest.raises(NotCaptured, match=r"outside its end"):
        kept(bytes(blob), 1 << 20)


def test_a_truncated_wheel_is_refused() -> None:
    blob = wheel(["meta", "weights", "manifest"])
    with pytest.raises(BadRequest, match="not a valid zip archive"):
        kept(blob[: len(blob) // 2], 1 << 20)
