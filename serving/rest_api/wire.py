"""HTTP/1.1 on the wire for the REST transport: an incremental request parser and response heads.

It accepts what ``http.server.BaseHTTPRequestHandler`` (the transport before this one) accepted and
answers malformed requests as it did (``send_error`` pages, status codes, "Connection: close"), without
its per-request costs (a buffered file per connection, header parsing through ``email.parser``).
Semantics kept: request-line checks and HTTP/0.9, "//" path reduction, the first of repeated headers,
keep-alive by version and ``Connection``, ``Expect: 100-continue``, ``Content-Length`` read with int(),
chunked bodies (chunk extensions ignored, trailers skipped) and at most 100 headers.
Added limits (a body over ``--rest_api_max_body_bytes``, on the wire or gunzipped, is BodyTooLarge).
"""
from __future__ import annotations

import html
import time
import zlib
from email.utils import formatdate
from http import HTTPStatus
from http.server import DEFAULT_ERROR_CONTENT_TYPE, DEFAULT_ERROR_MESSAGE, BaseHTTPRequestHandler
from typing import Optional

MAX_LINE = 65536  # http.server / http.client _MAXLINE
MAX_HEADERS = 100  # http.client _MAXHEADERS
METHODS = frozenset(("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "TRACE"))  # the do_* handlers
_REASONS = {s.value: s.phrase for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BadRequest(Exception):
    """A request answered with send_error() and a closed connection."""

    def __init__(self, code: int, message: str, explain: Optional[str] = None):
        super().__init__(message)
        self.code, self.message, self.explain = code, message, explain


class BodyTooLarge(Exception):
    """A body over the limit: answered 413 before (or while) it is read, or after gunzip."""

    def __init__(self, limit: int, gzipped: bool = False):
        where = " once gunzipped" if gzipped else ""
        super().__init__(f"Request body is larger than {limit} bytes{where}. Send a smaller request (split the "
                         f"batch) or raise the limit with --rest_api_max_body_bytes.")
        self.limit = limit


class Request:
    """One parsed request; ``body`` is filled in by the parser once complete."""

    __slots__ = ("method", "path", "version", "headers", "keep_alive", "body", "_length", "_chunked", "_chunks",
                 "_continue", "_size")

    def __init__(self, method: str, path: str, version: str, headers: dict, number: Optional[tuple] = (1, 1)):
        self.method, self.path, self.version, self.headers = method, path, version, headers
        connection = headers.get("connection", "").lower()
        self.keep_alive = number is not None and number >= (1, 1)  # number None: HTTP/0.9
        if connection == "close":
            self.keep_alive = False
        elif connection == "keep-alive":
            self.keep_alive = True
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._chunks: Optional[list] = [] if self._chunked else None
        self._length = self._size = 0  # _size: chunk bytes so far
        if not self._chunked:
            try:
                self._length = int(headers.get("content-length") or 0)
            except ValueError:
                self._length = -1  # read_body() answers 400, as reading the body did before
        self._continue = headers.get("expect", "").lower() == "100-continue" and version >= "HTTP/1.1"
        self.body: Optional[bytes] = None

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


def _head_end(buf: bytearray) -> int:
    """Index just past the first empty line ("\r\n" or "\n") ending the head, or -1."""
    crlf = buf.find(b"\n\r\n")
    lf = buf.find(b"\n\n", 0, crlf if crlf >= 0 else len(buf))  # not through the body
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1


def parse_head(buf: bytearray) -> Optional[tuple]:
    """(Request, bytes consumed) once a whole head is in ``buf``; None for more data; BadRequest."""
    while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # empty lines before a request line are skipped
        del buf[:2 if buf[:2] == b"\r\n" else 1]
    end = _head_end(buf)
    if end < 0:
        first = buf.find(b"\n")
        if (first < 0 and len(buf) > MAX_LINE) or first > MAX_LINE:
            raise BadRequest(414, "")
        if len(buf) > MAX_LINE * (MAX_HEADERS + 2):
            raise BadRequest(431, "Too many headers")
        return None
    lines = bytes(buf[:end]).decode("iso-8859-1").split("\n")
    request_line = lines[0].rstrip("\r\n")
    if len(lines[0]) > MAX_LINE:
        raise BadRequest(414, "")
    words = request_line.split()
    version, major_minor = "HTTP/0.9", None
    if len(words) >= 3:
        version = words[-1]
        try:
            if not version.startswith("HTTP/"):
                raise ValueError
            number = version.split("/", 1)[1].split(".")
            if len(number) != 2:
                raise ValueError
            major_minor = int(number[0]), int(number[1])
        except (ValueError, IndexError):
            raise BadRequest(400, "Bad request version (%r)" % version) from None
        if major_minor >= (2, 0):
            raise BadRequest(505, "Invalid HTTP version (%s)" % version.split("/", 1)[1])
    if not 2 <= len(words) <= 3:
        raise BadRequest(400, "Bad request syntax (%r)" % request_line)
    method, path = words[:2]
    if len(words) == 2 and method != "GET":
        raise BadRequest(400, "Bad HTTP/0.9 request type (%r)" % method)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    headers: dict = {}
    count = 0
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        if len(line) > MAX_LINE:
            raise BadRequest(431, "Line too long", "got more than 65536 bytes when reading header line")
        count += 1
        if count > MAX_HEADERS:
            raise BadRequest(431, "Too many headers", f"got more than {MAX_HEADERS} headers")
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), value.strip())
    return Request(method, path, version, headers, major_minor), end


def expects_continue(request: Request) -> bool:
    return request._continue


def check_length(request: Request, limit: int) -> None:
    """BodyTooLarge for a Content-Length over ``limit``: refused before the body is read."""
    if request._length > limit:
        raise BodyTooLarge(limit)


def read_body(request: Request, buf: bytearray, eof: bool, limit: int) -> Optional[int]:
    """Moves the body out of ``buf`` once complete: returns bytes consumed, or None for more data.
    Raises ValueError for a body that cannot be read (answered 400, as before), BodyTooLarge for a
    chunked body growing past ``limit`` (as soon as a chunk's size line says so)."""
    if not request._chunked:
        if request._length < 0:
            raise ValueError("bad Content-Length")
        if len(buf) < request._length:
            if eof:
                request.body = bytes(buf)  # rfile.read() returns what there is at EOF
                return len(buf)
            return None
        request.body = bytes(buf[:request._length])
        return request._length
    pos = 0
    chunks = request._chunks
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return _at_eof(request, buf, eof)
        size = int(bytes(buf[pos:nl]).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            end = nl + 1
            while True:  # trailers, up to an empty line
                nl = buf.find(b"\n", end)
                if nl < 0:
                    if not eof:
                        return None
                    end = len(buf)
                    break
                line, end = buf[end:nl + 1], nl + 1
                if line in (b"\r\n", b"\n"):
                    break
            request.body = b"".join(chunks)
            return end
        if request._size + size > limit:
            raise BodyTooLarge(limit)
        data_end = nl + 1 + size
        after = buf.find(b"\n", data_end)
        if after < 0:
            return _at_eof(request, buf, eof)
        chunks.append(bytes(buf[nl + 1:data_end]))
        request._size += size
        pos = after + 1
        del buf[:pos]  # keep what was decoded out of the buffer
        pos = 0


def _at_eof(request: Request, buf: bytearray, eof: bool) -> Optional[int]:
    if not eof:
        return None
    raise ValueError("connection closed inside a chunked body")


def gunzip(body: bytes, limit: int) -> bytes:
    """gzip.decompress() (members in a row, zero padding between them), inflated at most 1 MiB per
    call so that a gzip bomb stops at ``limit`` (BodyTooLarge) and the GIL is let go between pieces.
    Raises zlib.error / EOFError for a body that is not gzip, as gzip.decompress() fails on it."""
    out, total, data = [], 0, body
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflater.eof:
            piece = inflater.decompress(data, 1 << 20)
            total += len(piece)
            if total > limit:
                raise BodyTooLarge(limit, gzipped=True)
            out.append(piece)
            data = inflater.unconsumed_tail
            if not data and not piece and not inflater.eof:  # all read, nothing more comes out
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        data = inflater.unused_data.lstrip(b"\0")
    return b"".join(out)


_date_cache = [0, ""]


def http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, formatdate(now, usegmt=True)]
    return _date_cache[1]


def response(status: int, body: bytes, content_type: Optional[str], *, close: bool = False,
             extra: tuple = (), head_only: bool = False, reason: Optional[str] = None) -> bytes:
    """Status line, headers and (unless HEAD) body."""
    lines = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, '')}", f"Date: {http_date()}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.extend(f"{k}: {v}" for k, v in extra)
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head if head_only else head + body


def error_response(error: BadRequest, head_only: bool = False) -> bytes:
    """BaseHTTPRequestHandler.send_error(): its HTML page, the message as the reason, then close."""
    short, long = BaseHTTPRequestHandler.responses.get(error.code, ("???", "???"))
    message, explain = error.message or short, error.explain or long
    body = (DEFAULT_ERROR_MESSAGE % {"code": error.code, "message": html.escape(message, quote=False),
                                     "explain": html.escape(explain, quote=False)}).encode("utf-8", "replace")
    return response(error.code, body, DEFAULT_ERROR_CONTENT_TYPE, close=True, head_only=head_only, reason=message)
