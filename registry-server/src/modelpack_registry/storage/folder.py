"""The storage interface on a data folder (``--data DIR``), as the registry always kept it.

- Blobs: an upload streams into ``tmp/`` (same filesystem, ``flock``-ed by its writer so
  a start-up sweep can tell a dead writer's leftovers from a live one's), is fsynced, and
  is published with ``os.link``, which fails if the name exists: create only if absent.
- Documents: written through a temp file, fsync and rename. A conditional write holds
  ``DATA/.lock`` (``flock``) while it compares the version and renames, so
  read-compare-write is atomic across every process on the folder (NFS included, where
  ``flock`` is mapped to POSIX locks). A document's version is its content's sha256
  prefix: the same bytes are the same version, whatever wrote them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from modelpack_registry.errors import StorageError, disk_full, full_disk_error
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

__all__ = ["FolderStore", "FolderUpload"]

TEMP_PREFIX = "upload-"
TEMP_SUFFIX = ".part"


def doc_version(data: bytes) -> str:
    """A folder document's version: its content's sha256, shortened."""
    return hashlib.sha256(data).hexdigest()[:32]


class FolderUpload:
    """A locked temp file in ``DATA/tmp``; linked into place by :meth:`commit`."""

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self.file = file
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes | memoryview) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            if disk_full(exc):
                raise full_disk_error(exc) from exc
            raise
        self._size += len(data)

    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def reader(self) -> BinaryIO:
        return open(self.path, "rb")

    def local_path(self) -> Path | None:
        return self.path

    def commit(self, key: str) -> None:
        target = self._root / check_key(key)
        try:
            os.link(self.path, target)
        except FileExistsError:
            raise AlreadyExists(f"{key} exists") from None
        except OSError as exc:
            if disk_full(exc):
                raise full_disk_error(exc) from exc
            raise StorageError(f"cannot publish {key}: {exc.strerror or exc}") from exc
        _fsync_dir(target.parent)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    _root: Path  # set by FolderStore.new_upload


class FolderStore:
    """:class:`~modelpack_registry.storage.base.Store` on a local (or NFS) folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)
        self.tmp = self.root / "tmp"
        self.lock_file = self.root / ".lock"
        self._held = threading.local()

    def path(self, key: str) -> Path:
        """The file behind ``key`` (checked: it cannot leave the folder)."""
        return self.root / check_key(key)

    # -- lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder-wide write lock (``DATA/.lock``) across processes.

        Re-entrant within a thread (a conditional document write inside a held lock must
        not wait for itself: two ``flock``s of one file by one process do conflict)."""
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
        finally:
            os.close(fd)  # releases the lock

    # -- blobs -----------------------------------------------------------------------------
    def new_upload(self) -> FolderUpload:
        name = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}{TEMP_SUFFIX}"
        path = self.tmp / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            if disk_full(exc):
                raise full_disk_error(exc) from exc
            raise StorageError(f"cannot create a temp file in {self.tmp}: {exc}") from exc
        fcntl.flock(fd, fcntl.LOCK_EX)
        upload = FolderUpload(path, os.fdopen(fd, "w+b"))
        upload._root = self.root
        return upload

    def put_new(self, key: str, data: bytes) -> None:
        upload = self.new_upload()
        try:
            upload.write(data)
            upload.finish()
            self.path(key).parent.mkdir(parents=True, exist_ok=True)
            upload.commit(key)
        finally:
            upload.abort()

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise NotFound(key) from None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(key) from None

    def read_range(self, key: str, start: int, end: int) -> bytes:
        with self.open(key) as f:
            f.seek(start)
            return f.read(max(0, end - start))

    def stat(self, key: str) -> BlobInfo | None:
        try:
            st = os.stat(self.path(key))
        except FileNotFoundError:
            return None
        return BlobInfo(key, st.st_size, st.st_mtime, f"{st.st_mtime_ns}-{st.st_size}-{st.st_ino}")

    def iter_keys(self, prefix: str) -> Iterator[str]:
        folder = self.root / check_key(prefix) if prefix else self.root
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            # not the temp files of atomic writes, nor sub-folders (a bucket has no folders)
            if not entry.name.startswith(".") and entry.is_file():
                yield f"{prefix}{entry.name}"

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def download_url(self, key: str, expires: int) -> str | None:
        return None

    def pending_uploads(self) -> list[str]:
        try:
            return sorted(os.listdir(self.tmp))
        except FileNotFoundError:
            return []

    def sweep_uploads(self) -> list[str]:
        """Remove temp files whose writer is gone (a live writer holds ``flock`` on its own)."""
        removed: list[str] = []
        for name in self.pending_uploads():
            path = self.tmp / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live upload of another server process
            try:
                path.unlink()
                removed.append(name)
            except OSError:
                pass
            finally:
                os.close(fd)
        return removed

    # -- documents -------------------------------------------------------------------------
    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, doc_version(data)

    def write_doc(self, key: str, data: bytes, expect: Expect = ANY, *,
                  private: bool = False) -> str:  # fmt: skip
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
        if expect is ANY:
            self._atomic_write(path, data, 0o600 if private else 0o666)
            return doc_version(data)
        with self.locked():
            self._check_expected(key, expect)
            self._atomic_write(path, data, 0o600 if private else 0o666)
        return doc_version(data)

    def delete_doc(self, key: str, expect: Expect = ANY) -> None:
        path = self.path(key)
        if expect is ANY:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        with self.locked():
            self._check_expected(key, expect)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _check_expected(self, key: str, expect: Expect) -> None:
        current = self.read_doc(key)
        if expect is NEW:
            if current is not None:
                raise AlreadyExists(f"{key} exists")
        elif current is None or current[1] != expect:
            raise Stale(f"{key} changed meanwhile")

    @staticmethod
    def _atomic_write(path: Path, data: bytes, mode: int) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "wb", opener=lambda name, flags: os.open(name, flags, mode)) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if disk_full(exc):
                raise full_disk_error(exc) from exc
            raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
