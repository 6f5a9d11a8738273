"""twine, made to move a multi-GB wheel at disk speed without changing what it sends.

``modelpack publish`` uploads with twine (the contract), and twine is built for small
packages. Two of its costs grow with the wheel, measured on a 1 GiB one:

- **Hashing before sending** (:class:`HashManager`): sha256 and blake2b, one after the
  other, in 8 KiB reads: 1.5 s. :func:`fast_hashes` has it read 1 MiB blocks and feed
  blake2b on a second thread while sha256 runs on the first (``hashlib`` releases the
  GIL on large blocks): about the time of the slower of the two, 0.85 s. twine gets the
  same digests, so the form it sends is unchanged, and ``publish`` takes its sha256 from
  there instead of reading the file a third time.
- **Sending** (:func:`big_block_settings`): urllib3 reads a request body 16 KiB at a time,
  and each read goes through requests-toolbelt's multipart encoder, which works out the
  total length again (three ``fstat`` calls): 65,000 reads and about 1.5 s of Python. In
  1 MiB blocks it is 1,000 reads.

twine also hides the registry's answer to an upload. The same ``Settings`` subclass hangs a
requests response hook on twine's session, so that :func:`upload_warnings` can hand
``publish`` any ``X-Modelpack-Warning`` header the registry sends (for instance: the name
also exists on the upstream index).

Both reach into twine: a ``Settings`` subclass (public) and, for the hashes, twine's
``HashManager`` swapped for the duration of one upload. When a twine release changes
what they rely on, each falls back to twine's own behaviour, which is slower, never
wrong: the test suite runs ``publish`` against a real registry and compares bytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import queue
import threading
from collections.abc import Iterator
from typing import Any, ClassVar, cast

__all__ = [
    "HASH_BLOCK",
    "UPLOAD_BLOCK",
    "WARNING_HEADER",
    "big_block_settings",
    "fast_hashes",
    "upload_warnings",
]

UPLOAD_BLOCK = 1 << 20
HASH_BLOCK = 1 << 20
_QUEUE = 8  # blocks waiting for the second hashing thread (8 MiB at most)
_patch_lock = threading.Lock()
WARNING_HEADER = "X-Modelpack-Warning"
_warnings: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "modelpack_upload_warnings", default=None
)


def _record_warning(resp: Any, *args: Any, **kwargs: Any) -> None:
    """requests response hook: keep the registry's warning for :func:`upload_warnings`."""
    sink = _warnings.get()
    value = resp.headers.get(WARNING_HEADER)
    if sink is not None and value and value not in sink:
        sink.append(value)


@contextlib.contextmanager
def upload_warnings() -> Iterator[list[str]]:
    """Within, collect the ``X-Modelpack-Warning`` headers of twine's responses."""
    sink: list[str] = []
    token = _warnings.set(sink)
    try:
        yield sink
    finally:
        _warnings.reset(token)


@functools.cache
def big_block_settings() -> Any:
    """twine's ``Settings``, making repositories that send the body in 1 MiB blocks."""
    from requests.adapters import HTTPAdapter
    from twine.settings import Settings

    class BigBlockAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, blocksize=UPLOAD_BLOCK, **kwargs)

    class BigBlockSettings(Settings):
        def create_repository(self) -> Any:
            repo = super().create_repository()
            retries = cast(HTTPAdapter, repo.session.get_adapter("https://")).max_retries
            for scheme in ("http://", "https://"):
                repo.session.mount(scheme, BigBlockAdapter(max_retries=retries))
            repo.session.hooks["response"].append(_record_warning)
            return repo

    return BigBlockSettings


@functools.cache
def _fast_hash_manager() -> Any:
    """A subclass of twine's ``HashManager`` that hashes in big blocks on two threads,
    or None when this twine's ``HashManager`` is not the one it was written for."""
    try:
        from twine.package import HashManager
    except ImportError:
        return None
    probe = HashManager.__new__(HashManager)
    try:
        HashManager.__init__(probe, "")  # makes the hashers; reads nothing
    except (TypeError, ValueError):
        return None
    if not isinstance(getattr(probe, "_sha2_hasher", None), type(hashlib.sha256())):
        return None

    class FastHashManager(HashManager):
        seen: ClassVar[dict[str, str]] = {}  # filename -> sha256, for publish's own check

        def hash(self) -> None:
            first = self._sha2_hasher
            others = [h for h in (getattr(self, "_md5_hasher", None), self._blake_hasher) if h]
            blocks: queue.Queue[bytes | None] = queue.Queue(_QUEUE)

            def feed() -> None:
                while (block := blocks.get()) is not None:
                    for hasher in others:
                        hasher.update(block)

            helper = threading.Thread(target=feed, name="twine-hash", daemon=True)
            helper.start()
            try:
                with open(self.filename, "rb") as f:
                    while block := f.read(HASH_BLOCK):
                        blocks.put(block)
                        first.update(block)
            finally:
                blocks.put(None)
                helper.join()
            FastHashManager.seen[str(self.filename)] = first.hexdigest()

    return FastHashManager


@contextlib.contextmanager
def fast_hashes() -> Iterator[dict[str, str]]:
    """Within, twine hashes files with the faster manager (when it can be used).

    Yields a dict that maps each file twine hashed (by the path given to twine) to its
    sha256; it stays empty when twine's own manager is used.
    """
    fast = _fast_hash_manager()
    if fast is None:
        yield {}
        return
    import twine.package

    with _patch_lock:
        original = twine.package.HashManager
        setattr(twine.package, "HashManager", fast)  # noqa: B010 (mypy: a class attribute)
        fast.seen = {}
        try:
            yield fast.seen
        finally:
            setattr(twine.package, "HashManager", original)  # noqa: B010
