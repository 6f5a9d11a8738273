"""Judge every weight file of a project (or of a built wheel) and say what is wrong.

Shared by ``modelpack check`` / ``build`` (files on disk) and ``modelpack publish``
(the weights inside the wheel about to be uploaded), so publishing refuses exactly
what checking refuses.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modelpack.scan.files import FileScan, scan_stream
from modelpack.scan.policy import Policy, Verdict

__all__ = ["TRUSTED_KEY", "Finding", "closure", "dependency_modules", "judge_weights",
           "providers", "trusted_problems"]  # fmt: skip

TRUSTED_KEY = "trusted-pickles"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Finding:
    where: str
    message: str
    error: bool = True
    missing_dist: str | None = None


def closure(dists: Iterable[str]) -> set[str]:
    """*dists* (canonical names) plus everything they require, as installed here."""
    seen: set[str] = set()
    todo = list(dists)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            try:
                req = Requirement(r)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(str(canonicalize_name(req.name)))
    return seen


K = TypeVar("K")
V = TypeVar("V")


class Lazy(Mapping[K, V], Generic[K, V]):
    """A mapping made on first use. Most weights hold no pickle, so nothing is judged and
    the list of every installed distribution (:func:`providers`, about 0.8 s in a large
    environment, a third of a 1 GiB publish) is never needed."""

    def __init__(self, make: Callable[[], Mapping[K, V]]) -> None:
        self._make = make
        self._data: Mapping[K, V] | None = None

    def _get(self) -> Mapping[K, V]:
        if self._data is None:
            self._data = self._make()
        return self._data

    def __getitem__(self, key: K) -> V:
        return self._get()[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def providers() -> dict[str, list[str]]:
    """Installed top-level module -> canonical names of the distributions providing it
    (``top_level.txt``, or the files in ``RECORD`` where a distribution has none)."""
    return {
        m: sorted({canonicalize_name(d) for d in ds})
        for m, ds in metadata.packages_distributions().items()
    }


def dependency_modules(dists: set[str], provided: Mapping[str, list[str]]) -> dict[str, str]:
    """Top-level module -> distribution, for *dists* and what they require.

    ``scikit-learn`` -> ``sklearn`` comes from installed metadata; a distribution not
    installed here maps to its normalized name (``my-lib`` -> ``my_lib``).
    """
    every = closure(dists)
    out: dict[str, str] = {}
    for module, ds in provided.items():
        for d in ds:
            if d in every:
                out.setdefault(module, d)
    for d in every:
        if not any(d in ds for ds in provided.values()):
            out.setdefault(d.replace("-", "_"), d)
    return out


def trusted_problems(config: dict[str, Any]) -> list[str]:
    value = config.get(TRUSTED_KEY, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v) for k, v in value.items()
    ):
        return [f"must be a table of weight file paths (relative to the weights folder) to "
                f'their sha256, e.g. {TRUSTED_KEY} = {{ "legacy/model.pkl" = "<64 hex>" }}']  # fmt: skip
    return []


Opener = Any  # () -> context manager of a binary file object


def judge_weights(
    files: Iterable[tuple[str, str, Opener]], policy: Policy, trusted: dict[str, str]
) -> list[Finding]:
    """*files*: (label shown, path relative to the weights folder, opener) per file."""
    findings: list[Finding] = []
    listed = dict(trusted)
    for label, rel, opener in files:
        if rel in listed:
            want = listed.pop(rel)
            with opener() as f:
                got = _sha256(f)
            if got == want:
                findings.append(Finding(label, f"not scanned: listed in [tool.modelpack] "
                                        f"{TRUSTED_KEY} as reviewed by hand", error=False))  # fmt: skip
            else:
                findings.append(Finding(label, f"has changed since it was reviewed (sha256 "
                                        f"{got}, [tool.modelpack] {TRUSTED_KEY} says {want}); "
                                        "review it again and update the entry, or remove it"))  # fmt: skip
            continue
        with opener() as f:
            scan = scan_stream(f, Path(rel))
        findings += _file_findings(label, scan, policy)
    for rel in sorted(listed):
        findings.append(Finding(f"[tool.modelpack] {TRUSTED_KEY}", f"lists {rel}, which is not "
                                "a weight file; remove the entry"))  # fmt: skip
    return findings


def _file_findings(label: str, scan: FileScan, policy: Policy) -> Iterator[Finding]:
    seen: set[tuple[str, str]] = set()
    for error in scan.errors:
        yield Finding(label, f"cannot be read as a loader would read it: {error}; a file the "
                      "check cannot read is refused: re-save it, or if you have reviewed it, list "
                      f"it with its sha256 in [tool.modelpack] {TRUSTED_KEY}")  # fmt: skip
    for where, ref in scan.refs:
        at = f"{where}offset {ref.offset}"
        if ref.problem:
            name = "" if ref.module == "?" else f"{ref.module}.{ref.name} "
            key = (name, ref.problem)
            if key not in seen:
                seen.add(key)
                yield Finding(label, f"{name}{ref.problem} ({at}); rebuild the file without it")
            continue
        verdict: Verdict | None = policy.judge(ref.module, ref.name)
        if verdict is None or (verdict.name, verdict.reason) in seen:
            continue
        seen.add((verdict.name, verdict.reason))
        written = f"{ref.module}.{ref.name}"
        shown = verdict.name if verdict.name == written else f"{written} (as {verdict.name})"
        yield Finding(label, f"references {shown} ({at}), which {verdict.reason}; "
                      f"{verdict.fix}", missing_dist=verdict.missing_dist)  # fmt: skip


def _sha256(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def project_files(
    weights_dir: Path, root: Path, paths: list[Path]
) -> list[tuple[str, str, Opener]]:
    return [(str(p.relative_to(root)), p.relative_to(weights_dir).as_posix(),
             lambda p=p: p.open("rb")) for p in paths]  # fmt: skip


def wheel_files(
    zf: zipfile.ZipFile, names: Iterable[str], prefix: str
) -> list[tuple[str, str, Opener]]:
    """The weights of an open wheel; a stored member (modelpack stores weights) opens as
    a seekable window on the wheel file, so array payloads are skipped, not read."""

    def opener(n: str) -> AbstractContextManager[IO[bytes]]:
        info = zf.getinfo(n)
        if info.compress_type == zipfile.ZIP_STORED and zf.filename:
            with open(zf.filename, "rb") as f:
                f.seek(info.header_offset)
                head = f.read(30)
            if head[:4] == b"PK\x03\x04":
                name_len, extra_len = struct.unpack("<HH", head[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                return io.BufferedReader(_Window(zf.filename, start, info.file_size), 1 << 20)
        return zf.open(n)

    return [(n, n.removeprefix(prefix), lambda n=n: opener(n)) for n in names]


class _Window(io.RawIOBase):
    """Bytes *start* to *start + size* of the file at *path*, read-only and seekable."""

    def __init__(self, path: str, start: int, size: int) -> None:
        self._f = open(path, "rb")
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._f.close()
        super().close()
