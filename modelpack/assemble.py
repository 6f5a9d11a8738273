"""Put the weights into the wheel uncompressed, without ever compressing them.

hatchling (like most backends) writes every file with DEFLATE and has no option to
store some files: for 1 GiB of float32 weights zlib takes about 35 s to save 7 %.
So ``modelpack build`` lets the project's own PEP 517 backend build the wheel from a
staged copy of the project *without* its weights folder, then assembles the final
wheel: every member of the backend's wheel as it was, the weight files added with
``ZIP_STORED`` (streamed, hashed once), and ``RECORD`` rewritten to list them. This works
with any backend (hatchling, setuptools, flit, ...), keeps RECORD correct, and is
reproducible: the weights get the timestamp the backend gave its own files.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CHUNK", "add_stored_files", "stage_project"]

CHUNK = 1 << 20
_SKIP_DIRS = {
    "dist", "build", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", ".tox", ".nox", ".git", ".hg",
}  # fmt: skip


def stage_project(root: Path, weights_dir: Path, dest: Path) -> None:
    """Copy the project at *root* to *dest*, leaving the contents of *weights_dir* out.

    The VCS folder is linked, not copied, so version plugins (hatch-vcs,
    setuptools-scm) still see the history.
    """
    weights_dir = weights_dir.resolve()

    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder).resolve() == weights_dir:
            return set(names)
        skipped = {n for n in names if n in _SKIP_DIRS or n.endswith(".egg-info")}
        return {n for n in skipped if (Path(folder) / n).is_dir()}

    shutil.copytree(root, dest, ignore=ignore, symlinks=True)
    for vcs in (".git", ".hg"):
        if (root / vcs).exists():
            os.symlink(root / vcs, dest / vcs)


def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def add_stored_files(wheel: Path, files: Iterable[tuple[Path, str]], out: Path) -> None:
    """Write *out*: *wheel*'s members plus *files* (path, archive name) stored uncompressed.

    A member of *wheel* with the same archive name as one of *files* is replaced.
    """
    files = list(files)
    names = {arc for _, arc in files}
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w") as dst:
        infos = src.infolist()
        record = next(i.filename for i in infos if i.filename.endswith(".dist-info/RECORD"))
        meta = next(i for i in infos if i.filename.endswith(".dist-info/METADATA"))
        rows = [
            row
            for row in csv.reader(io.StringIO(src.read(record).decode("utf-8")))
            if row and row[0] != record and row[0] not in names
        ]
        for info in infos:
            if info.filename == record or info.filename in names:
                continue
            with src.open(info) as fin, dst.open(info, "w") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
        for path, arcname in files:
            size = path.stat().st_size
            zinfo = zipfile.ZipInfo(arcname, meta.date_time)
            zinfo.compress_type = zipfile.ZIP_STORED
            zinfo.external_attr = (0o100644 & 0xFFFF) << 16
            zinfo.file_size = size  # lets zipfile choose ZIP64 up front for > 4 GiB files
            digest = hashlib.sha256()
            with path.open("rb") as fin, dst.open(zinfo, "w") as fout:
                while chunk := fin.read(CHUNK):
                    digest.update(chunk)
                    fout.write(chunk)
            rows.append([arcname, _record_hash(digest.digest()), str(size)])
        rows.append([record, "", ""])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        rinfo = zipfile.ZipInfo(record, meta.date_time)
        rinfo.compress_type = zipfile.ZIP_DEFLATED
        rinfo.external_attr = (0o100644 & 0xFFFF) << 16
        dst.writestr(rinfo, buf.getvalue())
