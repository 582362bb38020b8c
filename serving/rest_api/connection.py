"""One client connection of the REST transport's event loop (``serving.rest_api.event_loop``): reads
requests, hands complete ones to the server, writes answers, in order, and keeps the marks the loop's
sweep times it out by (``--rest_api_header_timeout_in_ms``, ``--rest_api_idle_timeout_in_ms``).

A body over ``--rest_api_max_body_bytes`` is answered 413 as soon as that is known (its Content-Length,
or the chunk that passes the limit), and the connection then closes the way nginx's lingering close
does: the answer is sent, the write side shut, and what the client still sends is read and dropped for
a moment, so that its kernel does not reset the connection before it has read the 413.
"""
from __future__ import annotations

import select
import socket
from typing import Optional

from serving.rest_api.json_responses import format_error_response
from serving.rest_api.wire import (CONTINUE, METHODS, BadRequest, BodyTooLarge, Request, check_length, error_response,
                                   expects_continue, parse_head, read_body, response)

_IN, _OUT, _GONE = select.EPOLLIN, select.EPOLLOUT, select.EPOLLHUP | select.EPOLLERR
_PAUSE_AT = 8 << 20  # stop reading a connection whose unprocessed input passes this while it waits
_RECV = 1 << 18
LINGER = 2.0  # seconds a refused body is still read (and dropped) after the 413


class Connection:
    """One client connection: requests are read and answered one after the other, in order.
    ``mark``: when it last made progress (accepted, read, wrote, answered); ``head_start``: when the
    head being read began; ``linger_until``: set once it only drains before closing."""

    __slots__ = ("loop", "sock", "fd", "buf", "request", "busy", "eof", "closed", "out", "close_after",
                 "events", "paused", "_advancing", "mark", "head_start", "linger_until")

    def __init__(self, loop, sock: socket.socket):
        self.loop, self.sock, self.fd = loop, sock, sock.fileno()
        self.buf = bytearray()
        self.request: Optional[Request] = None
        self.busy = self.eof = self.closed = self.close_after = self.paused = self._advancing = False
        self.out: Optional[bytearray] = None  # what the kernel did not take yet
        self.events = _IN
        self.mark = self.head_start = loop.now
        self.linger_until = 0.0

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
        if self.linger_until:  # after a refused body: drop what still comes, close at its end
            return None if data else self.close()
        if not data:
            self.eof = True
            self._update()
            if not self.busy:
                self.advance()
            return
        self.mark = now = self.loop.now
        if not self.buf and self.request is None:
            self.head_start = now
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
            while not (self.busy or self.closed or self.out is not None or self.linger_until):
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
                    try:
                        check_length(self.request, self.loop.max_body)
                    except BodyTooLarge as error:
                        return self.refuse(error)
                    if expects_continue(self.request):
                        self._send(CONTINUE)
                try:
                    used = read_body(self.request, self.buf, self.eof, self.loop.max_body)
                except ValueError:
                    return self.reply(400, "", None, close=True)
                except BodyTooLarge as error:
                    return self.refuse(error)
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

    def refuse(self, error: BodyTooLarge) -> None:
        """413 with a JSON error that names the limit and its flag; the rest of the body is not read."""
        self.buf.clear()
        self.reply(413, format_error_response(str(error)), "application/json", close="linger")

    def reply(self, status: int, body, content_type: Optional[str], *, close=False, extra: tuple = ()) -> None:
        """Answers the current request; HEAD gets the head only, HTTP/0.9 the body only. ``close``:
        True, or "linger" to drain what the client still sends before closing."""
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
        self.mark = self.head_start = self.loop.now
        self._send(payload)
        if self.closed:
            return
        if close or self.loop.stopping:
            self.close_after = "linger" if close == "linger" else True
            if self.out is None:
                self._linger() if close == "linger" else self.close()
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
        self.mark = self.loop.now
        if self.out:
            return
        self.out = None
        self._update()
        if self.close_after == "linger":
            self._linger()
        elif self.close_after:
            self.close()
        elif self.buf or self.eof:
            self.advance()

    def _linger(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self.close()
        self.linger_until = self.loop.now + LINGER
        self.eof = False  # read (and drop) until the client's end or the deadline
        self.paused = False
        self._update()

    def _update(self) -> None:
        events = (0 if self.eof or self.paused else _IN) | (_OUT if self.out is not None else 0)
        if events != self.events and not self.closed:
            self.events = events
            self.loop._epoll.modify(self.fd, events)

    def expired(self, now: float, header: float, idle: float) -> bool:
        """Whether the sweep closes it: an unfinished head past ``header``, a stall (idle keep-alive,
        a body or an answer making no progress) past ``idle``, a drain past its end. 0 disables."""
        if self.busy:
            return False  # the servable call's own deadline (--rest_api_timeout_in_ms) covers it
        if self.linger_until:
            return now >= self.linger_until
        if self.request is None and self.buf and self.out is None:
            return 0 < header < now - self.head_start
        return 0 < idle < now - self.mark

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.closed(self)
        try:
            self.loop._epoll.unregister(self.fd)
        except (OSError, ValueError):
            pass
        self.sock.close()
