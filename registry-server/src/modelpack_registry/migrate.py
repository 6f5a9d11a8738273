"""``modelpack-registry migrate``: copy a registry's whole state from one store to another.

A store is a data folder or an ``s3://BUCKET/PREFIX`` (see :mod:`.storage`). What is copied:

- ``state/`` (owners, reserved names, API tokens, stages, yanks) first, so that a
  registry already serving the destination never sees a model without its owners;
  tokens stay private (folder: mode 0600); then ``claims/``;
- ``meta/`` (records, PEP 658 metadata, rendered cards), before the distributions, so
  that a listed file always has its record, as on a live registry;
- ``packages/``, streamed in blocks into :meth:`Store.new_upload` (flat memory whatever
  the size), hashed on the way and checked against its record before it is committed;
- ``generation``, set above both the source's and the destination's own, so replicas
  serving the destination reload.

Not copied: ``tmp/`` (uploads in flight) and the upstream mirror cache (``mirror/``: it
refills itself). Nothing is ever overwritten. Every destination object is first compared
with the source (a distribution by sha256, the rest byte for byte): the same bytes are
skipped, so a re-run resumes a cut-off migration and does nothing after a complete one;
other bytes are a conflict, and if there is any, nothing at all is written. After copying,
the destination is verified (every distribution's sha256 against its record, every record,
metadata and state document byte-identical to the source's, the counts).

``--sync-state`` is for the catch-up run of a live migration: documents changed at the
source since the first run (a moved stage, a token's last use) replace the destination's,
and state the source no longer has (a revoked token) is removed there, each write
conditional on the version planned with. Distributions are never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from modelpack_registry.errors import RegistryError, StorageError
from modelpack_registry.records import Record
from modelpack_registry.storage.base import NEW, AlreadyExists, Stale, Store, keys, update_doc
from modelpack_registry.storage.folder import FolderStore

__all__ = ["MigrateResult", "migrate"]

BLOCK = 1 << 20  # read size when streaming a distribution; the store buffers its parts
#: The state/ folders, in copy order (owners and reservations before anything they guard).
STATE = (keys.OWNERS, keys.RESERVED, keys.TOKENS, keys.STAGES, keys.YANKED)
#: Every folder of documents: the state, and the version claims (their ``sealed`` marks,
#: set by promotions, cannot be rebuilt from the distributions).
DOCS = (*STATE, keys.CLAIMS)
#: What a data folder holds besides DOCS, meta/ and packages/, and is not copied.
NOT_COPIED = {"tmp", "mirror", "generation", ".lock"}


@dataclass(frozen=True)
class Item:
    """One object to copy: a ``package`` (streamed), ``blob`` (small, write-once) or ``doc``."""

    key: str
    kind: str

    @property
    def group(self) -> str:
        """What the summary counts it as: packages, records, metadata, or a state folder."""
        if self.kind == "package":
            return "packages"
        if self.key.startswith(keys.META):
            return "records" if self.kind == "doc" else "metadata and cards"
        return self.key.rsplit("/", 1)[0]


@dataclass
class MigrateResult:
    """What a run did; :attr:`problems` non-empty means exit status 1."""

    copied: list[Item] = field(default_factory=list)
    present: list[Item] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # --sync-state
    removed: list[str] = field(default_factory=list)  # --sync-state
    bytes_copied: int = 0


def source_items(src: Store) -> list[Item]:
    """Every object of the source registry, in copy order (tmp/ and mirror/ left out)."""
    items = [Item(key, "doc") for prefix in DOCS for key in sorted(src.iter_keys(prefix))]
    for key in sorted(src.iter_keys(keys.META)):
        items.append(Item(key, "doc" if key.endswith(".json") else "blob"))
    items += [Item(key, "package") for key in sorted(src.iter_keys(keys.PACKAGES))]
    return items


def unknown_entries(src: Store) -> list[str]:
    """What a source folder holds that this version does not know, so does not copy."""
    if not isinstance(src, FolderStore):
        return []
    known = {prefix.rstrip("/") for prefix in (*DOCS, keys.META, keys.PACKAGES)} | NOT_COPIED
    found = []
    for folder in ("", "state/"):
        with contextlib.suppress(OSError):
            for name in os.listdir(src.root / folder if folder else src.root):
                entry = f"{folder}{name}"
                if entry not in known and not (folder == "" and name == "state"):
                    found.append(entry + ("/" if (src.root / entry).is_dir() else ""))
    return sorted(found)


def _record_sha256(store: Store, filename: str) -> str | None:
    found = store.read_doc(keys.record(filename))
    if found is None:
        return None
    try:
        return Record.from_json(found[0]).sha256
    except ValueError:
        return None


def _sha256(store: Store, key: str) -> str:
    digest = hashlib.sha256()
    with store.open(key) as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _small(store: Store, item: Item) -> bytes | None:
    if item.kind == "doc":
        found = store.read_doc(item.key)
        return None if found is None else found[0]
    return store.read_bytes(item.key) if store.stat(item.key) is not None else None


class _Migration:
    def __init__(self, src: Store, dst: Store, out: Callable[[str], None], sync: bool) -> None:
        self.src, self.dst, self.out, self.sync = src, dst, out, sync
        self.replace: list[tuple[Item, str]] = []  # documents to overwrite, at that version
        self.remove: list[tuple[str, str]] = []  # documents the source no longer has
        self.result = MigrateResult()
        self.digests: dict[str, str] = {}  # destination sha256 already computed
        self.failed: dict[str, str] = {}  # key: why it was not copied

    def expected_sha256(self, item: Item) -> str:
        """The source distribution's sha256: its record's, else hashed."""
        filename = item.key[len(keys.PACKAGES) :]
        return _record_sha256(self.src, filename) or _sha256(self.src, item.key)

    def same_at_destination(self, item: Item) -> bool | None:
        """None: absent at the destination; True: the same bytes; False: other bytes."""
        if item.kind == "package":
            there = self.dst.stat(item.key)
            if there is None:
                return None
            here = self.src.stat(item.key)
            if here is None or here.size != there.size:
                return False
            digest = self.digests[item.key] = _sha256(self.dst, item.key)
            return digest == self.expected_sha256(item)
        theirs = _small(self.dst, item)
        return None if theirs is None else theirs == _small(self.src, item)

    def plan(self, items: list[Item]) -> list[Item]:
        """Sort ``items`` into to-copy, already-there and conflicts; return the to-copy."""
        todo: list[Item] = []
        for item in items:
            same = self.same_at_destination(item)
            if same is None:
                todo.append(item)
            elif same:
                self.result.present.append(item)
            elif item.kind == "doc" and self.sync and (found := self.dst.read_doc(item.key)):
                self.replace.append((item, found[1]))
            else:
                self.result.conflicts.append(
                    f"{item.key}: the destination already has other bytes under this name"
                )
        if self.sync:
            ours = {item.key for item in items}
            for key in (k for prefix in DOCS for k in sorted(self.dst.iter_keys(prefix))):
                if key not in ours and (found := self.dst.read_doc(key)):
                    self.remove.append((key, found[1]))
        return todo

    def sync_docs(self) -> None:
        """--sync-state: replace the documents that differ, remove those the source lacks
        (each only if still at the version planned with: a live writer there is an error)."""
        try:
            for item, version in self.replace:
                content = _small(self.src, item)
                if content is not None:
                    private = item.key.startswith(keys.TOKENS)
                    self.dst.write_doc(item.key, content, version, private=private)
                    self.result.replaced.append(item.key)
                    self.out(f"replaced {item.key}")
            for key, version in self.remove:
                self.dst.delete_doc(key, version)
                self.result.removed.append(key)
                self.out(f"removed {key} (the source has none)")
        except Stale as exc:
            raise RegistryError(f"{exc} at the destination while migrating: is a registry "
                                "writing there? Stop it, and run migrate again") from None  # fmt: skip

    def copy(self, item: Item) -> None:
        try:
            if item.kind == "package":
                self.copy_package(item)
                if item.key in self.failed:
                    return
            elif item.kind == "blob":
                self.dst.put_new(item.key, self.src.read_bytes(item.key))
            else:
                content = _small(self.src, item)
                if content is None:
                    self.out(f"{item.key}: removed at the source meanwhile, not copied")
                    return
                private = item.key.startswith(keys.TOKENS)
                self.dst.write_doc(item.key, content, NEW, private=private)
        except AlreadyExists:  # written meanwhile by someone else
            if not self.same_at_destination(item):
                raise RegistryError(
                    f"{item.key} appeared at the destination with other bytes while "
                    "migrating; nothing was overwritten: find out who writes there"
                ) from None
            self.result.present.append(item)
            return
        self.result.copied.append(item)

    def copy_package(self, item: Item) -> None:
        started = time.monotonic()
        expected = self.expected_sha256(item)
        digest = hashlib.sha256()
        upload = self.dst.new_upload()
        try:
            with self.src.open(item.key) as f:
                while block := f.read(BLOCK):
                    digest.update(block)
                    upload.write(block)
            upload.finish()
            if digest.hexdigest() != expected:
                self.failed[item.key] = (
                    f"{item.key}: the source's bytes do not match its record's sha256, so it "
                    f"was not copied: run `modelpack-registry verify` on {self.src.url}"
                )
                return
            upload.commit(item.key)
        finally:
            upload.abort()
        self.result.bytes_copied += upload.size
        took = time.monotonic() - started
        self.out(f"copied {item.key} ({_size(upload.size)}, {took:.1f} s)")

    def bump_generation(self) -> str:
        """Set the destination's generation above the source's and its own."""
        src_gen = _generation(self.src.read_doc(keys.GENERATION))
        copied = bool(self.result.copied or self.result.replaced or self.result.removed)

        def above(current: bytes | None) -> bytes | None:
            own = _generation(None if current is None else (current, ""))
            if own > src_gen and not copied:
                return current  # a re-run with nothing new: leave it
            return f"{max(own, src_gen) + 1}\n".encode()

        written = update_doc(self.dst, keys.GENERATION, above)
        return (written or b"").decode().strip()

    def verify(self, items: list[Item]) -> list[str]:
        """Compare the destination with the source; return the differences."""
        problems = list(self.failed.values())
        if self.sync:
            known = {item.key for item in items}
            problems += [f"{key}: at the destination, not at the source" for prefix in DOCS
                         for key in self.dst.iter_keys(prefix) if key not in known]  # fmt: skip
        for item in items:
            if item.key in self.failed:
                continue
            if item.kind == "package":
                if self.dst.stat(item.key) is None:
                    problems.append(f"{item.key}: missing at the destination")
                    continue
                filename = item.key[len(keys.PACKAGES) :]
                want = _record_sha256(self.dst, filename) or self.expected_sha256(item)
                got = self.digests.get(item.key) or _sha256(self.dst, item.key)
                if got != want:
                    problems.append(f"{item.key}: sha256 {got} at the destination, "
                                    f"its record says {want}")  # fmt: skip
            else:
                ours, theirs = _small(self.src, item), _small(self.dst, item)
                if ours is None:
                    continue  # removed at the source meanwhile
                if theirs is None:
                    problems.append(f"{item.key}: missing at the destination")
                elif theirs != ours:
                    problems.append(f"{item.key}: differs from the source")
        return problems


def _generation(found: tuple[bytes, str] | None) -> int:
    try:
        return int(found[0].decode().strip()) if found else 0
    except ValueError:
        return 0


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _counts(items: list[Item]) -> Iterator[tuple[str, int]]:
    groups: dict[str, int] = {}
    for item in items:
        groups[item.group] = groups.get(item.group, 0) + 1
    yield from sorted(groups.items())


def _extra(dst: Store, items: list[Item]) -> int:
    """How many objects the destination has under the copied prefixes beyond the source's."""
    ours = {item.key for item in items}
    prefixes = (*DOCS, keys.META, keys.PACKAGES)
    return sum(1 for prefix in prefixes for key in dst.iter_keys(prefix) if key not in ours)


def _check_source(src: Store) -> None:
    if isinstance(src, FolderStore):
        if not (src.root / "packages").is_dir():
            raise RegistryError(f"{src.url} is not a registry data folder (no packages/ in it)")
    elif src.read_doc(keys.GENERATION) is None and next(src.iter_keys(keys.PACKAGES), None) is None:
        raise RegistryError(f"{src.url} holds no registry (no generation, no packages/)")


def _prepare(dst: Store) -> None:
    if isinstance(dst, FolderStore):
        try:
            for sub in ("packages", "meta", "tmp", "state"):
                (dst.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {dst.url}: {exc.strerror or exc}") from exc


def migrate(src: Store, dst: Store, *, dry_run: bool = False, sync_state: bool = False,
            out: Callable[[str], None] = print) -> MigrateResult:  # fmt: skip
    """Copy the registry in ``src`` to ``dst``, then verify it (see the module docstring).

    ``sync_state``: documents (``state/``, ``claims/``, records) that differ at the
    destination are replaced, and those of ``state/`` and ``claims/`` the source does
    not have are removed; distributions are still never overwritten.

    :raises RegistryError: a bad location, or a copy that cannot go on (storage errors).
    """
    if src.url == dst.url:
        raise RegistryError(f"--from and --to are the same place ({src.url})")
    _check_source(src)
    job = _Migration(src, dst, out, sync_state)
    for entry in unknown_entries(src):
        out(f"not copied (unknown to this version): {entry}")
    items = source_items(src)
    todo = job.plan(items)
    result = job.result
    if result.conflicts:
        result.problems = result.conflicts
        for line in result.conflicts:
            out(line)
        out(f"{len(result.conflicts)} conflict(s): nothing was written to {dst.url}; "
            "migrate never overwrites (migrate into an empty destination; for documents "
            "changed at the source since an earlier run, --sync-state)")  # fmt: skip
        return result
    if dry_run:
        for item in todo:
            out(f"would copy {item.key}")
        for line in [f"would replace {i.key}" for i, _ in job.replace] + [
                f"would remove {key}" for key, _ in job.remove]:  # fmt: skip
            out(line)
        out(f"dry run: {len(todo)} object(s) to copy, {len(result.present)} already at "
            f"{dst.url}; tmp/ and mirror/ are never copied")  # fmt: skip
        return result
    _prepare(dst)
    job.sync_docs()
    for item in todo:
        job.copy(item)
    generation = job.bump_generation()
    result.problems = job.verify(items)
    for line in result.problems:
        out(line)
    counts = ", ".join(f"{group} {n}" for group, n in _counts(items))
    synced = (
        f", {len(result.replaced)} replaced, {len(result.removed)} removed" if sync_state else ""
    )
    out(f"copied {len(result.copied)} object(s) ({_size(result.bytes_copied)} of "
        f"distributions){synced}, {len(result.present)} already there; generation {generation}")  # fmt: skip
    extra = _extra(dst, items)
    if extra:
        out(f"the destination also holds {extra} object(s) the source has not (left alone)")
    verdict = "MISMATCH" if result.problems else "verified"
    out(f"{verdict}: {src.url} -> {dst.url}: {counts or 'an empty registry'}")
    return result
