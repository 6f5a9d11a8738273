"""Reserved names (``state/reserved/<name>.json``) and which names are private.

::

    state/reserved/<canonical-name>.json   {"by": "cli:alice", "at": "2024-05-01T12:00:00Z"}

A *private* name is one this registry answers for alone: a name with a distribution in
``packages/``, an owners file (``state/owners/``) or a reservation. With ``serve
--upstream`` the upstream index is never asked about a private name, for any version,
so a public package of the same name (an impostor, or an honest clash) can never be
installed through the registry. ``modelpack-registry reserve NAME`` claims a name before
its first upload; ``--release`` gives it back (it is private again as soon as it has a
file or an owner). A reservation is created only if absent and removed only if unchanged
since it was read (conditional writes, no lock: the same on a bucket as on a folder), and
each change bumps the generation, so every server process sees it at its next request.
"""

from __future__ import annotations

import json

from modelpack_registry.errors import StorageError
from modelpack_registry.index import Snapshot
from modelpack_registry.storage import DataDir
from modelpack_registry.storage.base import NEW, AlreadyExists, Store, keys, update_doc
from modelpack_registry.verify.maintenance import utc_now

__all__ = ["is_private", "private_names", "release", "reserve", "reserved_names"]


def _names(store: Store, prefix: str) -> set[str]:
    """The ``<name>`` of each ``<prefix><name>.json`` (none if it cannot be listed)."""
    try:
        entries = [key[len(prefix) :] for key in store.iter_keys(prefix)]
    except OSError:
        return set()
    return {e[: -len(".json")] for e in entries if e.endswith(".json") and not e.startswith(".")}


def reserved_names(data: DataDir) -> list[str]:
    """Every reserved name, sorted."""
    return sorted(_names(data.store, keys.RESERVED))


def reserve(data: DataDir, name: str, by: str | None) -> bool:
    """Reserve canonical ``name``; False if it already was (nothing changes then)."""
    body = json.dumps({"by": by, "at": utc_now()}, indent=1).encode() + b"\n"
    try:
        data.store.write_doc(keys.reserved(name), body, expect=NEW)
    except AlreadyExists:
        return False
    data.bump_generation()
    return True


def release(data: DataDir, name: str) -> bool:
    """Remove the reservation of ``name``; False if there was none."""
    seen: list[bool] = []

    def mutate(raw: bytes | None) -> None:
        seen[:] = [raw is not None]  # the last run is the one that counted
        return None

    update_doc(data.store, keys.reserved(name), mutate)
    if not seen[0]:
        return False
    data.bump_generation()
    return True


def private_names(data: DataDir, snap: Snapshot) -> frozenset[str]:
    """Names with a file, an owners document or a reservation, as of ``snap``.

    Computed once per snapshot: every change to owners or reservations bumps the
    generation, which makes a new snapshot.
    """

    def make() -> frozenset[str]:
        return (
            frozenset(snap.projects)
            | _names(data.store, keys.OWNERS)
            | _names(data.store, keys.RESERVED)
        )

    names = snap.cached(("private-names",), make)
    assert isinstance(names, frozenset)
    return names


def is_private(data: DataDir, snap: Snapshot, name: str) -> bool:
    """True if the registry alone answers for canonical ``name``."""
    if name in snap.projects or name in private_names(data, snap):
        return True
    # A change made since the last generation check still counts; an error: fail closed.
    try:
        return (
            data.store.stat(keys.owners(name)) is not None
            or data.store.stat(keys.reserved(name)) is not None
        )
    except (OSError, StorageError):
        return True
