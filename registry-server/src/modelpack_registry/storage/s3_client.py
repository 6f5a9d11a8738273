"""Small pieces of the S3 backend: the URL, the boto3 client, reading its errors."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from modelpack_registry.storage.base import check_key, keys

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

    from modelpack_registry.storage.s3 import S3Store

__all__ = ["error_code", "http_status", "last_moved", "make_client", "parse_s3_url", "started"]


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> ``(bucket, prefix)``; :raises ValueError: with the fix."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL (expected s3://BUCKET/PREFIX)")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in "-." for c in bucket):
        raise ValueError(
            f"{url!r}: {bucket!r} is not a bucket name (3-63 letters, digits, '-' or '.'); "
            "expected s3://BUCKET/PREFIX"
        )
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise ValueError(
                f"{url!r}: the prefix has an empty, '.' or '..' part (expected s3://BUCKET/PREFIX)"
            ) from None
    return bucket, prefix


def started(key: str, reported: datetime) -> datetime:
    """When an upload started: the time in its staging key's name
    (``tmp/upload-<unix time>-...``), else what the service reports. (moto's server
    reports one fixed ``Initiated`` date for every multipart upload.)"""
    name = key.rpartition("/")[2]
    stamp = name.split("-")[1] if name.startswith("upload-") and name.count("-") >= 3 else ""
    if stamp.isdigit():
        return datetime.fromtimestamp(int(stamp), timezone.utc)
    return reported


def last_moved(store: S3Store, upload: dict[str, Any]) -> datetime:
    """When a multipart upload last moved: its start (from a ``tmp/`` key's name, else
    as reported), or its newest part if later. A wheel's upload at ``packages/<file>``
    has no time in its name, and moto's server reports one fixed old ``Initiated``
    date; the parts' dates keep a live upload from looking abandoned."""
    begun = started(upload["Key"], upload["Initiated"])
    if upload["Key"].startswith(store.prefix + keys.TMP):
        return begun
    answer = store.call(
        "listing an upload's parts",
        lambda: store.client.list_parts(Bucket=store.bucket, Key=upload["Key"],
                                        UploadId=upload["UploadId"]),
    )  # fmt: skip
    dates: list[datetime] = [part["LastModified"] for part in answer.get("Parts", ())]
    return max([begun, *dates])


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def make_client(endpoint_url: str | None, region: str | None) -> Any:
    """A thread-safe boto3 S3 client (credentials from the standard AWS chain)."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",  # presigned URLs too (SigV2 is deprecated on AWS)
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=5,
        read_timeout=120,
        max_pool_connections=64,  # --threads for reads plus as many for uploads
        # CRC checksums on every request (boto3's default since 1.36) are refused by
        # several S3-compatible services; send and check them only where S3 requires.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
