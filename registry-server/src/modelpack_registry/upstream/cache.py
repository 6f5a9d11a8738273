"""The upstream cache under ``DATA/mirror/``: a copy, never part of the registry's state.

::

    DATA/mirror/
      simple/<name>.json                  the last project page fetched: its links (hashes,
                                          requires-python, yank, core metadata), ETag,
                                          serial and fetch time
      files/<sha256[:2]>/<sha256>/<file>  a file, kept only after its bytes hashed to the
                                          <sha256> the upstream page gave
      files/<m[:2]>/<m>/<file>.metadata   a PEP 658 file, under its own sha256 <m>
      tmp/                                downloads in progress
      locks/                              one lock file per page or file being fetched

Nothing outside ``mirror/`` is written, and no private code path (reindex, owners, the
catalog, metrics of private models, the private half of ``verify``) looks inside it.
The whole folder can be deleted at any time (with the server running or not): pages and
files are fetched again on the next request. What it buys is speed and offline installs.

A file's directory name is the hash it was checked against, so ``verify`` re-hashes every
file against its path (:func:`verify_mirror`). Files are created with ``os.link`` from a
finished temp file, so a half-written file is never visible.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["MirrorCache", "verify_mirror"]

TEMP_PREFIX = "fetch-"


class MirrorCache:
    """Paths and primitive operations on ``DATA/mirror``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.pages = self.root / "simple"
        self.files = self.root / "files"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"

    def ensure(self) -> None:
        """Create the folders (:raises OSError: if it cannot)."""
        for folder in (self.pages, self.files, self.tmp, self.locks):
            folder.mkdir(parents=True, exist_ok=True)

    # -- pages ----------------------------------------------------------------------------
    def read_page(self, name: str) -> dict[str, Any] | None:
        """The stored page document of ``name``, None if absent or unreadable."""
        try:
            raw: Any = json.loads((self.pages / f"{name}.json").read_bytes())
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def page_mtime(self, name: str) -> float | None:
        try:
            return (self.pages / f"{name}.json").stat().st_mtime
        except OSError:
            return None

    def write_page(self, name: str, doc: dict[str, Any]) -> None:
        """Store a page document atomically (temp file and rename)."""
        self.ensure()
        path = self.pages / f"{name}.json"
        tmp = path.with_name(f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_bytes(json.dumps(doc).encode())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    # -- files ----------------------------------------------------------------------------
    def file_path(self, sha256: str, filename: str) -> Path:
        """Where a file checked against ``sha256`` is kept (both already validated)."""
        return self.files / sha256[:2] / sha256 / filename

    @contextlib.contextmanager
    def temp_file(self) -> Iterator[tuple[Path, IO[bytes]]]:
        """A new temp file in ``mirror/tmp``, removed on exit unless linked elsewhere."""
        self.ensure()
        path = self.tmp / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}.part"
        f = open(path, "w+b")  # closed below
        try:
            yield path, f
        finally:
            f.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def keep(self, temp: Path, f: IO[bytes], sha256: str, filename: str) -> Path:
        """Make a checked temp file visible at :meth:`file_path` (first writer wins)."""
        f.flush()
        os.fsync(f.fileno())
        target = self.file_path(sha256, filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.link(temp, target)
        return target

    # -- one fetch at a time --------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str, wait: float) -> Iterator[bool]:
        """Hold the lock for ``key`` (an flock, so across threads and processes).

        Waits at most ``wait`` seconds (0: do not wait); yields whether it was taken.
        """
        self.ensure()
        fd = os.open(self.locks / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        got = False
                        break
                    time.sleep(0.02)
            yield got
        finally:
            os.close(fd)

    def usage(self) -> tuple[int, int]:
        """(files, bytes) held in ``mirror/files``."""
        count = total = 0
        for path in self._file_paths():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
                count += 1
        return count, total

    def _file_paths(self) -> Iterator[Path]:
        try:
            prefixes = sorted(os.listdir(self.files))
        except OSError:
            return
        for prefix in prefixes:
            with contextlib.suppress(OSError):
                for digest in sorted(os.listdir(self.files / prefix)):
                    with contextlib.suppress(OSError):
                        for name in sorted(os.listdir(self.files / prefix / digest)):
                            yield self.files / prefix / digest / name


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_mirror(root: Path) -> list[str]:
    """Problems in ``DATA/mirror`` (each file re-hashed against its recorded sha256).

    Any of them is fixed by deleting the file (or the whole folder): it is fetched and
    checked again on the next request.
    """
    cache = MirrorCache(root)
    problems: list[str] = []
    for path in cache._file_paths():
        rel = path.relative_to(root.parent)
        expected = path.parent.name
        if path.parent.parent.name != expected[:2] or len(expected) != 64:
            problems.append(f"stray file in the upstream cache: {rel} (delete it)")
            continue
        try:
            actual = _sha256(path)
        except OSError as exc:
            problems.append(f"unreadable: {rel}: {exc} (delete it; it is fetched again)")
            continue
        if actual != expected:
            problems.append(
                f"corrupt: {rel}: sha256 {actual} does not match the upstream's {expected} "
                "(delete it; it is fetched again)"
            )
    for name in sorted(os.listdir(cache.tmp)) if cache.tmp.is_dir() else []:
        if name.startswith(TEMP_PREFIX) and not _in_use(cache.tmp / name):
            problems.append(f"leftover temp file: {cache.tmp.relative_to(root.parent)}/{name}")
    return problems


def _in_use(path: Path) -> bool:
    """A download in progress writes to its file at least every read timeout."""
    try:
        return time.time() - path.stat().st_mtime < 600
    except OSError:
        return True
