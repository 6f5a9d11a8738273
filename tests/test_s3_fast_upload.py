"""A wheel uploaded to a bucket streams straight to ``packages/<file>`` (no staged object,
no server-side copy) and is validated from what the registry kept as it streamed by.

Real ``modelpack-registry serve --storage s3://...`` processes on moto's S3 server
(``support.S3Server``). The wheels are larger than one 16 MiB part, so that the upload is
a real multipart upload, and larger than the 8 MiB the registry keeps of a wheel's end,
so that a ``METADATA`` at the start is only found by the streaming parse.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from registry_support import BOUNDARY, MULTIPART_END, MULTIPART_TYPE, multipart_head, post_upload
from test_registry_s3 import OnBucket, listed, multipart_uploads, objects, race, seen_after

from support import S3Server

WEIGHTS = 20 * 1024 * 1024  # two parts of 16 MiB, and more than the 8 MiB tail kept


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def metadata(name: str, version: str, summary: str = "streamed") -> bytes:
    return (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n\n".encode()
    )


def hand_wheel(folder: Path, name: str, version: str, *, summary: str = "streamed",
               weights: bytes | None = None) -> Path:  # fmt: skip
    """A wheel written member by member with ``zipfile``: its ``METADATA`` and
    ``modelpack.json`` first (deflated), then 20 MiB of random weights (stored)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{info}/METADATA", metadata(name, version, summary))
        zf.writestr(f"{info}/modelpack.json", json.dumps({"framework": "streamed-test"}))
        zf.writestr(f"{dist}/__init__.py", "")
        zf.writestr(f"{dist}/weights.bin", weights or os.urandom(WEIGHTS), zipfile.ZIP_STORED)
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


def lying_wheel(folder: Path, name: str, version: str) -> Path:
    """A zip whose central directory says ``METADATA`` is at an offset inside the
    weights, where a well-formed ``METADATA`` entry is hidden: ``zipfile`` reads it from
    the whole file, but the streaming parse (rightly) skips a member's data."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    hidden_zip = folder / "hidden.zip"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(hidden_zip, "w") as zf:
        zf.writestr(f"{info}/METADATA", metadata(name, version, "hidden"))
    raw = hidden_zip.read_bytes()
    entry = raw[: raw.index(b"PK\x01\x02")]  # its local header and data
    padding = os.urandom(1024 * 1024)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}/weights.bin", padding + entry + os.urandom(WEIGHTS))
        zf.writestr(f"{info}/METADATA", metadata(name, version, "visible"))
    blob = bytearray(path.read_bytes())
    weights_data = blob.index(padding)
    at = blob.rindex(f"{info}/METADATA".encode()) - 46  # its entry in the central directory
    assert blob[at : at + 4] == b"PK\x01\x02", "the METADATA directory entry was not found"
    struct.pack_into("<L", blob, at + 42, weights_data + len(padding))
    blob[at + 16 : at + 28] = entry[14:26]  # and the hidden one's CRC and sizes
    path.write_bytes(bytes(blob))
    with zipfile.ZipFile(path) as zf:  # the lie reads fine as a whole file
        assert b"Summary: hidden" in zf.read(f"{info}/METADATA")
    return path


def moto_requests(s3: S3Server) -> list[str]:
    assert s3.log is not None
    return s3.log.read_text(errors="replace").splitlines()


def test_wheel_streams_to_its_key_with_metadata_at_the_start(s3: S3Server, tmp_path: Path) -> None:
    """A 20 MiB wheel whose METADATA and modelpack.json are its first members: stored
    under packages/ with no tmp/ object ever written and no copy (moto's request log names
    no tmp/ key and no copy source), listed, with its METADATA served and its manifest in
    the record, and byte for byte what was sent."""
    bucket = s3.bucket("fast-bucket")
    wheel = hand_wheel(tmp_path, "model-fast", "1.0")
    with OnBucket(s3, f"s3://{bucket}/reg", tmp_path / "a") as reg:
        before = len(moto_requests(s3))
        answer = post_upload(reg.url, wheel.name, wheel.read_bytes())
        assert answer.status_code == 200, answer.text
        during = moto_requests(s3)[before:]
        assert any(f"/reg/packages/{wheel.name}?" in line and "partNumber=2" in line
                   for line in during), "the parts did not go to packages/ directly"  # fmt: skip
        assert not [line for line in during if "/reg/tmp/" in line], "a staged object was used"
        assert objects(s3, bucket, "reg/tmp/") == []
        assert multipart_uploads(s3, bucket) == []
        seen_after(reg, "model-fast", wheel.name, time.monotonic())
        served = requests.get(f"{reg.url}/packages/{wheel.name}.metadata", timeout=10)
        assert served.content == metadata("model-fast", "1.0")
        record = s3.client().get_object(Bucket=bucket, Key=f"reg/meta/{wheel.name}.json")  # type: ignore[attr-defined]
        assert json.loads(record["Body"].read())["manifest"] == {"framework": "streamed-test"}
        got = requests.get(f"{reg.url}/packages/{wheel.name}", timeout=60)
        assert got.content == wheel.read_bytes()


@pytest.mark.parametrize("kind", ["lying", "truncated", "late-digest"])
def test_a_wheel_validation_cannot_read_is_refused(s3: S3Server, tmp_path: Path, kind: str) -> None:
    """A wheel whose central directory points outside what was kept as it streamed by, a
    truncated one, or one whose md5 digest comes after the file: 400 naming the problem, nothing listed, no object and no pending
    multipart upload left in the bucket."""
    bucket = s3.bucket(f"{kind}-bucket")
    if kind == "lying":
        wheel = lying_wheel(tmp_path, "model-lie", "1.0")
        content = wheel.read_bytes()
    else:
        wheel = hand_wheel(tmp_path, "model-lie", "1.0")
        content = wheel.read_bytes()
    if kind == "truncated":
        content = content[: WEIGHTS // 2 + 4096]
    with OnBucket(s3, f"s3://{bucket}/reg", tmp_path / "a") as reg:
        if kind == "late-digest":  # no client does; the whole file is not at hand to hash
            md5 = hashlib.md5(content).hexdigest()
            body = multipart_head(wheel.name) + content + (
                f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="md5_digest"'
                f"\r\n\r\n{md5}"
            ).encode() + MULTIPART_END  # fmt: skip
            answer = requests.post(f"{reg.url}/", data=body, timeout=30,
                                   headers={"Content-Type": MULTIPART_TYPE})  # fmt: skip
        else:
            answer = post_upload(reg.url, wheel.name, content)
        assert answer.status_code == 400, answer.text
        expected = {"lying": "outside its end", "truncated": "not a valid zip archive",
                    "late-digest": "md5_digest was sent after the file"}[kind]  # fmt: skip
        assert expected in answer.text, answer.text
        assert wheel.name in answer.text or kind == "late-digest", answer.text
        assert "Traceback" not in answer.text
        assert listed(reg, "model-lie") == []
        assert objects(s3, bucket, "reg/packages/") == []
        assert objects(s3, bucket, "reg/tmp/") == []
        assert multipart_uploads(s3, bucket) == []


def test_two_uploads_of_one_name_at_once_one_wins(s3: S3Server, tmp_path: Path) -> None:
    """Two registries on one bucket, the same wheel name with other bytes through each at
    the same instant, both streaming multipart uploads at packages/<file>: one completes
    (200), the other is refused (409) and its upload aborted; the bucket holds the
    winner's bytes and no pending upload."""
    bucket = s3.bucket("fast-race-bucket")
    storage = f"s3://{bucket}/reg"
    with OnBucket(s3, storage, tmp_path / "a") as a, OnBucket(s3, storage, tmp_path / "b") as b:
        ours = {reg.url: hand_wheel(tmp_path / str(reg.port), "model-both", "1.0",
                                    summary=f"through {reg.port}") for reg in (a, b)}  # fmt: skip
        name = next(iter(ours.values())).name
        answers = race(*[(lambda reg=reg: post_upload(reg.url, name, ours[reg.url].read_bytes())) for reg in (a, b)])  # fmt: skip
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        winner = (a, b)[[r.status_code for r in answers].index(200)]
        stored = s3.client().get_object(Bucket=bucket, Key=f"reg/packages/{name}")  # type: ignore[attr-defined]
        assert stored["Body"].read() == ours[winner.url].read_bytes()
        assert multipart_uploads(s3, bucket) == []
        assert objects(s3, bucket, "reg/tmp/") == []
