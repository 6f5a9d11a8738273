"""``POST /`` with ``:action=file_upload``: twine's legacy upload, streamed to disk once.

The body is fed in 1 MiB blocks to ``multipart.PushMultipartParser``; the ``content``
part goes straight into the store's upload (a locked temp file in ``DATA/tmp``, or a
bucket's multipart upload), so memory stays flat
whatever the size. Other form fields are capped (64 KiB each, 100 fields). When the body
ends early (the client went away) or is malformed, the upload is aborted and nothing
is listed. A complete upload is fsynced, validated (:mod:`modelpack_registry.validate`)
and then published atomically by :meth:`DataDir.publish`: 409 if the file name exists
with other bytes or the version rules of :mod:`modelpack_registry.immutable` refuse it,
200 with nothing changed for the same bytes again (a client's re-run), 507 if the data
folder is full (nothing is left behind).

Refusing before the body arrives: twine sends every form field (``name``, ``version``,
``:action``, ...) before the ``content`` part, and that part's headers carry the file
name. As soon as they are parsed, the checks that need only those run: ``:action``, the
file name, the form's name and version against it, "already published" (409: the
version rules, or a file name that exists while the announced ``sha256_digest``
differs) and
:meth:`DataDir.check_publish`, which asks the data folder's guard whether this uploader
could publish that name (403), only reading. Each raises what the same check
would raise after the whole body, so a refused 6 GiB upload is told after the first
block read (at most 1 MiB) instead of after 25 s. They are an optimisation only:
everything is checked again after the body, and :meth:`DataDir.publish` decides (by
conditional writes, no lock). The server logs how much of
the body it had read when it refused; :mod:`modelpack_registry.web.linger` then closes the
connection without the answer being lost.

Receiving the body itself (streamed, hashed beside, read from gunicorn's socket) is
:mod:`modelpack_registry.web.receive`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, BinaryIO

from packaging.utils import canonicalize_name

from modelpack_registry.access.policy import Principal
from modelpack_registry.cards import Renderer, render_and_store
from modelpack_registry.errors import (
    BadRequest,
    Conflict,
    HTTPFailure,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    disk_full,
    full_disk_error,
)
from modelpack_registry.immutable import promoted_to, version_conflict
from modelpack_registry.index import Index, Snapshot
from modelpack_registry.limits import check_form, check_upload
from modelpack_registry.pkg_info import valid_requires_python
from modelpack_registry.storage import DataDir, Record, Upload
from modelpack_registry.storage.base import keys
from modelpack_registry.storage.s3_capture import NotCaptured
from modelpack_registry.validate import (
    check_filename,
    inspect_distribution,
    name_and_version,
    versions_equal,
)
from modelpack_registry.verify.maintenance import utc_now
from modelpack_registry.web.receive import (
    DIGEST_FIELDS,
    ClientGone,
    Form,
    TooSlow,
    UploadLimits,
    parse_size,
    receive,
    too_large,
)

__all__ = ["UploadLimits", "handle_upload", "parse_size"]  # the last two from receive.py

log = logging.getLogger(__name__)


def handle_upload(environ: dict[str, Any], data: DataDir, index: Index, limits: UploadLimits,
                  who: Principal | None = None) -> tuple[str, str]:  # fmt: skip
    """Receive, validate and publish one upload; return a success message and the
    (canonical) project name.

    ``who``: the authenticated uploader, recorded with the file (its user, and the id of
    the API token used, if any); None on an anonymous registry.

    What can be refused from the form fields and the file name alone is refused as soon
    as those arrive, before the rest of the body is read (see the module docstring).

    :raises BadRequest: malformed request, invalid file, or a digest/name/version mismatch.
    :raises PayloadTooLarge: the body is over the limit.
    :raises Conflict: the file (or the same file under another spelling) exists.
    :raises Forbidden: the uploader may not publish this name (see :meth:`DataDir.publish`).
    :raises MethodNotAllowed: an ``:action`` other than ``file_upload``.
    """
    form = Form()
    temp: Upload | None = None
    renderer: list[Renderer] = []
    try:
        try:
            declared = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            declared = -1  # receive refuses it
        form.expected = declared
        if declared > limits.max_body:
            raise PayloadTooLarge(too_large(limits))
        temp = data.store.new_upload()
        try:
            return _receive_and_publish(environ, data, index, limits, form, temp, who, renderer)
        except OSError as exc:  # the temp file, the records or the link
            if not disk_full(exc):
                raise
            raise full_disk_error(exc) from exc
    except ClientGone as exc:
        log.warning("upload aborted by the client: %s", exc)
        raise BadRequest("the upload was incomplete (connection closed)") from exc
    except TooSlow as exc:
        log.warning("upload of %s cut off after %d bytes: %s", form.filename or "a file",
                    form.received, exc)  # fmt: skip
        raise RequestTimeout(f"{exc}; nothing was stored, upload again") from exc
    except HTTPFailure as exc:
        total = str(form.expected) if form.expected >= 0 else "?"
        log.info("refused %s after %d of %s bytes: %d %s", form.filename or "an upload",
                 form.received, total, exc.status, exc.message)  # fmt: skip
        raise
    finally:
        for started in renderer:
            started.close()
        if temp is not None:
            temp.abort()


def _receive_and_publish(environ: dict[str, Any], data: DataDir, index: Index,
                         limits: UploadLimits, form: Form, temp: Upload, who: Principal | None,
                         renderer: list[Renderer]) -> tuple[str, str]:  # fmt: skip
    """*renderer* gets the model card's renderer, started once the early checks pass
    (the caller closes it)."""

    def refuse_early(got: Form) -> None:
        """The checks below that need only the fields sent so far and the file name;
        then the card renderer is started, to be ready when the body has arrived."""
        filename = got.filename
        assert filename is not None
        _check_action(got.fields)
        check_filename(filename)
        name, version = name_and_version(filename)
        _check_form_matches(got.fields, name, version, filename)
        check_form(got.fields)
        claimed = got.fields.get("sha256_digest", "").strip().lower() or None
        _check_unpublished(index.snapshot(), data, filename, name, version, claimed)
        data.check_publish(filename, name, claimed)
        aim = getattr(temp, "aim", None)  # a bucket: a wheel streams to its final key
        if aim is not None and filename.endswith(".whl"):
            aim(keys.package(filename), filename)
        started = Renderer.ahead()
        if started is not None:
            renderer.append(started)

    receive(environ, temp, limits, form, refuse_early)
    _check_action(form.fields)
    if form.filename is None:
        raise BadRequest("the upload has no 'content' file part")
    filename = form.filename
    check_filename(filename)
    if form.size == 0:
        raise BadRequest(f"{filename} is empty")
    temp.finish()
    digest = form.sha256.hexdigest()
    _check_digests(form, temp, digest)
    source: Path | BinaryIO = temp.local_path() or temp.reader()  # a bucket: no local copy
    try:
        info = inspect_distribution(source, filename)
        check_upload(form.fields, source, filename, info.metadata)
    finally:
        if not isinstance(source, Path):
            source.close()
    _check_form_matches(form.fields, info.name, info.version, filename)
    record = Record(
        filename=filename,
        name=info.name,
        version=info.version,
        sha256=digest,
        size=form.size,
        upload_time=utc_now(),
        # PKG-INFO (or METADATA) first; twine's form field when the file says nothing
        requires_python=info.requires_python
        or valid_requires_python(form.fields.get("requires_python")),
        summary=info.summary,
        core_metadata_sha256=(
            hashlib.sha256(info.metadata).hexdigest() if info.metadata is not None else None
        ),
        uploaded_by=who.user if who else None,
        upload_token=who.token_id if who else None,
    )
    published = data.publish(temp, record, info.metadata)
    by = f" by {who.user}" if who else ""
    if who and who.token_id:
        by += f" (token {who.token_id})"
    if not published:
        log.info("%s uploaded again with the same sha256 %s%s: nothing to do", filename, digest, by)
        return (
            f"OK: {filename} is already published with these exact bytes; nothing changed\n",
            info.name,
        )
    index.invalidate()
    # the model card, once, off the page views
    render_and_store(data, record, info.metadata, renderer[0] if renderer else None)
    log.info("published %s (%d bytes, sha256 %s)%s", filename, form.size, digest, by)
    return f"OK: {filename} published\n", info.name


def _check_action(fields: dict[str, str]) -> None:
    action = fields.get(":action", "file_upload")
    if action != "file_upload":
        raise MethodNotAllowed(
            f":action={action} is not supported; this registry accepts only file_upload"
        )


def _check_unpublished(snap: Snapshot, data: DataDir, filename: str, name: str, version: str,
                       sha256: str | None) -> None:  # fmt: skip
    """Refuse early, from the index, what :meth:`DataDir.publish` will refuse (409).

    An existing file name is refused only when the announced ``sha256`` differs: the
    same bytes again are a success, which needs the whole body to confirm.
    """
    existing = snap.records.get(filename)
    if existing is not None:
        if sha256 and sha256 != existing.sha256:
            raise Conflict(
                f"{filename} already exists; published versions are immutable: bump the version"
            )
        return
    others = [r.filename for r in snap.projects.get(name, []) if versions_equal(r.version, version)]
    if others:
        why = version_conflict(filename, others, promoted_to(data.stage_doc(name), version))
        if why is not None:
            raise Conflict(why)


def _check_digests(form: Form, temp: Upload, sha256: str) -> None:
    """Compare the digests the client announced with the received file's (400 if off).

    A ``sha256_digest`` is always compared, and when it matches it settles the question
    (see :data:`receive.DIGEST_FIELDS`); without one, an announced ``md5_digest`` and
    ``blake2_256_digest`` are compared instead.
    """
    for field_name, new in DIGEST_FIELDS.items():
        claimed = form.fields.get(field_name, "").strip().lower()
        if not claimed or (
            field_name != "sha256_digest" and form.fields.get("sha256_digest", "").strip()
        ):
            continue
        if field_name == "sha256_digest":
            actual = sha256
        elif field_name in form.digests:
            actual = form.digests[field_name].hexdigest()
        else:  # announced after the file: hash what was stored
            digest = new()
            try:
                with temp.reader() as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
            except NotCaptured:  # a wheel on a bucket: only its end and .dist-info were kept
                raise BadRequest(
                    f"{field_name} was sent after the file; this registry checks it only when "
                    "it comes before the file (as twine sends it): send the digest fields first"
                ) from None
            actual = digest.hexdigest()
        if claimed != actual:
            raise BadRequest(
                f"{field_name} {claimed} does not match the received file ({actual}); "
                "the upload was corrupted in transit"
            )


def _check_form_matches(fields: dict[str, str], name: str, version: str, filename: str) -> None:
    form_name = fields.get("name", "").strip()
    if form_name and canonicalize_name(form_name) != name:
        raise BadRequest(f"form field name={form_name!r} does not match {filename}")
    form_version = fields.get("version", "").strip()
    if form_version and not versions_equal(form_version, version):
        raise BadRequest(f"form field version={form_version!r} does not match {filename}")
