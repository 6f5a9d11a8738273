"""The storage interface: what the registry needs from a folder or a bucket.

Two kinds of object, and only conditional operations on them (S3 offers no locks):

- **Blobs** (``packages/<file>``, ``meta/<file>.metadata``, cards): written once,
  never changed. :meth:`Store.new_upload` streams one in, :meth:`Upload.commit`
  publishes it under a key *only if that key is absent* (folder: ``os.link``;
  S3: ``If-None-Match: *`` on CompleteMultipartUpload), so of two uploads of one
  name exactly one wins and nothing is ever overwritten.
- **Documents** (``state/...``, ``meta/<file>.json``, ``generation``): small JSON
  (or text) files that change. Each read returns ``(bytes, version)``; a write names the
  version it expects (:data:`NEW`: "must not exist yet") and fails with :class:`Stale`
  if the document moved on meanwhile (folder: compare under ``flock`` then rename;
  S3: ``If-Match`` on the ETag / ``If-None-Match: *``). :meth:`Store.update_doc` is
  the retrying read-modify-write every state change goes through.

Keys are ``/``-separated strings relative to the store's root, never paths: a key is
built from the templates below from names that were validated first, and every backend
refuses a key that is absolute, empty, or has a ``.``/``..`` segment
(:func:`check_key`), so nothing taken from a request escapes the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from modelpack_registry.errors import StorageError

__all__ = [
    "ANY",
    "NEW",
    "AlreadyExists",
    "BlobInfo",
    "NotFound",
    "Stale",
    "Store",
    "Upload",
    "check_key",
    "keys",
]


# -- key templates (every key the registry uses, declared once) ------------------------
class keys:
    """Key templates. Arguments are validated names (file names, canonical names, ids)."""

    PACKAGES: Final = "packages/"
    META: Final = "meta/"
    TMP: Final = "tmp/"
    YANKED: Final = "state/yanked/"
    STAGES: Final = "state/stages/"
    OWNERS: Final = "state/owners/"
    RESERVED: Final = "state/reserved/"
    TOKENS: Final = "state/tokens/"
    CLAIMS: Final = "claims/"
    GENERATION: Final = "generation"

    @staticmethod
    def package(filename: str) -> str:
        return f"packages/{filename}"

    @staticmethod
    def record(filename: str) -> str:
        return f"meta/{filename}.json"

    @staticmethod
    def metadata(filename: str) -> str:
        return f"meta/{filename}.metadata"

    @staticmethod
    def card(filename: str) -> str:
        return f"meta/{filename}.card.html"

    @staticmethod
    def yanked(filename: str) -> str:
        return f"state/yanked/{filename}.json"

    @staticmethod
    def stages(name: str) -> str:
        return f"state/stages/{name}.json"

    @staticmethod
    def owners(name: str) -> str:
        return f"state/owners/{name}.json"

    @staticmethod
    def reserved(name: str) -> str:
        return f"state/reserved/{name}.json"

    @staticmethod
    def token(token_id: str) -> str:
        return f"state/tokens/{token_id}.json"

    @staticmethod
    def claims(name: str, version: str) -> str:
        """The files claimed for one version (canonical name, normalized version):
        the document that serializes the version rules without a lock. Flat (one folder
        for all), so that a new name costs no folder and one listing finds them all."""
        return f"claims/{name}=={version}.json"


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`ValueError`."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"unsafe storage key {key!r}")
    parts = key.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"unsafe storage key {key!r}")
    return key


# -- errors ------------------------------------------------------------------------------
class Stale(StorageError):
    """A document changed (or appeared, or vanished) since the version the writer read."""


class AlreadyExists(Stale):
    """A create-only-if-absent write lost: the key exists (nothing was changed)."""


class NotFound(StorageError, FileNotFoundError):
    """No object under that key."""


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: ``expect=NEW``: the document must not exist yet (create only if absent).
NEW: Final = _Sentinel("NEW")
#: ``expect=ANY``: overwrite whatever is there (no condition).
ANY: Final = _Sentinel("ANY")

Expect = str | _Sentinel


@dataclass(frozen=True)
class BlobInfo:
    """What :meth:`Store.stat` knows of an object without reading it."""

    key: str
    size: int
    mtime: float  # seconds since the epoch
    version: str  # folder: "<mtime_ns>-<size>-<inode>"; S3: the ETag


# -- protocols ---------------------------------------------------------------------------
class Upload(Protocol):
    """A blob being streamed in; invisible until :meth:`commit`, gone after :meth:`abort`."""

    @property
    def size(self) -> int:
        """Bytes written so far."""

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` (the caller hashes; backends may buffer up to a part size)."""

    def finish(self) -> None:
        """No more data: make the bytes readable through :meth:`reader` (still unlisted)."""

    def reader(self) -> BinaryIO:
        """A seekable read-only view of the finished bytes (for validation)."""

    def local_path(self) -> Path | None:
        """The finished bytes as a local file, if the backend has one (folder: yes)."""

    def commit(self, key: str) -> None:
        """Publish the finished bytes under ``key`` only if it is absent.

        :raises AlreadyExists: the key exists; this upload is then still discardable.
        """

    def abort(self) -> None:
        """Forget the bytes (idempotent; also after a successful commit)."""


class Store(Protocol):
    """One place where the registry's state lives (a data folder, or a bucket prefix)."""

    #: For messages and ``--data``-style hints: a folder path or ``s3://bucket/prefix``.
    url: str

    # blobs
    def new_upload(self) -> Upload:
        """Start streaming a new blob (see :class:`Upload`)."""

    def put_new(self, key: str, data: bytes) -> None:
        """Create a small blob under ``key`` only if absent (:class:`AlreadyExists`)."""

    def open(self, key: str) -> BinaryIO:
        """Read a blob from its start (seekable if the backend can). :raises NotFound:"""

    def read_bytes(self, key: str) -> bytes:
        """A small blob's whole content. :raises NotFound:"""

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a blob. :raises NotFound:"""

    def stat(self, key: str) -> BlobInfo | None:
        """Size, mtime and version of ``key``, or None if absent."""

    def iter_keys(self, prefix: str) -> Iterator[str]:
        """The keys under ``prefix`` (a folder-like ``a/b/``), in no particular order,
        only the immediate children (no ``/`` after the prefix), and objects only: a
        "sub-folder" is not a key (a bucket has none)."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent). Only maintenance uses this on packages."""

    def local_path(self, key: str) -> Path | None:
        """The object as a local file (folder: yes, for sendfile), else None."""

    def download_url(self, key: str, expires: int) -> str | None:
        """A URL a client may fetch ``key`` from for ``expires`` seconds, or None
        (folder: None; S3: a presigned GET)."""

    def pending_uploads(self) -> list[str]:
        """Uploads started and neither committed nor aborted yet (for ``verify``, metrics)."""

    def sweep_uploads(self) -> list[str]:
        """Remove the uploads whose writer is gone (folder: temp files nobody ``flock``s;
        S3: multipart uploads older than a day); return what was removed."""

    # documents
    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        """``(content, version)`` of a document, or None if absent."""

    def write_doc(self, key: str, data: bytes, expect: Expect = ANY, *,
                  private: bool = False) -> str:  # fmt: skip
        """Write a document if its version is still ``expect`` (or :data:`NEW`: absent,
        :data:`ANY`: unconditionally); return its new version. ``private``: readable by
        the registry's user only (folder: mode 0600; S3: no difference).

        :raises Stale: the document is not (or no longer) at ``expect``.
        :raises AlreadyExists: ``expect`` was :data:`NEW` and it exists (a :class:`Stale`).
        """

    def delete_doc(self, key: str, expect: Expect = ANY) -> None:
        """Remove a document if still at ``expect``. :raises Stale:"""


def update_doc(store: Store, key: str,
               mutate: Callable[[bytes | None], bytes | None], *,
               private: bool = False, attempts: int = 20) -> bytes | None:  # fmt: skip
    """Read-modify-write ``key`` until no other writer got in between.

    ``mutate`` gets the current content (None: absent) and returns the new one (None:
    delete it); it may raise to refuse (nothing written) and may run several times, so it
    must have no side effects. Returns what was written.

    :raises StorageError: if ``attempts`` tries all lost to other writers.
    """
    for attempt in range(attempts):
        current = store.read_doc(key)
        content, version = current if current is not None else (None, NEW)
        new = mutate(content)
        try:
            if new is None:
                if current is not None:
                    store.delete_doc(key, expect=version)
            elif new != content:
                store.write_doc(key, new, expect=version, private=private)
            return new
        except Stale:
            time.sleep(min(0.005 * 2**attempt, 0.2))
    raise StorageError(f"{key}: too many concurrent writers, try again")
