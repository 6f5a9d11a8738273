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
import json
import os
import queue
import shutil
import threading
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from modelpack.errors import BuildError

__all__ = ["CHUNK", "MANIFEST_NAME", "add_stored_files", "stage_project"]

CHUNK = 4 << 20
MANIFEST_NAME = "modelpack.json"
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


def _copy_hashing(fin: BinaryIO, fout: IO[bytes]) -> Any:
    """Copy *fin* to *fout*; return the sha256 of the bytes, hashed in a second thread.

    hashlib and zlib release the GIL on large buffers, so the sha256 (about 2 GB/s)
    runs beside the read, the zip's CRC-32 and the write instead of after them. The
    queue holds a few blocks, so memory stays flat whatever the file's size.
    """
    digest = hashlib.sha256()
    blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)

    def hash_blocks() -> None:
        while (block := blocks.get()) is not None:
            digest.update(block)

    worker = threading.Thread(target=hash_blocks, name="weights-sha256", daemon=True)
    worker.start()
    try:
        while chunk := fin.read(CHUNK):
            blocks.put(chunk)
            fout.write(chunk)
    finally:
        blocks.put(None)
        worker.join()
    return digest


def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _with_keywords(metadata: bytes, keywords: Sequence[str]) -> bytes:
    """Core metadata with *keywords* merged into its ``Keywords`` field."""
    text = metadata.decode("utf-8")
    head, sep, body = text.partition("\n\n")
    lines = head.split("\n")
    existing: list[str] = []
    for i, line in enumerate(lines):
        if line.lower().startswith("keywords:"):
            existing = [k.strip() for k in line.split(":", 1)[1].split(",") if k.strip()]
            del lines[i]
            break
    merged = list(dict.fromkeys([*existing, *keywords]))
    lines.append(f"Keywords: {','.join(merged)}")
    return ("\n".join(lines) + sep + body).encode("utf-8")


def _record_row(arcname: str, data: bytes) -> list[str]:
    return [arcname, _record_hash(hashlib.sha256(data).digest()), str(len(data))]


def add_stored_files(
    wheel: Path,
    files: Iterable[tuple[Path, str]],
    out: Path,
    *,
    manifest: dict[str, Any] | None = None,
    keywords: Sequence[str] = (),
) -> None:
    """Write *out*: *wheel*'s members plus *files* (path, archive name) stored uncompressed.

    A member of *wheel* with the same archive name as one of *files* is replaced. With
    *manifest*, ``<dist-info>/modelpack.json`` holds it plus every weight file's size and
    sha256; *keywords* are merged into the core metadata's ``Keywords``.

    :raises BuildError: a file changed while it was being copied.
    """
    files = list(files)
    names = {arc for _, arc in files}
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w") as dst:
        infos = src.infolist()
        record = next(i.filename for i in infos if i.filename.endswith(".dist-info/RECORD"))
        meta = next(i for i in infos if i.filename.endswith(".dist-info/METADATA"))
        dist_info = record.rsplit("/", 1)[0]
        replaced = {record, meta.filename, f"{dist_info}/{MANIFEST_NAME}"} | names
        rows = [
            row
            for row in csv.reader(io.StringIO(src.read(record).decode("utf-8")))
            if row and row[0] not in replaced
        ]
        for info in infos:
            if info.filename in replaced:
                continue
            with src.open(info) as fin, dst.open(info, "w") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
        metadata = src.read(meta)
        if keywords:
            metadata = _with_keywords(metadata, keywords)
        dst.writestr(meta, metadata)
        rows.append(_record_row(meta.filename, metadata))
        weights = []
        for path, arcname in files:
            before = path.stat()
            zinfo = _zipinfo(arcname, meta.date_time, zipfile.ZIP_STORED)
            zinfo.file_size = before.st_size  # lets zipfile choose ZIP64 for > 4 GiB files
            with path.open("rb", buffering=0) as fin, dst.open(zinfo, "w") as fout:
                digest = _copy_hashing(fin, fout)
            if _identity(path.stat()) != _identity(before):
                raise BuildError(
                    f"{path} changed while it was being built into the wheel; build again"
                )
            rows.append([arcname, _record_hash(digest.digest()), str(before.st_size)])
            weights.append({"path": arcname, "size": before.st_size, "sha256": digest.hexdigest()})
        if manifest is not None:
            data = (
                json.dumps({**manifest, "weights": weights}, indent=2, sort_keys=True) + "\n"
            ).encode()
            name = f"{dist_info}/{MANIFEST_NAME}"
            dst.writestr(_zipinfo(name, meta.date_time, zipfile.ZIP_DEFLATED), data)
            rows.append(_record_row(name, data))
        rows.append([record, "", ""])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        dst.writestr(_zipinfo(record, meta.date_time, zipfile.ZIP_DEFLATED), buf.getvalue())


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What changes whenever a file's content can have changed (ctime cannot be set back)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _zipinfo(
    name: str, date_time: tuple[int, int, int, int, int, int], compress: int
) -> zipfile.ZipInfo:
    zinfo = zipfile.ZipInfo(name, date_time)
    zinfo.compress_type = compress
    zinfo.external_attr = (0o100644 & 0xFFFF) << 16
    return zinfo
