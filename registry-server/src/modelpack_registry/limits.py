"""Caps on the metadata of an upload: what a file may say about itself, and how much.

Every value of METADATA (PKG-INFO for an sdist) ends up in the record, in listings or
on a model page, so one oversized field costs every reader: a 15 MiB ``Summary`` made
every catalog page 46 MB. The caps follow the public index where it has one (PyPI:
``Summary`` 512 characters, a ``Project-URL`` label 32) and are generous elsewhere;
each is checked twice, on twine's form fields (before the file arrives) and on the
METADATA inside the file, and a breach is a 400 that names the field and its limit.

The description (the model card) may be up to :data:`DESCRIPTION_BYTES`. PyPI sets
no cap of its own beyond the upload size; Azure Artifacts refuses more than 324,608
bytes, which real READMEs with a changelog (pydantic, fonttools) have exceeded, so the
cap here is above that. Rendering cost is bounded separately (:mod:`.cards`).
"""

from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser

from modelpack_registry.errors import BadRequest
from modelpack_registry.validate import Source, open_tar, open_zip

__all__ = [
    "DESCRIPTION_BYTES",
    "LIMITS",
    "OTHER_CHARS",
    "Limit",
    "check_form",
    "check_metadata",
    "check_upload",
    "form_field_limit",
]

DESCRIPTION_BYTES = 1024 * 1024
OTHER_CHARS = 64 * 1024  # any header not listed in LIMITS
_PKG_INFO_MAX = 16 * 1024 * 1024


@dataclass(frozen=True)
class Limit:
    """The cap on one METADATA field (and on twine's form field for it)."""

    header: str  # as METADATA spells it
    form: str  # twine's form field
    chars: int  # characters per value
    count: int = 1  # values, for a repeatable field

    def describe(self) -> str:
        """``Classifier: at most 200 values of 256 characters``."""
        many = f"at most {self.count} values of " if self.count > 1 else ""
        return f"{self.header}: {many}{self.chars} characters"


LIMITS: tuple[Limit, ...] = (
    Limit("Name", "name", 128),
    Limit("Version", "version", 64),
    Limit("Summary", "summary", 512),  # PyPI's cap
    Limit("Keywords", "keywords", 2048),
    Limit("Author", "author", 1024),
    Limit("Author-email", "author_email", 1024),
    Limit("Maintainer", "maintainer", 1024),
    Limit("Maintainer-email", "maintainer_email", 1024),
    Limit("Home-page", "home_page", 2048),
    Limit("Download-URL", "download_url", 2048),
    Limit("License", "license", OTHER_CHARS),
    Limit("Classifier", "classifiers", 256, count=200),
    Limit("Project-URL", "project_urls", 2048, count=100),
    Limit("Requires-Dist", "requires_dist", 1024, count=1000),
)
_BY_HEADER = {limit.header.lower(): limit for limit in LIMITS}
_BY_FORM = {limit.form: limit for limit in LIMITS}
_FIX = "shorten it in pyproject.toml and rebuild"


def form_field_limit(name: str, default: int) -> int:
    """The largest value :mod:`.receive` accepts for form field ``name``, in bytes."""
    return DESCRIPTION_BYTES if name == "description" else default


def _too_long(where: str, header: str, size: int, limit: int, unit: str = "characters") -> str:
    return (
        f"{where}{header} is {size} {unit} long; this registry accepts at most {limit} "
        f"{unit}: {_FIX}"
    )


def check_form(fields: dict[str, str]) -> None:
    """Check twine's form fields (one value each: repeated ones keep their last).

    :raises BadRequest: naming the first field over its limit and the limit.
    """
    for form, value in fields.items():
        if form == "description":
            size = len(value.encode("utf-8", "replace"))
            if size > DESCRIPTION_BYTES:
                where = "form field description "
                raise BadRequest(_too_long(where, "(the README)", size, DESCRIPTION_BYTES, "bytes"))
            continue
        limit = _BY_FORM.get(form)
        if limit is not None and len(value) > limit.chars:
            where = f"form field {form} "
            raise BadRequest(_too_long(where, f"({limit.header})", len(value), limit.chars))


def _description_size(msg: Message, metadata: bytes) -> int:
    normalized = metadata.replace(b"\r\n", b"\n")
    body = normalized.split(b"\n\n", 1)[1] if b"\n\n" in normalized else b""
    if body.strip():
        return len(body)
    return len(str(msg.get("Description") or "").encode("utf-8", "replace"))


def check_metadata(metadata: bytes, filename: str, member: str = "METADATA") -> None:
    """Check the fields of a METADATA or PKG-INFO file.

    :raises BadRequest: naming the file, the first field over its limit and the limit.
    """
    msg = BytesParser().parsebytes(metadata, headersonly=True)
    where = f"{filename}: {member} field "
    size = _description_size(msg, metadata)
    if size > DESCRIPTION_BYTES:
        raise BadRequest(
            _too_long(where, "Description (the README)", size, DESCRIPTION_BYTES, "bytes")
        )
    values: dict[str, list[str]] = {}
    for key, value in msg.items():
        values.setdefault(key.lower(), []).append(str(value))
    for key, found in values.items():
        if key == "description":
            continue
        limit = _BY_HEADER.get(key)
        if limit is None:
            longest = max(found, key=len)
            if len(longest) > OTHER_CHARS:
                raise BadRequest(_too_long(where, key.title(), len(longest), OTHER_CHARS))
            continue
        if key == "keywords":  # may be split over several headers
            found = [" ".join(found)]
        if len(found) > limit.count:
            raise BadRequest(
                f"{filename}: {member} has {len(found)} {limit.header} fields; this registry "
                f"accepts at most {limit.count}: {_FIX}"
            )
        longest = max(found, key=len)
        if len(longest) > limit.chars:
            raise BadRequest(_too_long(where, limit.header, len(longest), limit.chars))


def _sdist_pkg_info(path: Source, filename: str) -> bytes | None:
    """The top-level ``<dir>/PKG-INFO`` of an sdist; None if it has none (or is unreadable:
    :mod:`.validate` reports a broken archive)."""

    def is_pkg_info(name: str, size: int) -> bool:
        parts = name.split("/")
        return len(parts) == 2 and parts[1] == "PKG-INFO" and size <= _PKG_INFO_MAX

    try:
        if filename.endswith(".zip"):
            with open_zip(path) as zf:
                for info in zf.infolist():
                    if is_pkg_info(info.filename, info.file_size):
                        return zf.read(info)
            return None
        with open_tar(path) as tf:
            for member in tf:
                if member.isfile() and is_pkg_info(member.name, member.size):
                    f = tf.extractfile(member)
                    return f.read() if f is not None else None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None
    return None


def check_upload(fields: dict[str, str], path: Source, filename: str,
                 metadata: bytes | None) -> None:  # fmt: skip
    """Check the form fields and the file's METADATA (a wheel's, or an sdist's PKG-INFO).

    :raises BadRequest: naming the first field over its limit and the limit.
    """
    check_form(fields)
    if metadata is not None:
        check_metadata(metadata, filename)
    elif not filename.endswith(".whl"):
        pkg_info = _sdist_pkg_info(path, filename)
        if pkg_info is not None:
            check_metadata(pkg_info, filename, "PKG-INFO")
