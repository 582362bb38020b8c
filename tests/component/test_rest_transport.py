"""The REST transport on raw sockets: what http.server (the transport before serving.rest_api.event_loop) did with
pipelining, chunked bodies, Expect: 100-continue, HEAD, HTTP/1.0, odd request lines and half-closed
connections, over a servable stub (no TensorFlow)."""
import json
import socket
import threading
import time

import numpy as np
import pytest


PREDICT = "/v1/models/stub:predict"


class Doubler:
    def __init__(self):
        self.gate = None
        self.entered = threading.Event()  # set once a predict call is running

    def input_specs(self, signature_name):
        return {"x": (np.float32, None)}

    def predict(self, signature_name, inputs):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        return {"y": np.asarray(inputs["x"]) * 2}


@pytest.fixture
def served(stub_rest):
    servable = Doubler()
    yield servable, lambda **kwargs: stub_rest(servable, **kwargs)
    if servable.gate is not None:
        servable.gate.set()  # before stub_rest stops the servers


def connect(rest) -> socket.socket:
    return socket.create_connection(("127.0.0.1", rest.port), timeout=30)


def post(body: bytes, path: str = PREDICT, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return (f"POST {path} {version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def read_response(sock: socket.socket, buf: bytearray) -> tuple:
    """(status, headers, body) of one response; ``buf`` keeps what follows it."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise EOFError(bytes(buf))
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    buf[:] = rest
    while len(buf) < length:
        buf += sock.recv(65536)
    body = bytes(buf[:length])
    del buf[:length]
    return status, headers, body


def closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return False


def test_pipelined_requests_are_answered_in_order(served):
    _, start = served
    rest = start()
    with connect(rest) as sock:
        sock.sendall(b"".join(post(json.dumps({"instances": [float(i)]}).encode()) for i in range(5))
                     + b"GET /v1/models/stub/nope HTTP/1.1\r\n\r\n")
        buf = bytearray()
        for i in range(5):
            status, _, text = read_response(sock, buf)
            assert (status, json.loads(text)) == (200, {"predictions": [2.0 * i]})
        assert read_response(sock, buf)[0] == 400


def test_chunked_body_with_extensions_and_trailers(served):
    _, start = served
    rest = start()
    body = b'{"inputs": [1.5, 2.5]}'
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5]) for i in range(0, len(body), 5))
    with connect(rest) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n".encode())
        for i in range(0, len(chunked), 7):  # in small pieces
            sock.sendall(chunked[i:i + 7])
            time.sleep(0.001)
        sock.sendall(b"0\r\nX-Trailer: 1\r\n\r\n")
        status, _, text = read_response(sock, bytearray())
    assert (status, json.loads(text)) == (200, {"outputs": [3.0, 5.0]})


def test_expect_100_continue_and_a_large_body(served):
    _, start = served
    rest = start()
    values = [float(i % 7) for i in range(300000)]
    body = json.dumps({"inputs": values}).encode()  # ~1.5 MB, read in many pieces
    with connect(rest) as sock:
        sock.sendall(post(b"", extra="Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: %d"
                                                                        % len(body)))
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(100)
        assert bytes(buf).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        del buf[:len(b"HTTP/1.1 100 Continue\r\n\r\n")]
        sock.sendall(body)
        status, _, text = read_response(sock, buf)
    assert status == 200 and json.loads(text)["outputs"][:3] == [0.0, 2.0, 4.0]


def test_head_http10_and_connection_close(served):
    _, start = served
    rest = start()
    with connect(rest) as sock:
        sock.sendall(b"HEAD /v1/models/stub HTTP/1.1\r\n\r\n")
        buf = bytearray()
        sock.sendall(b"GET /v1/models/stub/labels/x:predict HTTP/1.1\r\n\r\n")
        status, headers, body = read_response(sock, buf)  # HEAD: a length, no body
        assert status == 400 and int(headers["content-length"]) > 0 and body[:1] != b"{"
    with connect(rest) as sock:
        sock.sendall(post(b'{"inputs": [1.0]}', version="HTTP/1.0"))
        assert read_response(sock, bytearray())[0] == 200 and closed(sock)
    with connect(rest) as sock:
        sock.sendall(post(b'{"inputs": [1.0]}', version="HTTP/1.0", extra="Connection: keep-alive\r\n") * 2)
        buf = bytearray()
        assert read_response(sock, buf)[0] == read_response(sock, buf)[0] == 200
    with connect(rest) as sock:
        sock.sendall(post(b'{"inputs": [1.0]}', extra="Connection: close\r\n"))
        assert read_response(sock, bytearray())[0] == 200 and closed(sock)


@pytest.mark.parametrize("raw, status", [
    (b"BREW /v1/models/stub HTTP/1.1\r\n\r\n", 501),
    (b"GET /v1/models/stub HTTP/2.0\r\n\r\n", 505),
    (b"GET /v1/models/stub HTTX/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"POST /v1/models/stub:predict HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
])
def test_malformed_requests_get_http_servers_answers_and_a_close(served, raw, status):
    """http.server's statuses and pages; where it wrote the page without a status line (a request line
    it could not read is answered as HTTP/0.9 there), a status line and headers are sent."""
    _, start = served
    rest = start()
    with connect(rest) as sock:
        sock.sendall(raw)
        got, headers, _ = read_response(sock, bytearray())
        assert got == status and headers["connection"] == "close" and closed(sock)


def test_double_slash_paths_cors_and_a_half_closed_client(served):
    _, start = served
    rest = start(enable_cors=True)
    with connect(rest) as sock:
        sock.sendall(post(b'{"inputs": [4.0]}', path="//v1/models/stub:predict"))
        sock.shutdown(socket.SHUT_WR)  # the client is done sending; the answer still comes
        status, headers, text = read_response(sock, bytearray())
        assert (status, json.loads(text)) == (200, {"outputs": [8.0]})
        assert headers["access-control-allow-origin"] == "*" and closed(sock)


def release_once_stopping(rest, gate) -> None:
    """Opens the gate once the server is stopping, so the request is still in flight when stop()
    begins: a running server answers a probe for a page outside /v1/ at once (404, no worker needed);
    a stopping one closes new connections or leaves them unanswered."""
    while True:
        try:
            probe = socket.create_connection(("127.0.0.1", rest.port), timeout=30)
        except OSError:  # refused or reset: the listener is closed
            break
        with probe:
            probe.settimeout(0.5)
            try:
                probe.sendall(b"GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if not probe.recv(64).startswith(b"HTTP/1.1 404"):
                    break
            except (socket.timeout, ConnectionError):
                break
    gate.set()


def test_stop_answers_requests_in_flight(served):
    servable, start = served
    servable.gate = threading.Event()
    rest = start()
    sock = connect(rest)
    sock.sendall(post(b'{"inputs": [1.0]}'))
    assert servable.entered.wait(30)  # the request is in flight
    threading.Thread(target=release_once_stopping, args=(rest, servable.gate), daemon=True).start()
    rest.stop()
    assert read_response(sock, bytearray())[0] == 200
    sock.close()
