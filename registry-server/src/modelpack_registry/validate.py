"""Checks on an uploaded file: a safe name, a known type, and contents that match the name.

Nothing here writes: each check either returns what it learned or raises
:class:`~modelpack_registry.errors.BadRequest` with a message saying what is wrong.
"""

from __future__ import annotations

import json
import re
import stat
import string
import tarfile
import unicodedata
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser, Parser
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    canonicalize_version,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from modelpack_registry.errors import BadRequest
from modelpack_registry.pkg_info import MAX_PKG_INFO, is_pkg_info, requires_python, zip_pkg_info

__all__ = [
    "DistInfo",
    "check_filename",
    "check_project_name",
    "describe",
    "inspect_distribution",
    "read_manifest",
]

KNOWN_SUFFIXES = (".whl", ".tar.gz", ".zip")
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")
_FILENAME_CHARS = _NAME_CHARS | {"+", "!"}
# packaging's (PEP 508) rule, spelled in ASCII: with re.IGNORECASE, [A-Z] would also
# match the Kelvin sign and the long s.
_PROJECT_NAME_RE = re.compile(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]")
MAX_METADATA_SIZE = 16 * 1024 * 1024
MAX_MANIFEST_SIZE = 1024 * 1024
_METADATA_RE = re.compile(r"^[^/]+\.dist-info/METADATA$")
_MANIFEST_RE = re.compile(r"^[^/]+\.dist-info/modelpack\.json$")


@dataclass(frozen=True)
class DistInfo:
    """What a distribution says about itself."""

    name: str  # canonical
    version: str  # as the filename spells it, normalized by packaging
    requires_python: str | None
    summary: str | None
    metadata: bytes | None  # the wheel's METADATA bytes; None for sdists


def check_filename(filename: str) -> str:
    """Check that ``filename`` is a plain file name of a known type; return the suffix.

    :raises BadRequest: for path separators, a leading dot, ``..``, NUL, an unknown type,
        or a name that packaging cannot parse as a wheel or sdist filename.
    """
    if not filename:
        raise BadRequest("the upload has no file name")
    if any(ch in filename for ch in "/\\\x00") or ".." in filename:
        raise BadRequest(f"invalid file name {filename!r}: it must be a plain name")
    if filename.startswith(".") or filename != filename.strip() or len(filename) > 255:
        raise BadRequest(f"invalid file name {filename!r}: it must be a plain name")
    if any(ord(ch) < 32 for ch in filename):
        raise BadRequest(f"invalid file name {filename!r}: control characters")
    suffix = next((s for s in KNOWN_SUFFIXES if filename.endswith(s)), None)
    if suffix is None:
        raise BadRequest(
            f"unsupported file type {filename!r}: upload a wheel (.whl) or an sdist (.tar.gz, .zip)"
        )
    raw_name = filename[: -len(suffix)]
    raw_name = raw_name.split("-")[0] if suffix == ".whl" else raw_name.rpartition("-")[0]
    check_project_name(raw_name, f"file name {filename!r}")
    bad = next((ch for ch in filename if ch not in _FILENAME_CHARS), None)
    if bad is not None:
        raise BadRequest(
            f"invalid file name {filename!r}: {_describe_char(bad)} is not allowed; a "
            "distribution's file name uses only ASCII letters, digits and '._-+!'"
        )
    name_and_version(filename)
    return suffix


def check_project_name(raw: str, where: str) -> None:
    """Refuse ``raw`` unless it is a valid PEP 508 project name (ASCII only).

    ``where`` says where the name was found, for the message.

    :raises BadRequest: naming the offending character and the rule.
    """
    if _PROJECT_NAME_RE.fullmatch(raw):
        return
    bad = next((ch for ch in raw if ch not in _NAME_CHARS), None)
    what = (
        f"{_describe_char(bad)} is not allowed"
        if bad
        else "it must start and end with a letter or digit"
    )
    raise BadRequest(
        f"invalid project name {raw!r} in the {where}: {what}. A project name uses only "
        "ASCII letters, digits, '.', '_' and '-', and starts and ends with a letter or "
        "digit (PEP 508); rename the project"
    )


def _describe_char(ch: str) -> str:
    """``'U+FF4D FULLWIDTH LATIN SMALL LETTER M'`` (or ``"';'"`` for printable ASCII)."""
    if " " < ch < "\x7f":
        return repr(ch)
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')}"


def name_and_version(filename: str) -> tuple[str, str]:
    """Canonical project name and normalized version from a distribution filename.

    :raises BadRequest: if the filename does not follow the wheel or sdist convention.
    """
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
        else:
            name, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion) as exc:
        raise BadRequest(f"invalid distribution file name {filename!r}: {exc}") from exc
    return str(name), str(version)


#: A distribution to read: a local file, or a seekable binary stream (an upload's
#: :meth:`~modelpack_registry.storage.base.Upload.reader` when it has no local file).
Source = Path | BinaryIO


def open_zip(src: Source) -> zipfile.ZipFile:
    """``zipfile.ZipFile`` over a path or a stream (rewound first; left open)."""
    if isinstance(src, Path):
        return zipfile.ZipFile(src)
    src.seek(0)
    return zipfile.ZipFile(src)


def open_tar(src: Source) -> tarfile.TarFile:
    """A gzip'ed tar over a path or a stream (rewound first)."""
    if isinstance(src, Path):
        return tarfile.open(src, "r:gz")
    src.seek(0)
    return tarfile.open(fileobj=src, mode="r:gz")


def source_size(src: Source) -> int:
    if isinstance(src, Path):
        return src.stat().st_size
    return src.seek(0, 2)


def inspect_distribution(path: Source, filename: str) -> DistInfo:
    """Open the file and check that its contents match ``filename``.

    :raises BadRequest: if the file is empty, not a valid archive, has unsafe member
        names, or (for wheels) its METADATA is missing, duplicated or names another
        project or version.
    """
    suffix = check_filename(filename)
    name, version = name_and_version(filename)
    if source_size(path) == 0:
        raise BadRequest(f"{filename} is empty")
    if suffix == ".whl":
        return _inspect_wheel(path, filename, name, version)
    if suffix == ".zip":
        _check_zip_members(path, filename)
        pkg_info = zip_pkg_info(path)
    else:
        pkg_info = _check_tar(path, filename)
    return DistInfo(name, version, requires_python(pkg_info), None, None)


def _open_zip(path: Source, filename: str) -> zipfile.ZipFile:
    try:
        return open_zip(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BadRequest(f"{filename} is not a valid zip archive: {exc}") from exc


def _check_member_name(member: str, filename: str) -> None:
    pure = PurePosixPath(member.replace("\\", "/"))
    if member.startswith(("/", "\\")) or pure.is_absolute() or ".." in pure.parts:
        raise BadRequest(f"{filename} has an unsafe member name {member!r}")
    if "\x00" in member or re.match(r"^[A-Za-z]:", member):
        raise BadRequest(f"{filename} has an unsafe member name {member!r}")


def _check_zip_members(path: Source, filename: str) -> None:
    with _open_zip(path, filename) as zf:
        members = zf.infolist()
    for info in members:
        _check_member_name(info.filename, filename)
        kind = _KINDS.get(stat.S_IFMT(info.external_attr >> 16))  # Unix mode, if any
        if kind is not None:
            _refuse_member_type(filename, info.filename, kind)


def _check_tar(path: Source, filename: str) -> bytes | None:
    """Check every member; return the sdist's PKG-INFO (read in the same pass) if it has one."""
    found: list[bytes] = []
    try:
        with open_tar(path) as tf:
            for member in tf:
                _check_member_name(member.name, filename)
                if not (member.isreg() or member.isdir()):
                    kind = _TAR_KINDS.get(member.type, "special file")
                    link = member.linkname if member.issym() or member.islnk() else ""
                    _refuse_member_type(filename, member.name, kind, link)
                if member.isreg() and is_pkg_info(member.name) and member.size <= MAX_PKG_INFO:
                    extracted = tf.extractfile(member)
                    found += [extracted.read()] if extracted is not None else []
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadRequest(f"{filename} is not a valid .tar.gz archive: {exc}") from exc
    return found[0] if len(found) == 1 else None


_KINDS = {stat.S_IFLNK: "symbolic link", stat.S_IFCHR: "character device",
          stat.S_IFBLK: "block device", stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket"}  # fmt: skip
_TAR_KINDS = {tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link",
              tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
              tarfile.FIFOTYPE: "FIFO"}  # fmt: skip


def _refuse_member_type(filename: str, member: str, kind: str, link: str = "") -> None:
    to = f" to {link!r}" if link else ""
    raise BadRequest(
        f"{filename} has a {kind}, {member!r}{to}; an sdist may hold only regular files "
        "and folders: replace links with copies of the files"
    )


def _inspect_wheel(path: Source, filename: str, name: str, version: str) -> DistInfo:
    with _open_zip(path, filename) as zf:
        members = zf.infolist()
        for info in members:
            _check_member_name(info.filename, filename)
        found = [i for i in members if _METADATA_RE.match(i.filename)]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise BadRequest(f"{filename} has {what} *.dist-info/METADATA files; expected one")
        if found[0].file_size > MAX_METADATA_SIZE:
            raise BadRequest(f"{filename}: METADATA is larger than 16 MiB")
        try:
            metadata = zf.read(found[0])
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BadRequest(f"{filename}: cannot read METADATA: {exc}") from exc
    # Core metadata is UTF-8 (BytesParser would turn a non-ASCII name into U+FFFD).
    msg = Parser().parsestr(metadata.decode("utf-8", "replace"), headersonly=True)
    meta_name, meta_version = _header(msg, "Name"), _header(msg, "Version")
    if not meta_name or not meta_version:
        raise BadRequest(f"{filename}: METADATA has no Name or no Version")
    check_project_name(meta_name, f"METADATA of {filename}")
    if canonicalize_name(meta_name) != name:
        raise BadRequest(
            f"{filename}: METADATA names project {meta_name!r}, the file name says {name!r}"
        )
    if not versions_equal(meta_version, version):
        raise BadRequest(
            f"{filename}: METADATA says version {meta_version!r}, the file name says {version!r}"
        )
    return DistInfo(
        name, version, _header(msg, "Requires-Python"), _header(msg, "Summary"), metadata
    )


def normalized_version(version: str) -> str:
    """One spelling per equal version (PEP 440: ``1``, ``1.0``, ``v1.0.0`` are ``1``)."""
    try:
        Version(version)
    except InvalidVersion:
        return version.strip().lower()
    return canonicalize_version(version, strip_trailing_zero=True)


def versions_equal(a: str, b: str) -> bool:
    """True if two version strings are equal under PEP 440 (or equal as text)."""
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a.strip() == b.strip()


def _header(msg: Message, key: str) -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def read_manifest(path: Source) -> dict[str, Any] | None:
    """The wheel's ``*.dist-info/modelpack.json`` as a dict; None if absent or invalid.

    Never raises: a wheel not built by modelpack, an oversized (> 1 MiB), duplicated or
    unparsable manifest just has none.
    """
    try:
        with open_zip(path) as zf:
            found = [i for i in zf.infolist() if _MANIFEST_RE.match(i.filename)]
            if len(found) != 1 or found[0].file_size > MAX_MANIFEST_SIZE:
                return None
            raw = zf.read(found[0])
        value: Any = json.loads(raw)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def describe(path: Source, filename: str, metadata: bytes | None) -> dict[str, Any]:
    """The descriptive :class:`~modelpack_registry.storage.Record` fields of a file.

    ``manifest`` (wheels only), and from METADATA ``requires_dist``, ``keywords``
    (comma- or space-separated), ``classifiers`` and ``license`` (License-Expression,
    else a one-line License). Never raises.
    """
    fields: dict[str, Any] = {
        "manifest": read_manifest(path) if filename.endswith(".whl") else None,
        "requires_dist": (),
        "keywords": (),
        "classifiers": (),
        "license": None,
    }
    if metadata is None:
        return fields
    msg = BytesParser().parsebytes(metadata, headersonly=True)
    fields["requires_dist"] = tuple(str(v).strip() for v in msg.get_all("Requires-Dist") or [])
    raw_keywords = " ".join(str(v) for v in msg.get_all("Keywords") or [])
    separator = "," if "," in raw_keywords else None
    fields["keywords"] = tuple(k.strip() for k in raw_keywords.split(separator) if k.strip())
    fields["classifiers"] = tuple(str(v).strip() for v in msg.get_all("Classifier") or [])
    license_text = _header(msg, "License-Expression") or _header(msg, "License")
    if license_text and "\n" not in license_text and len(license_text) <= 100:
        fields["license"] = license_text
    return fields
