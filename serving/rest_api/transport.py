"""The HTTP/1.1 transport of the REST API (tensorflow_model_server --rest_api_port): connections,
bodies (chunked, gzip), CORS headers, the Prometheus page, the 404 page outside ``/v1/``, the
``--rest_api_num_threads`` bound and the ``--rest_api_timeout_in_ms`` deadline. What a request means
is ``serving.rest_api.api.RestApi``'s business; bytes on the wire are ``serving.rest_api.wire``'s; the event loop
is ``serving.rest_api.event_loop``'s.

Sources, tensorflow/serving 2.16.1: ``model_servers/http_server.cc`` (path regex, Prometheus handler
matched before ``/v1/`` by path without the query, RequestExecutor threads, AddCORSHeaders on the
``/v1/`` handler only) and ``util/net_http/server/internal/evhttp_request.cc`` (gzip bodies; one that
fails to gunzip reads as empty).

Why this shape: with the GIL, Python work does not run in parallel anyway, so one event loop thread
owns every connection and does all of a request's Python work (HTTP, JSON in and out), as libevent's
loop does in TF Serving; only the servable call, where TensorFlow runs without the GIL, goes to
``num_threads`` worker threads. Measured (bench/profile_serving.py): per-connection threads, or whole
requests on worker threads, lose more to GIL hand-offs than they gain. The exception is a big body
(over ``_INLINE_BODY`` bytes, or gzipped): its gunzip and JSON parsing go to a worker too, so one
50 MB request does not hold every other client for the seconds its parsing takes.
"""
from __future__ import annotations

import threading
import zlib
from typing import Optional

from serving.errors import ServingError
from serving.rest_api.connection import Connection
from serving.rest_api.event_loop import EventLoop, Limits
from serving.rest_api.json_responses import format_error_response
from serving.rest_api.wire import BodyTooLarge, Request, gunzip
from serving.rest_api.api import NOT_FOUND_PAGE, PATH_REGEX, TIMEOUT_MESSAGE, Job, RestApi

_INLINE_BODY = 1 << 20  # bodies up to this are parsed on the loop (~10 ms at most); bigger ones on a worker
_CORS = (("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "POST, GET"),
         ("Access-Control-Allow-Headers", "Content-Type"))


class RequestSlots:
    """--rest_api_num_threads: at most ``size`` requests are processed at once and the rest wait, as
    handlers queue on http_server.cc's RequestExecutor while libevent keeps reading connections.
    acquire()/release() run on the event loop; wait_until() may be called from any thread."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"num_threads must be at least 1, got {size}")
        self.size, self.active, self.waiting = size, 0, 0
        self._queue: list = []
        self._cond = threading.Condition()

    def acquire(self, start) -> bool:
        """True if a slot was taken for the caller (who starts now); else ``start`` is queued and
        release() hands it back once a slot frees up (first come, first served)."""
        with self._cond:
            if self.active < self.size and not self._queue:
                self.active += 1
                taken = True
            else:
                self._queue.append(start)
                self.waiting += 1
                taken = False
            self._cond.notify_all()
        return taken

    def release(self):
        """Frees a slot; returns the queued start function that now holds it, if any."""
        with self._cond:
            self.active -= 1
            start = None
            if self._queue and self.active < self.size:
                start = self._queue.pop(0)
                self.waiting -= 1
                self.active += 1
            self._cond.notify_all()
        return start

    def wait_until(self, predicate, timeout: Optional[float] = None) -> bool:  # predicate(active, waiting)
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.active, self.waiting), timeout)


class RestServer:
    """An HTTP/1.1 keep-alive server for the REST API and, when ``metrics_path`` is set, the Prometheus
    page: one event loop thread for the connections, ``num_threads`` workers for servable calls."""

    def __init__(self, registry, port: int, host: str = "0.0.0.0", timeout_ms: int = 30000,
                 enable_cors: bool = False, *, num_threads: int = 8, metrics=None,
                 metrics_path: Optional[str] = None, max_body_bytes: int = Limits.max_body_bytes,
                 header_timeout_ms: int = 10000, idle_timeout_ms: int = 75000,
                 max_connections: int = Limits.max_connections, reuse_port: bool = False):
        """The last four are --rest_api_max_body_bytes, --rest_api_header_timeout_in_ms,
        --rest_api_idle_timeout_in_ms and --rest_api_max_connections (see event_loop.Limits)."""
        if metrics_path and metrics is None:
            raise ValueError("metrics_path needs metrics")
        self.api = RestApi(registry, timeout_ms, metrics, num_threads)
        self.host, self._port, self.enable_cors = host, port, enable_cors
        self.metrics, self.metrics_path = metrics, metrics_path or None
        self.slots = RequestSlots(num_threads)
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        self.limits = Limits(max_body_bytes, header_timeout_ms / 1000, idle_timeout_ms / 1000, max_connections)
        self.reuse_port = reuse_port  # SO_REUSEPORT: --num_serving_processes share the port
        self._loop: Optional[EventLoop] = None

    @property
    def port(self) -> int:
        return self._loop.port if self._loop else self._port

    def start(self) -> None:
        if self._loop is None:
            self._loop = EventLoop(self.host, self._port, self._dispatch, self.slots.size, self.timeout, self.limits,
                                   self.reuse_port)
            self._loop.start()

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting, lets requests in flight be answered (for at most ``grace`` seconds), closes."""
        if self._loop is not None:
            self._loop.stop(grace)
            self._loop = None
            self.api.close()

    # ---- requests, on the loop ------------------------------------------------------------------

    def _dispatch(self, conn: Connection, request: Request) -> None:
        body, path = request.body, request.path
        if self.metrics_path and path.partition("?")[0] == self.metrics_path:
            start = lambda: self._metrics_page(conn, request)  # noqa: E731
        elif not PATH_REGEX.fullmatch(path):
            return conn.reply(404, NOT_FOUND_PAGE, "text/html; charset=ISO-8859-1", close=True)
        elif request.method == "POST" and (len(body) > _INLINE_BODY or "gzip" in request.header("content-encoding")):
            start = lambda: self._loop.submit(  # noqa: E731 - gunzip and parse on a worker, then as _api
                self._begin, (request, body), lambda outcome, error: self._begun(conn, request, outcome, error), False)
        else:  # only a POST's body is read: GET and OPTIONS ignore theirs, gzipped or not
            start = lambda: self._api(conn, request, body)  # noqa: E731
        if self.slots.acquire(start):
            start()

    def _release(self) -> None:
        """A request is answered: its slot goes to the next waiting request, if any."""
        start = self.slots.release()
        if start is not None:
            self._loop.call_soon(start)

    def _metrics_page(self, conn: Connection, request: Request) -> None:
        """ProcessPrometheusRequest(): matched without the query, then compared with it."""
        try:
            if request.path != self.metrics_path:
                status, content_type = 400, "text/plain"
                page = f"Unexpected path: {request.path}. Should be {self.metrics_path}"
            else:
                status, (page, content_type) = 200, self.metrics.render()
        finally:
            self._release()
        conn.reply(status, page, content_type)

    def _begin(self, request: Request, body: bytes):
        """On a worker: the body gunzipped (up to the body limit) and api.begin()."""
        if "gzip" in request.header("content-encoding"):
            try:
                body = gunzip(body, self.limits.max_body_bytes)
            except (OSError, EOFError, zlib.error):
                body = b""  # ReadRequestGzipBytes() returns nothing: the body reads as empty
        return self.api.begin(request.method, request.path, body)

    def _begun(self, conn: Connection, request: Request, outcome, error) -> None:
        if isinstance(error, BodyTooLarge):  # gunzipped past the limit: 413, the connection stays usable
            self._release()
            return conn.reply(413, format_error_response(str(error)), "application/json",
                              extra=_CORS if self.enable_cors else ())
        if error is not None:
            self._release()
            conn.close()
            raise error
        self._answer_begun(conn, request, outcome, big=True)

    def _api(self, conn: Connection, request: Request, body: bytes) -> None:
        try:
            if request.method == "OPTIONS":  # CORS preflight: no handler, empty body
                outcome = self.api.preflight(request.header("origin")), ""
            else:
                outcome = self.api.begin(request.method, request.path, body)
        except BaseException:
            self._release()
            conn.close()
            raise
        self._answer_begun(conn, request, outcome)

    def _answer_begun(self, conn: Connection, request: Request, outcome, big: bool = False) -> None:
        """After api.begin(): the servable call goes to a worker, or the answer is sent now. A big
        request's answer (likely as big) is written to JSON on a worker too."""
        if isinstance(outcome, Job):
            self._loop.submit(outcome.fn, outcome.args,
                              lambda result, error: self._answer(conn, outcome, result, error, big))
            return
        self._release()
        status, text = outcome
        conn.reply(status, text, "application/json" if request.method != "OPTIONS" else None,
                   extra=_CORS if self.enable_cors else ())

    def _answer(self, conn: Connection, job: Job, result, error, big: bool = False) -> None:
        """The servable call's outcome (error None) or, past the deadline, error TimeoutError: RunOptions.
        timeout_in_ms fails the request as DirectSession fails it while the call goes on."""
        if isinstance(error, TimeoutError):
            error = ServingError(TIMEOUT_MESSAGE, "DEADLINE_EXCEEDED")
        if big and error is None:
            return self._loop.submit(job.finish, (result,), lambda answer, failure: self._answered(
                conn, *(answer if failure is None else job.fail(failure))), False)
        status, text = job.finish(result) if error is None else job.fail(error)
        self._answered(conn, status, text)

    def _answered(self, conn: Connection, status: int, text: str) -> None:
        self._release()
        conn.reply(status, text, "application/json", extra=_CORS if self.enable_cors else ())
