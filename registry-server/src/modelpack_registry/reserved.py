"""Reserved names (``state/reserved/<name>.json``) and which names are private.

::

    state/reserved/<canonical-name>.json   {"by": "cli:alice", "at": "2024-05-01T12:00:00Z"}

A *private* name is one this registry answers for alone: a name with a distribution in
``packages/``, an owners file (``state/owners/``) or a reservation. With ``serve
--upstream`` the upstream index is never asked about a private name, for any version,
so a public package of the same name (an impostor, or an honest clash) can never be
installed through the registry. ``modelpack-registry reserve NAME`` claims a name before
its first upload; ``--release`` gives it back (it is private again as soon as it has a
file or an owner). Like every ``state/`` file a reservation is written under
``DATA/.lock`` and bumps ``DATA/generation``, so every server process sees it at its next
request.
"""

from __future__ import annotations

import contextlib
import json
import os

from modelpack_registry.index import Snapshot
from modelpack_registry.maintenance import utc_now
from modelpack_registry.storage import DataDir

__all__ = ["is_private", "private_names", "release", "reserve", "reserved_names"]


def _folder(data: DataDir) -> os.PathLike[str]:
    return data.state / "reserved"


def _names(folder: os.PathLike[str]) -> set[str]:
    try:
        entries = os.listdir(folder)
    except OSError:
        return set()
    return {e[: -len(".json")] for e in entries if e.endswith(".json") and not e.startswith(".")}


def reserved_names(data: DataDir) -> list[str]:
    """Every reserved name, sorted."""
    return sorted(_names(_folder(data)))


def reserve(data: DataDir, name: str, by: str | None) -> bool:
    """Reserve canonical ``name``; False if it already was (nothing changes then)."""
    folder = data.state / "reserved"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    with data.locked():
        if path.exists():
            return False
        body = json.dumps({"by": by, "at": utc_now()}, indent=1).encode() + b"\n"
        data.atomic_write(path, body)
        data.bump_generation()
    return True


def release(data: DataDir, name: str) -> bool:
    """Remove the reservation of ``name``; False if there was none."""
    path = data.state / "reserved" / f"{name}.json"
    with data.locked():
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        data.bump_generation()
    return True


def private_names(data: DataDir, snap: Snapshot) -> frozenset[str]:
    """Names with a file, an owners file or a reservation, as of ``snap``.

    Computed once per snapshot: every change to owners or reservations bumps the
    generation, which makes a new snapshot.
    """

    def make() -> frozenset[str]:
        return frozenset(snap.projects) | _names(data.owners) | _names(_folder(data))

    names = snap.cached(("private-names",), make)
    assert isinstance(names, frozenset)
    return names


def is_private(data: DataDir, snap: Snapshot, name: str) -> bool:
    """True if the registry alone answers for canonical ``name``."""
    if name in snap.projects or name in private_names(data, snap):
        return True
    # A change made in the last 0.25 s (before the next generation check) still counts.
    filename = f"{name}.json"
    with contextlib.suppress(OSError):
        return os.path.exists(os.path.join(data.owners, filename)) or os.path.exists(
            os.path.join(data.state, "reserved", filename)
        )
    return True
