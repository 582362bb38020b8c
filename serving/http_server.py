"""The HTTP/1.1 transport of the REST API (tensorflow_model_server --rest_api_port): connections,
bodies (chunked, gzip), CORS headers, the Prometheus page, the 404 page outside ``/v1/`` and the
``--rest_api_num_threads`` bound. What a request means is ``serving.rest.RestApi``'s business.

Sources, tensorflow/serving 2.16.1: ``model_servers/http_server.cc`` (path regex, Prometheus handler
matched before ``/v1/`` by path without the query, RequestExecutor threads, AddCORSHeaders on the
``/v1/`` handler only) and ``util/net_http/server/internal/evhttp_request.cc`` (gzip bodies; one that
fails to gunzip reads as empty).
"""
from __future__ import annotations

import gzip
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from serving.rest import NOT_FOUND_PAGE, PATH_REGEX, RestApi


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = ""
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - quiet, as TF Serving logs at VLOG(1) only
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "gzip" in self.headers.get("Content-Encoding", ""):
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                body = b""  # ReadRequestGzipBytes() returns nothing: the body reads as empty
        return body

    def _reply(self, status: int, body, content_type: Optional[str], close: bool = False, cors: bool = False) -> None:
        data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogateescape")
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if cors and self.server.rest.enable_cors:
            for key, value in (("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "POST, GET"),
                               ("Access-Control-Allow-Headers", "Content-Type")):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._reply(400, "", None, close=True)
            return
        rest, path = self.server.rest, self.path
        if rest.metrics_path and path.partition("?")[0] == rest.metrics_path:
            with rest.slots:  # ProcessPrometheusRequest(): matched without the query, then compared with it
                if path != rest.metrics_path:
                    status, page = 400, f"Unexpected path: {path}. Should be {rest.metrics_path}"
                    content_type = "text/plain"
                else:
                    status, (page, content_type) = 200, rest.metrics.render()
            self._reply(status, page, content_type)
            return
        if not PATH_REGEX.fullmatch(path):
            self._reply(404, NOT_FOUND_PAGE, "text/html; charset=ISO-8859-1", close=True)
            return
        with rest.slots:
            if self.command == "OPTIONS":  # CORS preflight: no handler, empty body
                status, text, content_type = rest.api.preflight(self.headers.get("Origin", "")), "", None
            else:
                (status, text), content_type = rest.api.handle(self.command, path, body), "application/json"
        self._reply(status, text, content_type, cors=True)  # AddCORSHeaders(): the /v1/ handler only

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_TRACE = _handle


class RequestSlots:
    """--rest_api_num_threads: at most ``size`` requests are processed at once and the rest wait, as
    handlers queue on http_server.cc's RequestExecutor while libevent keeps reading connections."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"num_threads must be at least 1, got {size}")
        self.size, self.active, self.waiting = size, 0, 0
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            self.waiting += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.active < self.size)
            self.waiting -= 1
            self.active += 1
            self._cond.notify_all()

    def __exit__(self, *exc) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def wait_until(self, predicate, timeout: Optional[float] = None) -> bool:  # predicate(active, waiting)
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.active, self.waiting), timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a burst of connections queues in the kernel instead of being refused


class RestServer:
    """An HTTP/1.1 keep-alive server for the REST API and, when ``metrics_path`` is set, the Prometheus
    page: a thread per connection reads requests, ``num_threads`` of them are processed at a time."""

    def __init__(self, registry, port: int, host: str = "0.0.0.0", timeout_ms: int = 30000,
                 enable_cors: bool = False, *, num_threads: int = 8, metrics=None,
                 metrics_path: Optional[str] = None):
        if metrics_path and metrics is None:
            raise ValueError("metrics_path needs metrics")
        self.api = RestApi(registry, timeout_ms, metrics, num_threads)
        self.host, self._port, self.enable_cors = host, port, enable_cors
        self.metrics, self.metrics_path = metrics, metrics_path or None
        self.slots = RequestSlots(num_threads)
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    def start(self) -> None:
        if self._httpd is not None:
            return
        httpd = _Server((self.host, self._port), _Handler)
        httpd.rest = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="rest-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None
        self.api.close()
