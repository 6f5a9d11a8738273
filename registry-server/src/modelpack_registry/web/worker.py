"""A gunicorn worker whose event loop reads request heads, so that slow clients hold no thread.

gunicorn's gthread worker gives a connection to a thread once it is readable, and the
thread blocks in the parser until the head is in, with no deadline: 16 half request
lines stalled a registry with 16 threads (issue 13; docs/architecture.md has the
measurements). :class:`RegistryWorker` keeps gunicorn (arbiter, request parser,
``wsgi.create``, ``Response`` with ``sendfile``, access log, all used as gunicorn's sync
worker uses them) and replaces the worker loop:

- The main thread accepts connections and reads each request head, and a body of at
  most :data:`SMALL_BODY` bytes, without blocking. What has not arrived within
  ``--header-timeout`` seconds (of the connection, or of a kept-alive connection's next
  first byte) gets 408; a kept-alive connection closes after ``keepalive`` idle seconds.
- A complete request goes to a pool of ``--threads``; transfers (a body still to come,
  or a ``/packages/`` or ``/upstream/files/`` download) to a second pool as large, so
  slow uploads and slowly read downloads never take the threads that serve the index,
  pages, API and /health.
- A thread's socket times out after ``--body-timeout`` seconds without progress; uploads
  must also keep ``--min-upload-rate`` (:mod:`modelpack_registry.web.receive`).
- After a request with a body the connection closes (lingering if the body is unread:
  :mod:`modelpack_registry.web.linger`); after one without, it returns to the loop with any
  pipelined bytes.
- Past ``worker_connections`` (``--max-connections``), a new connection closes the one
  that has waited longest for its request; when file descriptors run out, accepting
  pauses for half a second.

Plain HTTP/1.x only: TLS is terminated in front (docs/deployment.md), no HTTP/2.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import queue
import re
import selectors
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from gunicorn.http import RequestParser, wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.base import Worker

from modelpack_registry.web.linger import linger, unread_body

__all__ = ["MAX_HEAD", "SMALL_BODY", "RegistryWorker", "Timeouts"]

MAX_HEAD = 32 * 1024
"""A request head longer than this is answered 431 (nginx's default limit is 32 KiB too)."""
SMALL_BODY = 16 * 1024
"""A body of known length up to this size is read by the loop before the request runs."""
_RECV = 64 * 1024
_TICK = 0.25  # how often deadlines are checked, seconds
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:[ \t]*(\d+)[ \t]*\r?(?=\n)", re.I)
_ANY_LENGTH = re.compile(rb"\n[ \t]*content-length", re.I)
# a file (ours, or a cached upstream one), under any path prefix
_DOWNLOAD = re.compile(rb"(?:GET|HEAD) [^ ]*/(?:packages|upstream/files)/[^/ ?]")
_CHUNKED_OR_EXPECT = re.compile(rb"\n[ \t]*(transfer-encoding|expect)", re.I)
_QUIET_ERRORS = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, None)  # None: a timeout
_NO_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class Timeouts:
    """``--header-timeout`` and ``--body-timeout``, in seconds."""

    header: float = 20.0
    body: float = 60.0


class _Conn:
    """A client connection: its socket, and what has arrived of the next request."""

    __slots__ = ("client", "deadline", "head", "idle", "scanned", "server", "sock")

    def __init__(self, sock: socket.socket, client: Any, server: Any, deadline: float) -> None:
        self.sock = sock
        self.client = client
        self.server = server
        self.deadline = deadline
        self.head = bytearray()
        self.scanned = 0  # bytes of head already searched for its end
        self.idle = False  # kept alive, nothing of a next request yet


def _head_status(head: bytearray, scanned: int) -> tuple[int, bool]:
    """(bytes the loop must hold before the request can run, or -1; is it a transfer).

    A transfer is a request whose body is still to come, or a file download: either can
    take as long as the client makes it take.
    """
    match = _HEAD_END.search(head, max(0, scanned - 3))
    if match is None:
        return -1, False
    end = match.end()
    lines = bytes(head[:end])
    if _CHUNKED_OR_EXPECT.search(lines):  # chunked, or a client waiting for 100-continue
        return end, True
    mentions = len(_ANY_LENGTH.findall(lines))
    if mentions == 0:  # no body (RFC 9112 6.3)
        return end, _DOWNLOAD.match(lines) is not None
    lengths = _CONTENT_LENGTH.findall(lines)
    if len(lengths) != 1 or mentions != 1:
        return end, True  # odd: the parser decides, in a thread that may wait for a body
    length = int(lengths[0])
    return (end + length, False) if length <= SMALL_BODY else (end, True)


class RegistryWorker(Worker):  # type: ignore[misc]
    """See the module docstring. Configured by gunicorn's settings and ``app.timeouts``."""

    alive: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts: Timeouts = getattr(self.app, "timeouts", None) or Timeouts()
        self.waiting: dict[int, _Conn] = {}  # fd -> connection the loop is reading
        self.nr_conns = 0
        self.busy = 0
        self.done: queue.SimpleQueue[tuple[_Conn, bool]] = queue.SimpleQueue()
        self.accepting = False
        self.paused_until = 0.0
        self.next_tick = 0.0
        self.expired = 0
        self.evicted = 0
        self.reported = 0.0

    def init_process(self) -> None:
        threads = max(1, self.cfg.threads)
        self.reads = ThreadPoolExecutor(threads, thread_name_prefix="registry-read")
        self.transfers = ThreadPoolExecutor(threads, thread_name_prefix="registry-transfer")
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        super().init_process()  # ends by calling run()

    def handle_quit(self, sig: int, frame: Any) -> None:
        for pool in (self.reads, self.transfers):
            pool.shutdown(wait=False, cancel_futures=True)
        super().handle_quit(sig, frame)

    # -- the loop (main thread) -------------------------------------------------------

    def run(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._drain)
        pipe = getattr(self, "PIPE", None)  # base.Worker's signal wake-up pipe
        if pipe:
            self.selector.register(pipe[0], selectors.EVENT_READ, self._drain)
        while self.alive:
            self.notify()
            now = time.monotonic()
            room = self.nr_conns < self.cfg.worker_connections or bool(self.waiting)
            self._accept_while(room and now >= self.paused_until)  # room: see _accept
            self._dispatch_events(_TICK)
            self._finish_done()
            self._expire()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
        self._shutdown()

    def _dispatch_events(self, timeout: float) -> None:
        try:
            events = self.selector.select(timeout)
        except InterruptedError:
            return
        for key, _ in events:
            key.data(key.fileobj)

    def _drain(self, fd: Any) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(fd, 4096):
                pass

    def _accept_while(self, enabled: bool) -> None:
        if enabled == self.accepting:
            return
        for listener in self.sockets:
            if enabled:
                self.selector.register(listener, selectors.EVENT_READ, self._accept)
            else:
                self.selector.unregister(listener)
        self.accepting = enabled

    def _accept(self, listener: Any) -> None:
        for _ in range(64):  # a burst, then back to the other connections
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                if exc.errno in _NO_FDS:
                    self._out_of_fds(exc)
                    return
                raise
            if self.nr_conns >= self.cfg.worker_connections and self.waiting:
                self.evicted += 1
                self._drop(next(iter(self.waiting.values())))  # it waited longest
            sock.setblocking(False)
            self.nr_conns += 1
            deadline = time.monotonic() + self.timeouts.header
            self._wait(_Conn(sock, client, listener.getsockname(), deadline))

    def _out_of_fds(self, exc: OSError) -> None:
        now = time.monotonic()
        self.paused_until = now + 0.5
        self._accept_while(False)
        if now - self.reported > 60:
            self.reported = now
            self.log.warning(
                "cannot accept connections (%s) with %d open: raise the open-file limit "
                "(ulimit -n) or lower --max-connections",
                exc.strerror,
                self.nr_conns,
            )

    def _wait(self, conn: _Conn) -> None:
        """Have the loop read ``conn``'s next request."""
        self.waiting[conn.sock.fileno()] = conn
        self.selector.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
        if conn.head:
            self._check_head(conn)

    def _readable(self, conn: _Conn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        if conn.idle:
            conn.idle = False
            conn.deadline = time.monotonic() + self.timeouts.header
        conn.head += data
        self._check_head(conn)

    def _check_head(self, conn: _Conn) -> None:
        if conn.scanned == 0 and conn.head.startswith((b"\r", b"\n")):
            del conn.head[: len(conn.head) - len(conn.head.lstrip(b"\r\n"))]  # RFC 9112 2.2
        need, transfer = _head_status(conn.head, conn.scanned)
        if need < 0:
            conn.scanned = len(conn.head)  # next time, search only what is new
            if len(conn.head) > MAX_HEAD:
                self._refuse(conn, "431 Request Header Fields Too Large",
                             f"the request head is larger than {MAX_HEAD} bytes")  # fmt: skip
            return
        if len(conn.head) < need:
            return  # a small body still arriving (scanned stays before the head's end)
        self._unwait(conn)
        self.busy += 1
        future = (self.transfers if transfer else self.reads).submit(self._handle, conn)
        future.add_done_callback(partial(self._completed, conn))

    def _unwait(self, conn: _Conn) -> None:
        self.waiting.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)

    def _drop(self, conn: _Conn) -> None:
        self._unwait(conn)
        conn.sock.close()
        self.nr_conns -= 1

    def _refuse(self, conn: _Conn, status: str, message: str) -> None:
        """Answer ``status`` without blocking (best effort) and close."""
        body = f"{message}\n".encode()
        head = (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; "
                f"charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        with contextlib.suppress(OSError):
            conn.sock.send(head.encode() + body)
        self._drop(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        if now < self.next_tick:
            return
        self.next_tick = now + _TICK
        for conn in [c for c in self.waiting.values() if c.deadline <= now]:
            if conn.idle or not conn.head:
                self._drop(conn)  # nothing sent: a kept-alive or silent connection
                continue
            self.expired += 1
            self._refuse(conn, "408 Request Timeout",
                         f"the request did not arrive within {self.timeouts.header:g} s "
                         "(--header-timeout)")  # fmt: skip
        if (self.expired or self.evicted) and now - self.reported > 60:
            self.reported = now
            if self.expired:
                self.log.warning("closed %d connection(s) whose request had not arrived "
                                 "within %g s (--header-timeout)", self.expired,
                                 self.timeouts.header)  # fmt: skip
            if self.evicted:
                self.log.warning("closed %d waiting connection(s) to make room for new ones "
                                 "(--max-connections %d)", self.evicted,
                                 self.cfg.worker_connections)  # fmt: skip
            self.expired = self.evicted = 0

    def _completed(self, conn: _Conn, future: Future[bool]) -> None:
        """In the pool thread: hand the connection back to the loop."""
        keep = not future.cancelled() and future.exception() is None and future.result()
        if not keep and (future.cancelled() or future.exception() is not None):
            conn.sock.close()
        self.done.put((conn, bool(keep)))
        with contextlib.suppress(BlockingIOError, InterruptedError):  # full: the loop is awake
            os.write(self.wake_w, b".")

    def _finish_done(self) -> None:
        while True:
            try:
                conn, keep = self.done.get_nowait()
            except queue.Empty:
                return
            self.busy -= 1
            if not keep:
                self.nr_conns -= 1
            elif not self.alive:
                conn.sock.close()
                self.nr_conns -= 1
            else:
                conn.sock.setblocking(False)
                conn.idle = not conn.head
                wait = self.cfg.keepalive if conn.idle else self.timeouts.header
                conn.deadline = time.monotonic() + wait
                conn.scanned = 0
                self._wait(conn)

    def _shutdown(self) -> None:
        self._accept_while(False)
        for conn in list(self.waiting.values()):
            self._drop(conn)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self.busy > 0 and time.monotonic() < deadline:
            self.notify()
            self._dispatch_events(min(1.0, max(0.0, deadline - time.monotonic())))
            self._finish_done()
        for pool in (self.reads, self.transfers):
            pool.shutdown(wait=False, cancel_futures=True)
        for listener in self.sockets:
            listener.close()

    # -- one request (pool thread) ----------------------------------------------------

    def _handle(self, conn: _Conn) -> bool:
        """Serve the request the loop read; True to keep the connection (closed if False)."""
        sock, req, keep = conn.sock, None, False
        try:
            sock.setblocking(True)
            sock.settimeout(self.timeouts.body)
            parser = RequestParser(self.cfg, sock, conn.client)
            parser.unreader.unread(bytes(conn.head))
            conn.head = bytearray()
            req = next(parser)
            keep = self._serve(req, conn)
            rest = getattr(parser.unreader, "buf", None)
            if keep and isinstance(rest, io.BytesIO):
                conn.head = bytearray(rest.getvalue())  # a pipelined next request
            else:
                keep = False
        except (NoMoreData, StopIteration):
            pass
        except OSError as exc:
            if exc.errno not in _QUIET_ERRORS:
                self.log.exception("Socket error processing request.")
        except Exception as exc:  # noqa: BLE001  gunicorn answers it (400 or 500) and logs it
            self.handle_error(req, sock, conn.client, exc)
        finally:
            if not keep:
                sock.close()
        return keep

    def _serve(self, req: Any, conn: _Conn) -> bool:
        """gunicorn's handle_request; True if the connection may serve another request."""
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()
            has_body = any(name in ("CONTENT-LENGTH", "TRANSFER-ENCODING")
                           and value.strip() != "0" for name, value in req.headers)  # fmt: skip
            if not self.alive or not self.cfg.keepalive or has_body:
                resp.force_close()  # after a body: one request per connection (see above)
            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                if has_body and unread_body(environ) != 0:
                    linger(conn.sock, unread_body(environ))
                return False
            return True
        except OSError:
            raise
        except Exception:
            if resp is not None and resp.headers_sent:
                self.log.exception("Error handling request")
                return False
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
