"""Where the state lives, from the command line: ``--data DIR`` or ``--storage URL``.

:func:`open_store` is the one place a :class:`~.base.Store` is built from what a user
typed, so every command (``serve``, ``verify``, ``reindex``, ...) accepts the same
locations and fails with the same one-line messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelpack_registry.errors import ConfigError
from modelpack_registry.storage.base import Store

if TYPE_CHECKING:
    from modelpack_registry.storage.datadir import DataDir

__all__ = ["ENV", "Location", "is_bucket", "open_data", "open_store"]

#: environment variables equivalent to the options (an option given wins)
ENV = {
    "storage": "MODELPACK_STORAGE",
    "endpoint": "MODELPACK_S3_ENDPOINT",
    "region": "MODELPACK_S3_REGION",
    "redirect": "MODELPACK_S3_REDIRECT",
    "url_ttl": "MODELPACK_S3_URL_TTL",
}
DEFAULT_DATA = Path("registry-data")


def is_bucket(location: str | Path) -> bool:
    return str(location).startswith("s3://")


@dataclass(frozen=True)
class Location:
    """What ``--data`` / ``--storage`` / ``--s3-*`` (or their variables) resolved to."""

    storage: str
    """A folder path or ``s3://BUCKET/PREFIX``."""
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def resolve(cls, data: Path | None, storage: str | None, endpoint_url: str | None,
                region: str | None, env: Mapping[str, str] = os.environ) -> Location:  # fmt: skip
        """``--data`` and ``--storage`` exclude each other; an option beats a variable.

        :raises ConfigError: both options given, or ``--s3-*`` without a bucket."""
        if data is not None and storage is not None:
            raise ConfigError("give either --data DIR or --storage URL, not both")
        if storage is None and data is None:
            storage = env.get(ENV["storage"]) or None
        endpoint_url = endpoint_url or env.get(ENV["endpoint"]) or None
        region = region or env.get(ENV["region"]) or None
        where = storage if storage is not None else str(data or DEFAULT_DATA)
        if "://" in where and not is_bucket(where):
            raise ConfigError(_not_a_url(where))
        if (endpoint_url or region) and not is_bucket(where):
            flag = "--s3-endpoint" if endpoint_url else "--s3-region"
            raise ConfigError(f"{flag} needs --storage s3://BUCKET/PREFIX (got {where})")
        return cls(where, endpoint_url, region)

    @property
    def folder(self) -> Path | None:
        """The data folder, or None for a bucket."""
        return None if is_bucket(self.storage) else Path(self.storage)


def open_store(location: str | Path | Location, *, endpoint_url: str | None = None,
               region: str | None = None, check: bool = True) -> Store:  # fmt: skip
    """A folder store for a path, an :class:`~.s3.S3Store` for ``s3://BUCKET/PREFIX``.

    ``check``: make sure the bucket exists and answers (one ``HeadBucket``).

    :raises ConfigError: a malformed URL, another scheme, or boto3 is not installed.
    :raises StorageError: the endpoint is unreachable, the bucket is missing, the
        credentials are refused (each message names the fix).
    """
    if isinstance(location, Location):
        endpoint_url, region = location.endpoint_url, location.region
        location = location.storage
    text = str(location)
    if not is_bucket(text):
        if "://" in text:
            raise ConfigError(_not_a_url(text))
        from modelpack_registry.storage.folder import FolderStore

        return FolderStore(Path(text))
    from modelpack_registry.storage.s3 import S3Store, parse_s3_url

    try:
        bucket, prefix = parse_s3_url(text)
    except ValueError as exc:
        raise ConfigError(f"--storage: {exc}") from None
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"--storage {text} needs boto3, which is not installed: "
            "pip install 'modelpack-registry[s3]'"
        ) from None
    store = S3Store(bucket, prefix, endpoint_url, region)
    if check:
        store.check()
    return store


def open_data(location: Location, *, check: bool = True) -> DataDir:
    """The registry's :class:`~.datadir.DataDir` at ``location`` (a folder: as is; the
    caller checks it is one where that matters). See :func:`open_store` for errors."""
    from modelpack_registry.storage.datadir import DataDir

    if location.folder is not None:
        return DataDir(location.folder)
    return DataDir.from_store(open_store(location, check=check))


def _not_a_url(text: str) -> str:
    return (f"--storage {text!r}: not a storage URL; give s3://BUCKET/PREFIX for a bucket "
            "or --data DIR for a folder")  # fmt: skip
