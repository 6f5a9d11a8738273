"""What the index needs from an sdist's core metadata (``<name>-<version>/PKG-INFO``).

A wheel's METADATA is served as PEP 658 core metadata; an sdist's PKG-INFO is not
(before Metadata-Version 2.2 its fields need not match what a build produces), but its
``Requires-Python`` must reach the index pages: without ``data-requires-python`` a pip
or uv on an older Python downloads the sdist and tries to build it, instead of
reporting that no version fits. :mod:`~modelpack_registry.validate` finds the member
while it checks the archive (one pass over a ``.tar.gz``); the upload's
``requires_python`` form field (what twine sends) stands in when PKG-INFO has none.
"""

from __future__ import annotations

import re
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import BinaryIO

from packaging.specifiers import InvalidSpecifier, SpecifierSet

__all__ = [
    "MAX_PKG_INFO",
    "is_pkg_info",
    "requires_python",
    "valid_requires_python",
    "zip_pkg_info",
]

MAX_PKG_INFO = 1024 * 1024
_PKG_INFO_RE = re.compile(r"^[^/]+/PKG-INFO$")


def is_pkg_info(member: str) -> bool:
    """True for the sdist's own ``<top folder>/PKG-INFO`` (not an ``.egg-info`` copy)."""
    return bool(_PKG_INFO_RE.match(member))


def zip_pkg_info(path: Path | BinaryIO) -> bytes | None:
    """The PKG-INFO of a ``.zip`` sdist already checked by ``validate``, or None."""
    try:
        if not isinstance(path, Path):
            path.seek(0)
        with zipfile.ZipFile(path) as zf:
            found = [i for i in zf.infolist() if is_pkg_info(i.filename)]
            if len(found) != 1 or found[0].file_size > MAX_PKG_INFO:
                return None
            return zf.read(found[0])
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def valid_requires_python(value: str | None) -> str | None:
    """``value`` stripped if it is a PEP 440 specifier set pip can use, else None."""
    text = (value or "").strip()
    if not text or len(text) > 200 or any(ord(ch) < 32 for ch in text):
        return None
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        return None
    return text


def requires_python(pkg_info: bytes | None) -> str | None:
    """The ``Requires-Python`` of PKG-INFO, unless absent, invalid or declared Dynamic."""
    if pkg_info is None:
        return None
    msg = Parser().parsestr(pkg_info.decode("utf-8", "replace"), headersonly=True)
    dynamic = {str(field).strip().lower() for field in msg.get_all("Dynamic") or []}
    if "requires-python" in dynamic:
        return None  # PEP 643: the build decides; the index must not promise
    value = msg.get("Requires-Python")
    return valid_requires_python(str(value) if value is not None else None)
