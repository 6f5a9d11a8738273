"""twine, made to move a multi-GB wheel at disk speed without changing what it sends.

``modelpack publish`` uploads with twine (the contract), and twine is built for small
packages. Two of its costs grow with the wheel, measured on a 1 GiB one:

- **Hashing before sending** (:class:`HashManager`): sha256 and blake2b, one after the
  other, in 8 KiB reads: 1.5 s. For a wheel ``modelpack build`` made, the digests it
  recorded while writing it (:mod:`modelpack.wheel_digests`) are handed to twine through
  :func:`fast_hashes` and the file is not read at all. Otherwise :func:`fast_hashes` has
  twine read 1 MiB blocks and feed blake2b on a second thread while sha256 runs on the
  first (``hashlib`` releases the GIL on large blocks): about the time of the slower of
  the two, 0.85 s. twine gets the same digests either way, so the form it sends is
  unchanged, and ``publish`` takes its sha256 from there instead of reading the file
  again.
- **Sending** (:func:`big_block_settings`): urllib3 reads a request body 16 KiB at a time,
  and each read goes through requests-toolbelt's multipart encoder, which works out the
  total length again (three ``fstat`` calls): 65,000 reads and about 1.5 s of Python. In
  1 MiB blocks it is 1,000 reads. Even so the encoder copies every block of the wheel
  twice through its ``BytesIO`` buffer (about 0.25 s per GiB): :class:`DirectFileBody`
  takes the form's fields and the file part's headers from the encoder, then reads the
  wheel's bytes from the file itself, then the closing boundary from the encoder again;
  the bytes on the wire are the encoder's, in the same order.

twine also hides the registry's answer to an upload. The same ``Settings`` subclass hangs a
requests response hook on twine's session, so that :func:`upload_warnings` can hand
``publish`` any ``X-Modelpack-Warning`` header the registry sends (for instance: the name
also exists on the upstream index).

They reach into twine and its libraries in three places: a ``Settings`` subclass (public)
whose requests adapter sets the block size and wraps the body, twine's ``HashManager``
swapped for the duration of one upload, and requests-toolbelt's encoder (its ``parts``,
``boundary`` and the file part's ``fd``) read by :class:`DirectFileBody`. When a release
changes what they rely on, each falls back to twine's own behaviour, which is slower,
never wrong: the test suite runs ``publish`` against a real registry and compares bytes.

One cost is fixed, whatever the wheel: importing twine. :func:`twine_upload` imports it
without keyring, which twine would only ask for credentials ``publish`` always gives it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from modelpack.wheel_digests import WheelDigests

__all__ = [
    "HASH_BLOCK",
    "UPLOAD_BLOCK",
    "WARNING_HEADER",
    "DirectFileBody",
    "Hashed",
    "big_block_settings",
    "fast_hashes",
    "twine_upload",
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


def twine_upload() -> Callable[[Any, list[str]], None]:
    """twine's ``upload`` command, imported without the keyring when nothing has imported
    it yet.

    ``twine.auth`` imports keyring (about 30 ms with its backports) to ask it for the
    credentials twine was not given, and takes its absence as it does on a platform
    without it (``keyring = None``). ``publish`` always gives twine a user name and a
    password, so keyring is marked absent while twine is first imported; when a twine
    release no longer accepts that, twine is imported as it is.
    """
    if "twine.commands.upload" not in sys.modules and "keyring" not in sys.modules:
        sys.modules["keyring"] = None  # type: ignore[assignment]  # import: "not found"
        try:
            from twine.commands.upload import upload
        except ImportError:
            pass  # imported as it is, below
        else:
            return cast("Callable[[Any, list[str]], None]", upload)
        finally:
            if sys.modules.get("keyring", ...) is None:
                del sys.modules["keyring"]
    from twine.commands.upload import upload

    return cast("Callable[[Any, list[str]], None]", upload)


@functools.cache
def big_block_settings() -> Any:
    """twine's ``Settings``, making repositories that send the body in 1 MiB blocks."""
    from requests.adapters import HTTPAdapter
    from twine.settings import Settings

    class BigBlockAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, blocksize=UPLOAD_BLOCK, **kwargs)

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            request.body = DirectFileBody.wrap(request.body)
            return super().send(request, *args, **kwargs)

    class BigBlockSettings(Settings):
        def create_repository(self) -> Any:
            repo = super().create_repository()
            retries = cast(HTTPAdapter, repo.session.get_adapter("https://")).max_retries
            for scheme in ("http://", "https://"):
                repo.session.mount(scheme, BigBlockAdapter(max_retries=retries))
            repo.session.hooks["response"].append(_record_warning)
            return repo

    return BigBlockSettings


class DirectFileBody:
    """twine's multipart upload body, with the wheel's bytes read from the file directly.

    twine sends a ``MultipartEncoderMonitor`` over a ``MultipartEncoder`` whose last part
    is the open wheel. This body reads from the encoder everything before the wheel's
    first byte (the form fields and the file part's headers, and whatever first bytes of
    the file the encoder had loaded with them), then the rest of the wheel from the file
    in the blocks asked for, then the rest from the encoder, which then finds the file at
    its end and writes the closing boundary. So the bytes are the encoder's own,
    in its order, without its two copies of each block; the progress callback is told
    as the monitor would tell it.

    The file is read directly only when the head ends with the file part's headers and
    the encoder holds exactly the file's bytes it read; otherwise the encoder goes on
    alone (still the same bytes, only slower).
    """

    def __init__(self, monitor: Any, fp: Any, head: int, headers: bytes) -> None:
        self._monitor = monitor
        self._encoder = monitor.encoder
        self._fp = fp
        self._head = head
        self._headers = headers
        self._left = -1  # the file's bytes still to send; -1: the head is not read yet
        self.len = monitor.len
        self.direct = False
        """Whether the file's bytes are read from the file (known once the head is read)."""

    @classmethod
    def wrap(cls, body: Any) -> Any:
        """A :class:`DirectFileBody` for twine's *body*, or *body* when it is anything else."""
        encoder = getattr(body, "encoder", None)
        parts = getattr(encoder, "parts", None)
        if type(body).__name__ != "MultipartEncoderMonitor" or not parts:
            return body
        if getattr(body, "bytes_read", None) != 0 or getattr(encoder, "finished", True):
            return body
        fp = getattr(parts[-1].body, "fd", None)  # the file part: the last one, for twine
        headers = getattr(parts[-1], "headers", None)
        boundary = getattr(encoder, "boundary", None)
        if not isinstance(headers, bytes) or not isinstance(boundary, str) or fp is None:
            return body
        try:
            if fp.tell() != 0:
                return body
            size = os.fstat(fp.fileno()).st_size
        except (AttributeError, OSError, ValueError):
            return body
        closing = len(f"\r\n{boundary}--\r\n".encode())
        head = int(body.len) - size - closing
        if head < len(headers):
            return body
        return cls(body, fp, head, headers)

    def read(self, size: int = -1) -> bytes:
        if self._left < 0:  # the form fields and the file part's headers, from the encoder
            data: bytes = self._encoder.read(self._head)
            self._left = 0  # unless all is as expected: then the encoder goes on alone
            if data.endswith(self._headers):
                # The encoder may have loaded the file's first bytes into its buffer
                # already (its arithmetic rounds up): take those from it as well.
                taken = self._fp.tell()
                early: bytes = self._encoder.read(taken) if taken else b""
                data += early
                fd = self._fp.fileno()
                if (len(early) == taken == self._fp.tell()
                        and (not taken or os.pread(fd, taken, 0) == early)):  # fmt: skip
                    self._left = os.fstat(fd).st_size - taken
                    self.direct = True
        else:
            data = b""
            if self._left > 0:  # the wheel, from the file
                data = self._fp.read(self._left if size < 0 else min(size, self._left))
                self._left = self._left - len(data) if data else 0
            if not data:  # the file at its end: the encoder's closing boundary
                data = self._encoder.read(size)
        if data:
            self._monitor.bytes_read += len(data)
            self._monitor.callback(self._monitor)
        return data


@functools.cache
def _fast_hash_manager() -> Any:
    """A subclass of twine's ``HashManager`` that hashes in big blocks on two threads,
    or None when this twine's ``HashManager`` is not the one it was written for."""
    try:
        import twine.package
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

    hexdigest_type = getattr(twine.package, "Hexdigest", None)
    takes_known = getattr(hexdigest_type, "_fields", None) == ("sha2", "blake2")

    class FastHashManager(HashManager):
        seen: ClassVar[dict[str, str]] = {}  # filename -> sha256, for publish's own check
        known: ClassVar[Mapping[str, WheelDigests]] = {}  # filename -> digests from build
        recorded: ClassVar[set[str]] = set()  # the files whose digests came from `known`

        def hash(self) -> None:
            record = self.known.get(str(self.filename)) if takes_known else None
            if record is not None:  # no read at all: hexdigest() answers from the record
                self._record = record
                FastHashManager.seen[str(self.filename)] = record.sha256
                FastHashManager.recorded.add(str(self.filename))
                return
            self._read_and_hash()

        def hexdigest(self) -> Any:
            record = getattr(self, "_record", None)
            if record is None:
                return super().hexdigest()
            assert hexdigest_type is not None
            return hexdigest_type(sha2=record.sha256, blake2=record.blake2b_256)

        def _read_and_hash(self) -> None:
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


@dataclass
class Hashed:
    """What :func:`fast_hashes` saw: each file's sha256 as twine sent it (by the path
    given to twine), and which of them came from the digests ``build`` recorded."""

    sha256: dict[str, str] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)


@contextlib.contextmanager
def fast_hashes(known: Mapping[str, WheelDigests] | None = None) -> Iterator[Hashed]:
    """Within, twine hashes files with the faster manager (when it can be used), and
    takes the digests of the files in *known* (path given to twine -> digests) without
    reading them at all.

    This is the one seam: twine's ``package.HashManager``, which ``PackageFile`` builds
    for each file and asks for ``hash()`` then ``hexdigest()``. When a twine release
    changes it, twine's own manager runs (it reads and hashes every file, slower, never
    wrong) and the :class:`Hashed` yielded stays empty.
    """
    fast = _fast_hash_manager()
    if fast is None:
        yield Hashed()
        return
    import twine.package

    with _patch_lock:
        original = twine.package.HashManager
        setattr(twine.package, "HashManager", fast)  # noqa: B010 (mypy: a class attribute)
        fast.seen, fast.known, fast.recorded = {}, dict(known or {}), set()
        try:
            yield Hashed(fast.seen, fast.recorded)
        finally:
            setattr(twine.package, "HashManager", original)  # noqa: B010
