"""The storage interface on an S3-compatible bucket (``--storage s3://BUCKET/PREFIX``).

Every key lives under ``PREFIX/`` in ``BUCKET``. No lock exists on a bucket, so every
state change is one conditional request:

- **Blobs** are created only if absent: ``PutObject`` with ``If-None-Match: *`` for a small
  one (:meth:`S3Store.put_new`), and for an upload a multipart upload to a staging key under
  ``tmp/`` that :meth:`~modelpack_registry.storage.s3_upload.S3Upload.commit` copies server
  side to its key with ``CompleteMultipartUpload`` + ``If-None-Match: *`` (412: it exists).
  A wheel skips the staging: its multipart upload is at ``packages/<file>`` from the start
  and is completed there, with the same condition, once validated
  (:meth:`~modelpack_registry.storage.s3_upload.S3Upload.aim`).
- **Documents**: the version is the object's ETag. A write names it with ``If-Match``
  (or ``If-None-Match: *`` for :data:`~.base.NEW`); a delete with ``If-Match`` on
  ``DeleteObject``. 412 means another writer got in between: :class:`~.base.Stale`.
  409 ``ConditionalRequestConflict`` (two conditional writes racing) is retried.

What the service must support: conditional ``PutObject`` and ``CompleteMultipartUpload``
(``If-None-Match: *``, ``If-Match``), ``If-Match`` on ``DeleteObject``, ``UploadPartCopy``,
``ListObjectsV2`` with a delimiter, ``ListMultipartUploads`` and presigned GETs (AWS S3
has all of them since 2025; so does moto's server, which the tests use). A service that
ignores ``If-Match`` on ``DeleteObject`` turns a conditional delete into an unconditional
one; nothing the registry deletes that way is ever re-created concurrently by design
(yanks, stage entries), but check the service before relying on it.

Credentials come from boto3's standard chain (environment, config files, instance or pod
roles). Abandoned uploads: set a lifecycle rule ``AbortIncompleteMultipartUpload`` after
1 day on the bucket, and :meth:`S3Store.sweep_uploads` (run at start-up) aborts what is
older than a day (its newest part, if it has one, counts as its age: a live upload's is
seconds old) and removes staged objects left in ``tmp/``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from modelpack_registry.errors import StorageError
from modelpack_registry.storage.base import (
    ANY,
    NEW,
    AlreadyExists,
    BlobInfo,
    Expect,
    NotFound,
    Stale,
    check_key,
)
from modelpack_registry.storage.s3_client import (
    error_code,
    http_status,
    last_moved,
    make_client,
    parse_s3_url,
    started,
)
from modelpack_registry.storage.s3_upload import S3Reader, S3Upload

__all__ = ["S3Store", "parse_s3_url"]  # parse_s3_url: from s3_client

T = TypeVar("T")

#: multipart uploads (and staged objects in ``tmp/``) older than this are abandoned
STALE_AFTER = timedelta(days=1)
#: a part of a streamed upload (S3's minimum is 5 MiB, except the last)
PART_SIZE = 16 * 1024 * 1024
_CONFLICT_RETRIES = 5


class S3Store:
    """:class:`~modelpack_registry.storage.base.Store` on a bucket (or a prefix of one)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        part_size: int = PART_SIZE,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}/{self.prefix}"
        self.part_size = max(part_size, 5 * 1024 * 1024)
        if client is None:
            client = make_client(endpoint_url, region)
        self.client = client

    # -- helpers ---------------------------------------------------------------------------
    def full(self, key: str) -> str:
        """The object key in the bucket for the store's ``key`` (checked)."""
        return self.prefix + check_key(key)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request; turn what is not the caller's business into StorageError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            raise self.error(what, exc) from None
        except BotoCoreError as exc:
            raise self.error(what, exc) from None

    def error(self, what: str, exc: Exception) -> StorageError:
        """A one-line StorageError naming the bucket, the problem and its fix."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
        )

        where = f"{self.url}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")
        if isinstance(exc, EndpointConnectionError):
            fix = "check --s3-endpoint (MODELPACK_S3_ENDPOINT) and that the service is running"
            return StorageError(f"{where}: cannot reach the S3 endpoint ({what}): {fix}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                f"{where}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or give the pod/instance a role"
            )
        if isinstance(exc, NoRegionError):
            return StorageError(f"{where}: no region: give --s3-region or set AWS_REGION")
        if isinstance(exc, ClientError):
            code = error_code(exc)
            message = exc.response.get("Error", {}).get("Message", "") or str(exc)
            if code == "NoSuchBucket":
                fix = f"create the bucket {self.bucket!r} or correct --storage"
            elif code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                fix = "check the AWS credentials and the bucket's policy"
            else:
                fix = "see the S3 service's logs"
            return StorageError(f"{where}: {what} failed: {code} {message}: {fix}")
        return StorageError(f"{where}: {what} failed: {exc}")

    def check(self) -> None:
        """Check the bucket exists and is reachable with these credentials.

        :raises StorageError: naming the problem and the fix."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket"):
                raise StorageError(
                    f"{self.url}: no bucket {self.bucket!r} on "
                    f"{self.endpoint_url or 'AWS S3'}: create it or correct --storage"
                ) from None
            raise self.error("checking the bucket", exc) from None
        except BotoCoreError as exc:
            raise self.error("checking the bucket", exc) from None

    def conditional(self, what: str, key: str, fn: Callable[[], T], *, new: bool) -> T:
        """Run a conditional write: 412 -> AlreadyExists/Stale, 409 retried, 404 -> Stale."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(_CONFLICT_RETRIES):
            try:
                return fn()
            except ClientError as exc:
                code, status = error_code(exc), http_status(exc)
                if status == 412 or code == "PreconditionFailed":
                    raise (AlreadyExists if new else Stale)(
                        f"{key} exists" if new else f"{key} changed meanwhile"
                    ) from None
                if status == 409 and attempt + 1 < _CONFLICT_RETRIES:
                    time.sleep(0.01 * 2**attempt)  # ConditionalRequestConflict: try again
                    continue
                if status == 409:
                    raise Stale(f"{key}: a concurrent write kept conflicting") from None
                if code == "NoSuchKey" or status == 404:
                    raise Stale(f"{key} vanished meanwhile") from None
                raise self.error(what, exc) from None
            except BotoCoreError as exc:
                raise self.error(what, exc) from None
        raise AssertionError("unreachable")

    def get_range(self, full_key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of an object (``end`` past its size: up to its end)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if end <= start:
            return b""
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=full_key, Range=f"bytes={start}-{end - 1}"
            )
            return cast(bytes, answer["Body"].read())
        except ClientError as exc:
            if error_code(exc) == "InvalidRange":
                return b""
            if error_code(exc) == "NoSuchKey":
                raise NotFound(full_key[len(self.prefix) :]) from None
            raise self.error(f"reading {full_key}", exc) from None
        except BotoCoreError as exc:
            raise self.error(f"reading {full_key}", exc) from None

    def head(self, full_key: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return cast("dict[str, Any]", self.client.head_object(Bucket=self.bucket, Key=full_key))
        except ClientError as exc:
            if http_status(exc) == 404:
                return None
            raise self.error(f"reading {full_key}", exc) from None
        except BotoCoreError as exc:
            raise self.error(f"reading {full_key}", exc) from None

    # -- blobs -----------------------------------------------------------------------------
    def new_upload(self) -> S3Upload:
        return S3Upload(self, self.part_size)

    def put_new(self, key: str, data: bytes) -> None:
        full = self.full(key)
        self.conditional(
            f"writing {key}", key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data,
                                           IfNoneMatch="*"),
            new=True,
        )  # fmt: skip

    def open(self, key: str) -> BinaryIO:
        full = self.full(key)
        info = self.head(full)
        if info is None:
            raise NotFound(key)
        return cast(BinaryIO, S3Reader(self, full, int(info["ContentLength"])))

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self.full(key)
        try:
            return cast(bytes, self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read())
        except ClientError as exc:
            if error_code(exc) == "NoSuchKey":
                raise NotFound(key) from None
            raise self.error(f"reading {key}", exc) from None
        except BotoCoreError as exc:
            raise self.error(f"reading {key}", exc) from None

    def read_range(self, key: str, start: int, end: int) -> bytes:
        full = self.full(key)
        if end <= start:
            if self.head(full) is None:
                raise NotFound(key)
            return b""
        return self.get_range(full, start, end)

    def stat(self, key: str) -> BlobInfo | None:
        info = self.head(self.full(key))
        if info is None:
            return None
        mtime = info["LastModified"].timestamp()
        return BlobInfo(key, int(info["ContentLength"]), mtime, str(info["ETag"]))

    def iter_keys(self, prefix: str) -> Iterator[str]:
        full = self.full(prefix) if prefix else self.prefix
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full, Delimiter="/"
        )
        strip = len(self.prefix)
        for page in self._pages(f"listing {prefix or '/'}", pages):
            for item in page.get("Contents", ()):
                yield item["Key"][strip:]

    def _pages(self, what: str, pages: Any) -> Iterator[dict[str, Any]]:
        iterator = iter(pages)
        while True:
            page = self.call(what, lambda: next(iterator, None))
            if page is None:
                return
            yield page

    def delete(self, key: str) -> None:
        full = self.full(key)
        self.call(
            f"deleting {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=full)
        )

    def local_path(self, key: str) -> Path | None:
        return None

    def download_url(self, key: str, expires: int) -> str | None:
        full = self.full(key)
        return cast(
            str,
            self.call(
                f"signing a URL for {key}",
                lambda: self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=expires
                ),
            ),
        )

    def _multipart_uploads(self) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in self._pages("listing multipart uploads", pages):
            yield from page.get("Uploads", ())

    def _staged(self) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + "tmp/"
        )
        for page in self._pages("listing tmp/", pages):
            yield from page.get("Contents", ())

    def pending_uploads(self) -> list[str]:
        strip = len(self.prefix)
        names = [u["Key"][strip:] for u in self._multipart_uploads()]
        names += [o["Key"][strip:] for o in self._staged()]
        return sorted(names)

    def sweep_uploads(self, older_than: timedelta = STALE_AFTER) -> list[str]:
        """Abort multipart uploads and delete staged ``tmp/`` objects older than a day."""
        cutoff = datetime.now(timezone.utc) - older_than
        strip = len(self.prefix)
        removed: list[str] = []
        for upload in list(self._multipart_uploads()):
            with contextlib.suppress(StorageError):  # gone meanwhile: done or aborted
                if last_moved(self, upload) < cutoff:
                    self._abort(upload["Key"], upload["UploadId"])
                    removed.append(upload["Key"][strip:])
        for obj in list(self._staged()):
            if started(obj["Key"], obj["LastModified"]) < cutoff:
                with contextlib.suppress(StorageError):
                    self._delete_full(obj["Key"])
                    removed.append(obj["Key"][strip:])
        return removed

    def _abort(self, full: str, upload_id: str) -> None:
        self.call(
            "aborting an abandoned upload",
            lambda: self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id
            ),
        )

    def _delete_full(self, full: str) -> None:
        self.call(
            "removing an abandoned upload",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=full),
        )

    # -- documents -------------------------------------------------------------------------
    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self.full(key)
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=full)
            return answer["Body"].read(), str(answer["ETag"])
        except ClientError as exc:
            if error_code(exc) == "NoSuchKey":
                return None
            raise self.error(f"reading {key}", exc) from None
        except BotoCoreError as exc:
            raise self.error(f"reading {key}", exc) from None

    def write_doc(self, key: str, data: bytes, expect: Expect = ANY, *,
                  private: bool = False) -> str:  # fmt: skip
        full = self.full(key)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Body": data}
        if expect is NEW:
            args["IfNoneMatch"] = "*"
        elif expect is not ANY:
            args["IfMatch"] = expect
        answer = self.conditional(
            f"writing {key}", key, lambda: self.client.put_object(**args), new=expect is NEW
        )
        return str(answer["ETag"])

    def delete_doc(self, key: str, expect: Expect = ANY) -> None:
        full = self.full(key)
        if expect is ANY:
            self.delete(key)
        elif expect is NEW:  # "must not exist": nothing to delete, unless it does exist
            if self.head(full) is not None:
                raise AlreadyExists(f"{key} exists")
        else:
            version = cast(str, expect)
            self.conditional(
                f"deleting {key}", key,
                lambda: self.client.delete_object(Bucket=self.bucket, Key=full, IfMatch=version),
                new=False,
            )  # fmt: skip
