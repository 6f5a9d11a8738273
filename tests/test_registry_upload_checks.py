"""What an upload must be: a PEP 508 name, an sdist of plain files, one file part, true digests.

Issue 13 §3 (names, sdists): each refusal is a 400 that names the problem, with nothing
written; on both backends (a data folder, a bucket: conftest ``storage``).
"""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from registry_support import (
    BOUNDARY,
    MULTIPART_END,
    MULTIPART_TYPE,
    make_sdist,
    make_wheel,
    multipart_head,
    post_upload,
)

from support import Registry, Storage


@pytest.fixture(scope="module")
def shared(module_storage: Storage) -> Iterator[Registry]:
    """One registry on each backend for the refusals of this module (none of them writes)."""
    with Registry(module_storage) as reg:
        yield reg


@pytest.fixture
def registry(storage: Storage) -> Iterator[Registry]:
    """A registry on each backend (conftest ``storage``: a folder, a bucket)."""
    with Registry(storage) as reg:
        yield reg


BAD_NAMES = {
    "\uff4dodel-foo": "U+FF4D FULLWIDTH LATIN SMALL LETTER M",
    "model-foo\u200b": "U+200B ZERO WIDTH SPACE",
    "model-\u202eoof": "U+202E RIGHT-TO-LEFT OVERRIDE",
    "a;b|c$(id)": "';' is not allowed",
    "model_foo.": "must start and end with a letter or digit",
}


@pytest.mark.parametrize("raw", list(BAD_NAMES))
def test_only_pep_508_names_are_accepted(shared: Registry, tmp_path: Path, raw: str) -> None:
    sdist = make_sdist(tmp_path, f"{raw}-1.0.tar.gz")
    wheel = make_wheel(tmp_path / "w", "model-foo", "1.0")
    for filename, content in ((sdist.name, sdist.read_bytes()),
                              (f"{raw.replace('-', '_')}-1.0-py3-none-any.whl", wheel.read_bytes())):  # fmt: skip
        answer = post_upload(shared.url, filename, content)
        assert answer.status_code == 400, (filename, answer.text)
        assert BAD_NAMES[raw] in answer.text and "PEP 508" in answer.text, answer.text
    assert shared.storage.listing("packages") == []


def test_metadata_name_must_be_ascii_too(shared: Registry, tmp_path: Path) -> None:
    # The Kelvin sign lower-cases to "k": the canonical names would match.
    wheel = make_wheel(tmp_path, "model-kelvin", "1.0", meta_name="model-\u212aelvin")
    answer = post_upload(shared.url, wheel.name, wheel.read_bytes())
    assert answer.status_code == 400 and "U+212A KELVIN SIGN" in answer.text, answer.text
    assert "METADATA" in answer.text


def special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("member", "says"),
    [
        (special("pkg-1.0/weights.bin", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (special("pkg-1.0/weights.bin", tarfile.LNKTYPE, "pkg-1.0/setup.py"), "hard link"),
        (special("pkg-1.0/tty", tarfile.CHRTYPE), "character device"),
        (special("pkg-1.0/disk", tarfile.BLKTYPE), "block device"),
    ],
)
def test_sdist_links_and_devices_are_refused(shared: Registry, tmp_path: Path,
                                             member: tarfile.TarInfo, says: str) -> None:  # fmt: skip
    sdist = make_sdist(tmp_path, "pkg-1.0.tar.gz", [member])
    answer = post_upload(shared.url, sdist.name, sdist.read_bytes())
    assert answer.status_code == 400, answer.text
    assert f"has a {says}, {member.name!r}" in answer.text and "only regular files" in answer.text
    assert shared.storage.listing("packages") == []


def test_zip_sdist_with_a_symlink_is_refused(shared: Registry, tmp_path: Path) -> None:
    path = tmp_path / "pkg-1.0.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg-1.0/PKG-INFO", "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
        link = zipfile.ZipInfo("pkg-1.0/weights.bin")
        link.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK | 0777, as zip -y writes
        zf.writestr(link, "/etc/passwd")
    answer = post_upload(shared.url, path.name, path.read_bytes())
    assert answer.status_code == 400 and "has a symbolic link" in answer.text, answer.text


def raw_upload(url: str, body: bytes) -> requests.Response:
    return requests.post(f"{url}/", data=body, headers={"Content-Type": MULTIPART_TYPE}, timeout=30)


def test_a_content_part_without_filename_is_not_prepended(
    registry: Registry, tmp_path: Path
) -> None:
    wheel = make_wheel(tmp_path, "model-foo", "1.0")
    nameless = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"\r\n\r\n'.encode()
        + b"#!/bin/sh\nrm -rf ~\n\r\n"
    )
    head = multipart_head(wheel.name)
    first_field_end = head.index(f"--{BOUNDARY}".encode(), 1)
    body = head[:first_field_end] + nameless + head[first_field_end:]
    answer = raw_upload(registry.url, body + wheel.read_bytes() + MULTIPART_END)
    assert answer.status_code == 400, answer.text
    assert "'content' part without a filename" in answer.text
    assert registry.storage.listing("packages") == [] and registry.storage.pending() == []


def test_md5_and_blake2_digests_are_checked(registry: Registry, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "model-foo", "1.0")
    content = wheel.read_bytes()
    md5 = hashlib.md5(content).hexdigest()
    blake2 = hashlib.blake2b(content, digest_size=32).hexdigest()
    for field, value in (("md5_digest", "0" * 32), ("blake2_256_digest", "0" * 64)):
        answer = post_upload(registry.url, wheel.name, content, {field: value})
        assert answer.status_code == 400, answer.text
        assert f"{field} {value} does not match the received file" in answer.text
    # A digest sent after the file (no client does; the file is hashed again).
    late = (
        multipart_head(wheel.name)
        + content
        + f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="md5_digest"\r\n\r\n'.encode()
        + b"0" * 32
        + MULTIPART_END
    )
    answer = raw_upload(registry.url, late)
    assert answer.status_code == 400 and "md5_digest" in answer.text, answer.text
    assert registry.storage.listing("packages") == []
    good = post_upload(
        registry.url, wheel.name, content, {"md5_digest": md5, "blake2_256_digest": blake2}
    )
    assert good.status_code == 200, good.text
