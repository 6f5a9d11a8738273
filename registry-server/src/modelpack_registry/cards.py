"""Model cards: each README rendered once, in a child process with a CPU budget, and stored.

A README is rendered by markdown-it-py (raw HTML disabled; its link validation drops
``javascript:``/``vbscript:``/``data:`` URLs). Rendering costs CPU that grows with the
input, and some inputs are pathological: ``"![" * 250_000`` (0.5 MB) takes about 8 s of
CPU, against 0.1 to 0.7 s for 300 KB of ordinary Markdown. Rendering on a page view
held the GIL for all of that, so 16 first views of such a page stalled ``/health`` for
minutes. So:

- **Never on a page view.** The HTML is made when the file is uploaded (after it is
  published, in the upload request), stored as ``meta/<file>.card.html`` beside the
  record, and served from there (once read, cached per snapshot). A view that finds no
  card (a file placed by hand, a card from an older renderer, a deleted one) answers a
  short note at once and asks the background thread of its process to render it.
- **In a child process, with a budget.** :class:`Renderer` runs
  ``python -m modelpack_registry.card_render``, which renders each text under a CPU-time
  timer (``ITIMER_PROF``: :func:`budget`, 1 s plus 3 s per MiB, so at most 4 s for the
  largest README :mod:`.limits` accepts), at a lower priority (``nice`` 10), with 512 MiB
  of memory, two at a time per server process. A text over budget is stored as escaped
  plain text with a note, so it is never tried again; request threads never render.
  Starting that child (Python, then markdown-it) took about 0.1 s of every upload's
  answer, so an upload that passed its early checks has it started while its body
  arrives (:meth:`Renderer.ahead`, at most two waiting per server process), and the
  child imports nothing of the registry but that module.
- **Once per file.** A render holds a per-file lock of its process and checks again for
  a card first, so a view and the upload do not render the same file twice. Two server
  processes may both render it (no lock on a bucket): the cards are the same, and
  ``meta/<file>.card.html`` is simply written twice. A card starts with a header naming the METADATA sha256 and
  :data:`CARD_VERSION`; one that does not match its record is treated as missing.
  ``reindex`` re-renders every card (:func:`store_cards`).
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from email.parser import BytesParser

from modelpack_registry.card_render import CPU_BUDGET, CPU_PER_MIB, MEMORY_CAP, budget
from modelpack_registry.errors import StorageError
from modelpack_registry.storage import DataDir, Record
from modelpack_registry.storage.base import keys

__all__ = [
    "CARD_VERSION",
    "CPU_BUDGET",
    "CPU_PER_MIB",
    "Renderer",
    "budget",
    "card_for_view",
    "card_html",
    "read_card",
    "render_and_store",
    "split_description",
    "store_cards",
]

log = logging.getLogger(__name__)

CARD_VERSION = "1"
_SLOTS = threading.BoundedSemaphore(2)  # children rendering at once, per server process
_AHEAD = threading.BoundedSemaphore(2)  # children started ahead of their upload's render
_WALL_LIMIT = 60.0  # seconds before a child that stopped answering is killed
_HEADER = "<!-- modelpack-card v{version} metadata-sha256={sha} -->\n"
NO_CARD = '<p class="muted">This model has no model card (README).</p>'
PENDING = '<p class="muted">The model card is being prepared; reload the page in a moment.</p>'


def split_description(metadata: bytes) -> tuple[str, str]:
    """The README of a METADATA file (its body, else ``Description``) and its content type."""
    msg = BytesParser().parsebytes(metadata, headersonly=True)
    normalized = metadata.replace(b"\r\n", b"\n")
    body = normalized.split(b"\n\n", 1)[1] if b"\n\n" in normalized else b""
    text = body.decode("utf-8", "replace")
    if not text.strip():
        text = str(msg.get("Description") or "")
    ctype = str(msg.get("Description-Content-Type") or "text/markdown")
    return text, ctype.split(";")[0].strip().lower()


def _plain(text: str, note: str = "") -> str:
    return (f'<p class="muted">{note}</p>' if note else "") + f"<pre>{html.escape(text)}</pre>"


class Renderer:
    """A child process that renders Markdown, each text within its :func:`budget`.

    Started on first use; a child that dies or stops answering is replaced on the next
    call. Not thread-safe: callers serialise (:func:`render_and_store` gives each
    upload its own).
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._ahead = False  # holds one of the _AHEAD slots until closed

    @classmethod
    def ahead(cls) -> Renderer | None:
        """A renderer whose child starts now, to be ready when its text comes (an
        upload's card, once the upload is published); :meth:`close` it in any case.
        None when two such children are already waiting in this process: the render
        then starts its own child when it needs it."""
        if not _AHEAD.acquire(blocking=False):
            return None
        renderer = cls()
        renderer._ahead = True
        try:
            renderer._start()
        except OSError as exc:  # out of processes or memory: the render tries again
            log.warning("cannot start the card renderer: %s", exc)
            renderer.close()
            return None
        return renderer

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "modelpack_registry.card_render"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
        return self._proc

    def render(self, text: str) -> str | None:
        """The HTML of ``text``; None if it went over budget or the child failed."""
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        data = text.encode("utf-8", "replace")
        watchdog = threading.Timer(_WALL_LIMIT, proc.kill)  # a child that hangs in C code
        watchdog.daemon = True
        with _SLOTS:
            return self._exchange(proc, data, watchdog)

    def _exchange(self, proc: subprocess.Popen[bytes], data: bytes,
                  watchdog: threading.Timer) -> str | None:  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        watchdog.start()
        try:
            proc.stdin.write(len(data).to_bytes(8, "big") + data)
            proc.stdin.flush()
            head = proc.stdout.read(9)
            if len(head) != 9:
                raise OSError("the card renderer exited")
            body = proc.stdout.read(int.from_bytes(head[1:], "big"))
        except OSError as exc:
            log.warning("card renderer failed: %s", exc)
            self.close()
            return None
        finally:
            watchdog.cancel()
        return body.decode("utf-8", "replace") if head[0] == 0 else None

    def close(self) -> None:
        """Stop the child (idempotent)."""
        if self._ahead:
            self._ahead = False
            _AHEAD.release()
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def card_html(metadata: bytes, renderer: Renderer) -> str:
    """The card of a wheel's METADATA (rendered, plain or a note; never raises)."""
    text, ctype = split_description(metadata)
    if not text.strip():
        return NO_CARD
    if ctype not in ("", "text/markdown"):
        return _plain(text)
    rendered = renderer.render(text)
    if rendered is None:
        return _plain(
            text,
            "This model card could not be rendered within its budget "
            f"({budget(len(text.encode())):.1f} s of CPU, {MEMORY_CAP >> 20} MiB of memory), "
            "so it is shown as plain text.",
        )
    return rendered


def read_card(data: DataDir, record: Record) -> str | None:
    """The stored card of ``record``; None if missing or made for other METADATA."""
    header = _HEADER.format(version=CARD_VERSION, sha=record.core_metadata_sha256)
    try:
        doc = data.store.read_doc(keys.card(record.filename))
        if doc is None:
            return None
        text = doc[0].decode("utf-8")
    except (StorageError, OSError, UnicodeDecodeError):
        return None
    first, newline, rest = text.partition("\n")
    return rest if newline and first + newline == header else None


_claims: dict[str, threading.Lock] = {}
_claims_lock = threading.Lock()


@contextlib.contextmanager
def _claim(filename: str, wait: bool) -> Iterator[bool]:
    """Hold this process's lock on ``filename``'s card; False if busy and not ``wait``."""
    with _claims_lock:
        lock = _claims.setdefault(filename, threading.Lock())
    if not lock.acquire(blocking=wait):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
        with _claims_lock:
            _claims.pop(filename, None)


def _store(data: DataDir, record: Record, metadata: bytes, renderer: Renderer) -> None:
    header = _HEADER.format(version=CARD_VERSION, sha=record.core_metadata_sha256)
    card = card_html(metadata, renderer)
    data.store.write_doc(keys.card(record.filename), (header + card).encode())


def render_and_store(data: DataDir, record: Record, metadata: bytes | None,
                     renderer: Renderer | None = None, wait: bool = True) -> None:  # fmt: skip
    """Render and store the card of ``record`` unless it is there already.

    ``wait``: wait for another process rendering the same file (else return at once).
    Never raises: a card that cannot be stored is rendered again on a later view.
    """
    if metadata is None or record.core_metadata_sha256 is None:
        return
    own = renderer is None
    renderer = renderer or Renderer()
    try:
        with _claim(record.filename, wait) as claimed:
            if claimed and read_card(data, record) is None:
                _store(data, record, metadata, renderer)
    except (StorageError, OSError) as exc:
        log.warning("cannot store the model card of %s: %s", record.filename, exc)
    except Exception:  # the file is published already: its upload must not fail now
        log.exception("cannot render the model card of %s", record.filename)
    finally:
        if own:
            renderer.close()


def store_cards(data: DataDir, items: Iterable[tuple[Record, bytes | None]]) -> None:
    """Re-render the card of every ``(record, metadata)`` (``reindex``), in one child."""
    renderer = Renderer()
    try:
        for record, metadata in items:
            data.store.delete_doc(keys.card(record.filename))
            render_and_store(data, record, metadata, renderer)
    finally:
        renderer.close()


class _Background:
    """One thread per process rendering the cards that views found missing."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[DataDir, Record]] = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, data: DataDir, record: Record) -> None:
        with self._lock:
            if record.filename in self._pending:
                return
            self._pending.add(record.filename)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cards", daemon=True)
                self._thread.start()
        self._queue.put((data, record))

    def _run(self) -> None:
        renderer = Renderer()
        while True:
            data, record = self._queue.get()
            try:
                metadata = data.load_metadata(record.filename)
                if metadata is not None:
                    render_and_store(data, record, metadata, renderer, wait=False)
            except (StorageError, OSError):
                pass  # the file was removed, or meta/ is unreadable: a later view retries
            finally:
                with self._lock:
                    self._pending.discard(record.filename)
                if self._queue.empty():
                    renderer.close()  # no idle child per server process; restarted on demand


_background = _Background()


def card_for_view(data: DataDir, record: Record) -> tuple[str, bool]:
    """``(html, final)`` for a model page: the stored card, or a note and a background
    render when there is none yet (``final`` False: do not cache it)."""
    if record.core_metadata_sha256 is None:
        return NO_CARD, True
    card = read_card(data, record)
    if card is not None:
        return card, True
    _background.submit(data, record)
    return PENDING, False
