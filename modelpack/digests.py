"""A cache of the weight files' sha256 and CRC-32, keyed by what ``stat`` says of them.

``RECORD`` needs the sha256 of every weight file and the zip needs its CRC-32. Hashing is
the slowest part of adding weights to a wheel (sha256 runs at about 2 GB/s, slower than
an in-kernel copy), and a data scientist rebuilds the same weights many times while the
code and manifest change. So, like git's index, DVC and rsync, ``modelpack build``
remembers the digests of a file under its identity: size, mtime and ctime in
nanoseconds, inode and device. Any write to a file changes its mtime and ctime, and
ctime cannot be set back, so a changed file never matches a stale entry.

The "racy git" case is covered too: a file is remembered only if its mtime and ctime
are older than the moment hashing began by more than :data:`RACY_NS`, so a write in
the same timestamp tick as the hash (coarse clocks, FAT's 2 s) cannot go unnoticed.

The cache lives in ``$MODELPACK_CACHE_DIR`` (default ``$XDG_CACHE_HOME/modelpack``,
else ``~/.cache/modelpack``), file ``weight-digests.json``. It is only an optimization:
a missing, unreadable or corrupt cache is ignored, and ``modelpack build --no-cache``
hashes everything again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

__all__ = ["RACY_NS", "DigestCache", "Digests", "Identity", "cache_dir", "identity"]

RACY_NS = 2_000_000_000
MAX_ENTRIES = 4096
_FILE = "weight-digests.json"

Identity = tuple[int, int, int, int, int]


class Digests(NamedTuple):
    sha256: str  # hex
    crc32: int


def identity(st: os.stat_result) -> Identity:
    """What changes whenever a file's content can have changed (ctime cannot be set back)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def cache_dir() -> Path:
    if os.environ.get("MODELPACK_CACHE_DIR"):
        return Path(os.environ["MODELPACK_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelpack"


class DigestCache:
    """The digests remembered in *folder* (default :func:`cache_dir`); call :meth:`save`.

    Digests put during this build are kept in memory too, racy or not, so that weights
    hashed ahead (while the backend builds) need not be hashed again. With *persist*
    false, the folder is neither read nor written: only this build's digests count.
    """

    def __init__(self, folder: Path | None = None, *, persist: bool = True) -> None:
        self.path = (folder or cache_dir()) / _FILE
        self.persist = persist
        self._entries: dict[str, dict[str, object]] = {}
        self._session: dict[str, tuple[Identity, Digests]] = {}
        self._dirty = False
        if not persist:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                self._entries = data["files"]
        except (OSError, ValueError):
            pass

    def get(self, path: Path, st: os.stat_result) -> Digests | None:
        key = str(path.resolve())
        if key in self._session and self._session[key][0] == identity(st):
            return self._session[key][1]
        entry = self._entries.get(key)
        if not isinstance(entry, dict) or entry.get("id") != list(identity(st)):
            return None
        sha, crc = entry.get("sha256"), entry.get("crc32")
        if not (isinstance(sha, str) and len(sha) == 64 and isinstance(crc, int)):
            return None
        return Digests(sha, crc)

    def put(self, path: Path, st: os.stat_result, digests: Digests, started_ns: int) -> None:
        """Remember *digests* of *path* as it was at *st*, hashed from *started_ns* on."""
        key = str(path.resolve())
        self._session[key] = (identity(st), digests)
        if not self.persist or max(st.st_mtime_ns, st.st_ctime_ns) > started_ns - RACY_NS:
            return  # written too recently: a write in the same clock tick could hide
        self._entries.pop(key, None)  # re-inserted last: the oldest entries go first
        self._entries[key] = {
            "id": list(identity(st)), "sha256": digests.sha256, "crc32": digests.crc32,
        }  # fmt: skip
        self._dirty = True

    def save(self) -> None:
        """Write the cache atomically; a failure to write is not an error (it is a cache)."""
        if not self._dirty:
            return
        entries = list(self._entries.items())[-MAX_ENTRIES:]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".digests-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"version": 1, "files": dict(entries)}, f)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            return
        self._dirty = False
