"""The REST transport's event loop: one thread, epoll, non-blocking sockets, and worker threads for
the calls that must not block it (servable calls, where TensorFlow runs without the GIL).

Why not asyncio: per request its Python-level machinery (handles, transports, _run_once, the
self-pipe on every cross-thread callback) cost ~60-100 µs of this 2-core machine's CPU, about a
sixth of a batch-1 predict (bench/profile_serving.py). Here a worker's result is appended to a
deque and the loop is woken through a pipe only when it sleeps in epoll; the loop answers finished
calls between connections, so they do not wait behind a whole round of newly parsed requests.
Deadlines (--rest_api_timeout_in_ms) are a FIFO of calls checked at every turn: one timeout for all.

Limits (``Limits``), as production servers keep them: a sweep every few hundred ms closes connections
whose head is late, idle or stalled (``Connection.expired``); at ``max_connections`` the listener is
left alone, so newcomers wait in the kernel's backlog as nginx's do when its connections run out
(a refusal would be a new error mode, TF Serving has no limit); when ``accept`` fails for lack of file
descriptors or memory it is not polled for a growing interval, logged once per interval of
``_LOG_EVERY``, while the connections the loop has are served (Go's net/http backs off the same way).
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
import queue
import select
import socket
import threading
import time
from typing import Optional

from serving.rest_api.connection import LINGER, Connection
from serving.rest_api.wire import Request

log = logging.getLogger(__name__)
_IN = select.EPOLLIN
_ONE_CLIENT = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM)  # accept errors about that client only
_BACKOFF_FIRST, _BACKOFF_MAX = 0.01, 1.0  # seconds the listener rests after accept runs out of resources
_LOG_EVERY = 10.0  # seconds between two reports of the same trouble


@dataclasses.dataclass(frozen=True)
class Limits:
    """The transport's limits: bytes, seconds (<= 0: none) and connections (<= 0: none)."""
    max_body_bytes: int = 100 << 20  # gzip_zlib.h kMaxUncompressedBytes, TF Serving's only body limit
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_connections: int = 4096


def listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """The non-blocking listening socket (backlog 511, nginx's): where clients wait beyond the limit.
    ``reuse_port``: SO_REUSEPORT, so that several serving processes accept on one port."""
    sock = socket.create_server((host, port), backlog=511, reuse_port=reuse_port)
    sock.setblocking(False)
    return sock


class _Task:
    """A call on its way through the workers; ``answered`` is set on the loop only."""
    __slots__ = ("fn", "args", "on_done", "deadline", "answered")

    def __init__(self, fn, args, on_done, deadline):
        self.fn, self.args, self.on_done, self.deadline, self.answered = fn, args, on_done, deadline, False


class EventLoop:
    """Accepts on (host, port) and calls ``dispatch(connection, request)`` for every complete request."""

    def __init__(self, host: str, port: int, dispatch, workers: int, timeout: Optional[float],
                 limits: Limits = Limits(), reuse_port: bool = False):
        self._dispatch, self._timeout = dispatch, timeout
        self.max_body = limits.max_body_bytes
        self._header_timeout, self._idle_timeout = limits.header_timeout, limits.idle_timeout
        self._max_conns = limits.max_connections if limits.max_connections > 0 else float("inf")
        spans = [t for t in (limits.header_timeout, limits.idle_timeout) if t > 0] + [LINGER]
        self._sweep_every = min(max(min(spans) / 8, 0.005), 0.5)
        self.now = time.monotonic()
        self._next_sweep = 0.0
        self._accepting, self._resume_at, self._backoff = True, 0.0, 0.0
        self._reported: dict = {}  # trouble -> [last report time, occurrences since]
        self._listen = listen(host, port, reuse_port)
        self.port = self._listen.getsockname()[1]
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._epoll.register(self._listen.fileno(), _IN)
        self._epoll.register(self._wake_r, _IN)
        self.conns: dict = {}
        self._done: collections.deque = collections.deque()  # (task, result, error) from workers
        self._soon: collections.deque = collections.deque()  # callables for the next turn
        self._deadlines: collections.deque = collections.deque()  # tasks in submission (= deadline) order
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._sleeping = self.stopping = False
        self._grace_until = 0.0
        self._workers = [threading.Thread(target=self._work, name=f"rest-worker-{i}", daemon=True)
                         for i in range(workers)]
        self._thread = threading.Thread(target=self._run, name="rest-server", daemon=True)

    def start(self) -> None:
        for thread in self._workers:
            thread.start()
        self._thread.start()

    def stop(self, grace: float) -> None:
        self._grace_until = time.monotonic() + grace
        self.stopping = True
        self._wake()
        self._thread.join()

    # ---- used from the loop thread ---------------------------------------------------------------

    def submit(self, fn, args: tuple, on_done, timed: bool = True) -> None:
        """Runs fn(*args) on a worker; on_done(result, error) follows on the loop, or (``timed``) on_done(
        None, TimeoutError()) at the deadline, after which the call's own outcome is dropped."""
        deadline = time.monotonic() + self._timeout if self._timeout is not None and timed else None
        task = _Task(fn, args, on_done, deadline)
        if deadline is not None:
            self._deadlines.append(task)
        self._queue.put(task)

    def call_soon(self, fn) -> None:
        self._soon.append(fn)

    # ---- workers ---------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            if task.answered:  # its deadline passed while it was queued: it never starts
                continue
            try:
                result, error = task.fn(*task.args), None
            except BaseException as e:  # noqa: BLE001 - handed to the loop, answered there
                result, error = None, e
            self._done.append((task, result, error))
            if self._sleeping:
                self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):  # full (a wake-up is pending anyway) or closed
            pass

    # ---- the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        poll, conns = self._epoll.poll, self.conns
        listen_fd, wake_r = self._listen.fileno(), self._wake_r
        try:
            while True:
                self._turn()
                if self.stopping and self._stopped():
                    return
                timeout = self._next_timeout()
                self._sleeping = True
                if self._done or self._soon:
                    timeout = 0
                try:
                    events = poll(timeout)
                except InterruptedError:
                    events = ()
                self._sleeping = False
                self.now = time.monotonic()
                for fd, mask in events:
                    if fd == wake_r:
                        try:
                            os.read(wake_r, 4096)
                        except BlockingIOError:
                            pass
                    elif fd == listen_fd:
                        self._accept()
                    else:
                        conn = conns.get(fd)
                        if conn is not None:
                            self._guard(conn.handle, mask, conn=conn)
                        if self._done:
                            self._finish_calls()
        finally:
            self._close_all()

    def _turn(self) -> None:
        self._finish_calls()
        while self._soon:
            self._guard(self._soon.popleft())
        self._expire()
        now = self.now
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every
            for conn in [c for c in self.conns.values() if c.expired(now, self._header_timeout, self._idle_timeout)]:
                conn.close()
        if not self._accepting and now >= self._resume_at and len(self.conns) < self._max_conns \
                and not self.stopping:
            self._accepting = True
            self._epoll.register(self._listen.fileno(), _IN)

    def _finish_calls(self) -> None:
        done = self._done
        while done:
            task, result, error = done.popleft()
            if not task.answered:
                task.answered = True
                self._guard(task.on_done, result, error)

    def _expire(self) -> None:
        deadlines = self._deadlines
        if not deadlines:
            return
        now = time.monotonic()
        while deadlines and (deadlines[0].answered or deadlines[0].deadline <= now):
            task = deadlines.popleft()
            if not task.answered:
                task.answered = True
                self._guard(task.on_done, None, TimeoutError())

    def _next_timeout(self) -> float:
        deadlines = self._deadlines
        while deadlines and deadlines[0].answered:
            deadlines.popleft()
        timeout = max(deadlines[0].deadline - time.monotonic(), 0.0) if deadlines else -1
        if self.conns:  # the sweep's next turn
            wait = max(self._next_sweep - time.monotonic(), 0.0)
            timeout = wait if timeout < 0 else min(timeout, wait)
        if not self._accepting and len(self.conns) < self._max_conns:  # the listener's rest ends
            wait = max(self._resume_at - time.monotonic(), 0.0)
            timeout = wait if timeout < 0 else min(timeout, wait)
        if self.stopping:
            timeout = 0.01 if timeout < 0 else min(timeout, 0.01)
        return timeout

    def _guard(self, fn, *args, conn: Optional["Connection"] = None) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a bug in one request must not stop the server
            log.exception("REST request failed")
            if conn is not None:
                conn.close()

    def _accept(self) -> None:
        while len(self.conns) < self._max_conns:
            try:
                sock, _ = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _ONE_CLIENT:  # that client is gone, the next one may be taken
                    self._report("accept", "accept failed: %s", e)
                    continue
                # out of file descriptors (EMFILE, ENFILE) or memory, or worse: the listener rests (clients
                # wait in the backlog), tried again after a growing interval or once a connection closes
                self._backoff = min(self._backoff * 2, _BACKOFF_MAX) if self._backoff else _BACKOFF_FIRST
                self._pause_accepting(self._backoff)
                self._report("resources", "accept failed: %s; new connections wait (retried after %.0f ms, "
                             "doubling up to 1 s) while the %d open ones are served (raise the file descriptor "
                             "limit, ulimit -n, or lower --rest_api_max_connections)",
                             e, self._backoff * 1000, len(self.conns))
                return
            self._backoff = 0.0
            if self.stopping:
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock)
            self.conns[conn.fd] = conn
            self._epoll.register(conn.fd, _IN)
        self._pause_accepting(0.0)
        self._report("limit", "%d connections open (--rest_api_max_connections): new ones wait until one "
                     "closes", len(self.conns))

    def _pause_accepting(self, seconds: float) -> None:
        if self._accepting:
            self._accepting = False
            self._epoll.unregister(self._listen.fileno())
        self._resume_at = self.now + seconds

    def closed(self, conn: Connection) -> None:
        """A connection closed: a file descriptor is free, the listener may take the next client."""
        self.conns.pop(conn.fd, None)
        if not self._accepting:
            self._resume_at = 0.0

    def _report(self, trouble: str, message: str, *args) -> None:
        """Logs ``message`` at most once per _LOG_EVERY per kind of trouble, with how often it recurred."""
        now = time.monotonic()
        seen = self._reported.setdefault(trouble, [None, 0])  # [last report, occurrences since]
        if seen[0] is not None and now - seen[0] < _LOG_EVERY:
            seen[1] += 1
            return
        more = f" ({seen[1]} more times in the last {now - seen[0]:.0f} s)" if seen[1] else ""
        log.warning(message + more, *args)
        seen[:] = [now, 0]

    def _stopped(self) -> bool:
        """Stopping: no new connections; idle ones close; True once in-flight ones are answered."""
        if self._listen.fileno() >= 0:
            if self._accepting:
                self._epoll.unregister(self._listen.fileno())
                self._accepting = False
            self._listen.close()
        busy = False
        for conn in list(self.conns.values()):
            if conn.busy or conn.out is not None:
                busy = True
            else:
                conn.close()
        return not busy or time.monotonic() >= self._grace_until

    def _close_all(self) -> None:
        for conn in list(self.conns.values()):
            conn.close()
        for _ in self._workers:
            self._queue.put(None)
        if self._listen.fileno() >= 0:
            self._listen.close()
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def dispatch(self, conn: "Connection", request: Request) -> None:
        self._dispatch(conn, request)
