"""The REST transport's event loop: one thread, epoll, non-blocking sockets, and worker threads for
the calls that must not block it (servable calls, where TensorFlow runs without the GIL).

Why not asyncio: per request its Python-level machinery (handles, transports, _run_once, the
self-pipe on every cross-thread callback) cost ~60-100 µs of this 2-core machine's CPU, about a
sixth of a batch-1 predict (bench/profile_serving.py). Here a worker's result is appended to a
deque and the loop is woken through a pipe only when it sleeps in epoll; the loop answers finished
calls between connections, so they do not wait behind a whole round of newly parsed requests.
Deadlines (--rest_api_timeout_in_ms) are a FIFO of calls checked at every turn: one timeout for all.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import select
import socket
import threading
import time
from typing import Optional

from serving.rest_api.wire import (CONTINUE, METHODS, BadRequest, Request, error_response, expects_continue,
                               parse_head, read_body, response)

log = logging.getLogger(__name__)
_IN, _OUT, _GONE = select.EPOLLIN, select.EPOLLOUT, select.EPOLLHUP | select.EPOLLERR
_PAUSE_AT = 8 << 20  # stop reading a connection whose unprocessed input passes this while it waits
_RECV = 1 << 18


class _Task:
    """A call on its way through the workers; ``answered`` is set on the loop only."""
    __slots__ = ("fn", "args", "on_done", "deadline", "answered")

    def __init__(self, fn, args, on_done, deadline):
        self.fn, self.args, self.on_done, self.deadline, self.answered = fn, args, on_done, deadline, False


class EventLoop:
    """Accepts on (host, port) and calls ``dispatch(connection, request)`` for every complete request."""

    def __init__(self, host: str, port: int, dispatch, workers: int, timeout: Optional[float]):
        self._dispatch, self._timeout = dispatch, timeout
        self._listen = socket.create_server((host, port), backlog=128)
        self._listen.setblocking(False)
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

    def submit(self, fn, args: tuple, on_done) -> None:
        """Runs fn(*args) on a worker; on_done(result, error) follows on the loop, or on_done(None,
        TimeoutError()) at the deadline, after which the call's own outcome is dropped."""
        deadline = time.monotonic() + self._timeout if self._timeout is not None else None
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
        while True:
            try:
                sock, _ = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. out of file descriptors: the client waits in the backlog
                log.warning("accept failed: %s", e)
                return
            if self.stopping:
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock)
            self.conns[conn.fd] = conn
            self._epoll.register(conn.fd, _IN)

    def _stopped(self) -> bool:
        """Stopping: no new connections; idle ones close; True once in-flight ones are answered."""
        if self._listen.fileno() >= 0:
            self._epoll.unregister(self._listen.fileno())
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


class Connection:
    """One client connection: requests are read and answered one after the other, in order."""

    __slots__ = ("loop", "sock", "fd", "buf", "request", "busy", "eof", "closed", "out", "close_after",
                 "events", "paused", "_advancing")

    def __init__(self, loop: EventLoop, sock: socket.socket):
        self.loop, self.sock, self.fd = loop, sock, sock.fileno()
        self.buf = bytearray()
        self.request: Optional[Request] = None
        self.busy = self.eof = self.closed = self.close_after = self.paused = self._advancing = False
        self.out: Optional[bytearray] = None  # what the kernel did not take yet
        self.events = _IN

    def handle(self, mask: int) -> None:
        if mask & _GONE and (self.eof or not mask & _IN):  # the peer has gone both ways: nobody to answer
            return self.close()
        if mask & _OUT:
            self._flush()
        if mask & ~_OUT and not self.closed:
            self._read()

    def _read(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close()
        if not data:
            self.eof = True
            self._update()
            if not self.busy:
                self.advance()
            return
        self.buf += data
        if not self.busy:
            self.advance()
        elif len(self.buf) > _PAUSE_AT and not self.paused:
            self.paused = True
            self._update()

    def advance(self) -> None:
        """Reads the next request once the previous one is answered, and hands it to the server."""
        if self._advancing:
            return
        self._advancing = True
        try:
            while not (self.busy or self.closed or self.out is not None):
                if self.request is None:
                    try:
                        parsed = parse_head(self.buf)
                    except BadRequest as error:
                        return self._finish(error_response(error), True)
                    if parsed is None:
                        if self.eof:
                            self.close()
                        return
                    self.request, end = parsed
                    del self.buf[:end]
                    if self.request.method not in METHODS:  # no do_<METHOD>: refused before the body
                        return self._finish(error_response(
                            BadRequest(501, "Unsupported method (%r)" % self.request.method)), True)
                    if expects_continue(self.request):
                        self._send(CONTINUE)
                try:
                    used = read_body(self.request, self.buf, self.eof)
                except ValueError:
                    return self.reply(400, "", None, close=True)
                if used is None:
                    return
                del self.buf[:used]
                self.busy = True
                self.loop.dispatch(self, self.request)
        finally:
            self._advancing = False
            if self.paused and not self.busy:
                self.paused = False
                self._update()

    def reply(self, status: int, body, content_type: Optional[str], *, close: bool = False,
              extra: tuple = ()) -> None:
        """Answers the current request; HEAD gets the head only, HTTP/0.9 the body only."""
        request = self.request
        data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogateescape")
        if request.version == "HTTP/0.9":
            return self._finish(b"" if request.method == "HEAD" else data, True)
        # "Connection: close" is sent when the server closes on its own account; a client that asked
        # for it (or spoke HTTP/1.0) just sees the connection end, as http.server answered
        self._finish(response(status, data, content_type, close=close, extra=extra,
                              head_only=request.method == "HEAD"), close or not request.keep_alive)

    def _finish(self, payload: bytes, close: bool) -> None:
        self.request, self.busy = None, False
        self._send(payload)
        if self.closed:
            return
        if close or self.loop.stopping:
            self.close_after = True
            if self.out is None:
                self.close()
        elif (self.buf or self.eof) and not self._advancing:
            self.loop.call_soon(self.advance)

    def _send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.out is not None:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return self.close()
        if sent < len(data):
            self.out = bytearray(data[sent:])
            self._update()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.close()
        del self.out[:sent]
        if self.out:
            return
        self.out = None
        self._update()
        if self.close_after:
            self.close()
        elif self.buf or self.eof:
            self.advance()

    def _update(self) -> None:
        events = (0 if self.eof or self.paused else _IN) | (_OUT if self.out is not None else 0)
        if events != self.events and not self.closed:
            self.events = events
            self.loop._epoll.modify(self.fd, events)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.conns.pop(self.fd, None)
        try:
            self.loop._epoll.unregister(self.fd)
        except (OSError, ValueError):
            pass
        self.sock.close()
