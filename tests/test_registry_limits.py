"""Metadata field caps: a 400 that names the field and its limit, from twine's form fields
and from the METADATA (PKG-INFO) inside the file, and nothing stored.

A 15 MiB ``Summary`` used to be stored and served in every listing.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from registry_support import listing, make_wheel, post_upload, twine_upload

from support import Registry


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("limits") / "data") as reg:
        yield reg


def wheel_with(folder: Path, name: str, headers: str, body: str = "") -> Path:
    """An installable wheel whose METADATA carries ``headers`` and a README ``body``."""
    dist = name.replace("-", "_")
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{headers}\n{body}"
    member = f"{dist}-1.0.dist-info/METADATA"
    return make_wheel(folder, name, "1.0", extra_members={member: metadata.encode()})


def sdist_with(folder: Path, name: str, headers: str) -> Path:
    dist = name.replace("-", "_")
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{headers}\n".encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for member, data in ((f"{dist}-1.0/PKG-INFO", pkg_info), (f"{dist}-1.0/setup.py", b"")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def refused(reg: Registry, path: Path, fields: dict[str, str] | None = None) -> str:
    response = post_upload(reg.url, path.name, path.read_bytes(), fields)
    assert response.status_code == 400, response.text
    assert path.name not in listing(reg.data, "packages")
    return response.text


@pytest.mark.parametrize(
    ("name", "headers", "expected"),
    [
        ("lim-summary", "Summary: " + "s" * 513, "Summary is 513 characters long; this "
         "registry accepts at most 512 characters"),
        ("lim-keywords", "Keywords: " + "k," * 1100, "Keywords is 2200 characters long; "
         "this registry accepts at most 2048"),
        ("lim-author", "Author: " + "a" * 1025, "Author is 1025 characters long; this "
         "registry accepts at most 1024"),
        ("lim-email", "Maintainer-email: " + "m" * 1100 + "@x.org", "Maintainer-email is 1106"),
        ("lim-classifiers", "".join(f"Classifier: Topic :: T{i}\n" for i in range(201)),
         "METADATA has 201 Classifier fields; this registry accepts at most 200"),
        ("lim-platform", "Platform: " + "p" * 70_000, "Platform is 70000 characters long; "
         "this registry accepts at most 65536"),
    ],
)  # fmt: skip
def test_metadata_fields_over_their_cap_are_refused(
    shared: Registry, tmp_path: Path, name: str, headers: str, expected: str
) -> None:
    wheel = wheel_with(tmp_path, name, headers)
    message = refused(shared, wheel)
    assert f"{wheel.name}: METADATA" in message and expected in message
    assert "shorten it in pyproject.toml" in message


def test_a_summary_at_the_cap_is_accepted_and_listed(shared: Registry, tmp_path: Path) -> None:
    wheel = wheel_with(tmp_path, "lim-ok", "Summary: " + "s" * 512)
    assert post_upload(shared.url, wheel.name, wheel.read_bytes()).status_code == 200
    models = requests.get(f"{shared.url}/api/v1/models", params={"q": "lim-ok"}).json()
    assert models["models"][0]["summary"] == "s" * 512


def test_form_fields_over_their_cap_are_refused(shared: Registry, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "lim-form", "1.0")
    message = refused(shared, wheel, {"summary": "s" * 600})
    assert "form field summary (Summary) is 600 characters long" in message
    assert "at most 512 characters" in message
    message = refused(shared, wheel, {"author": "a" * 2000})
    assert "form field author (Author) is 2000 characters long" in message


def test_an_sdist_pkg_info_is_checked(shared: Registry, tmp_path: Path) -> None:
    sdist = sdist_with(tmp_path, "lim-sdist", "Summary: " + "s" * 4000)
    message = refused(shared, sdist)
    assert f"{sdist.name}: PKG-INFO field Summary is 4000 characters long" in message


def test_the_readme_is_capped_at_one_mib_and_twine_sends_a_large_one(
    shared: Registry, tmp_path: Path
) -> None:
    markdown = "Summary: s\nDescription-Content-Type: text/markdown\n"
    big = wheel_with(tmp_path / "ok", "lim-readme", markdown, "# Card\n\n" + "word " * 60_000)
    result = twine_upload(shared.url, big)  # twine sends the 300 KB README as a form field too
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<h1>Card</h1>" in requests.get(f"{shared.url}/models/lim-readme/").text

    huge = wheel_with(tmp_path / "no", "lim-huge", markdown, "x" * (1024 * 1024 + 1))
    message = refused(shared, huge)
    assert "METADATA field Description (the README) is 1048577" in message
    assert "at most 1048576 bytes" in message
    result = twine_upload(shared.url, huge)
    assert result.returncode != 0 and "1048576" in result.stdout + result.stderr
    assert huge.name not in listing(shared.data, "packages")
