"""The REST transport's limits on raw sockets, over a servable stub: the body limit (Content-Length,
chunked, gunzipped), big bodies parsed off the event loop, the header and idle timeouts and the
connection limit. Times are measured on real sockets; the bounds are generous but would fail if a
small request queued behind a big one or a stalled connection were never closed."""
import gzip
import json
import select
import socket
import threading
import time

import pytest

from tests.component.test_rest_transport import PREDICT, Doubler, closed, connect, post, read_response

SMALL = post(b'{"inputs": [1.0]}')
MiB = 1 << 20


@pytest.fixture
def start(stub_rest):
    servable = Doubler()
    yield lambda **kwargs: stub_rest(servable, **kwargs)
    if servable.gate is not None:
        servable.gate.set()


def small_predict(sock) -> float:
    """Seconds one small predict takes on an open keep-alive connection."""
    began = time.perf_counter()
    sock.sendall(SMALL)
    status, _, text = read_response(sock, bytearray())
    assert (status, json.loads(text)) == (200, {"outputs": [2.0]})
    return time.perf_counter() - began


def refused(status, headers, text, limit: int) -> bool:
    message = json.loads(text)["error"]
    return (status == 413 and headers["content-type"] == "application/json" and str(limit) in message
            and "--rest_api_max_body_bytes" in message)


def test_small_predicts_answer_while_a_50mb_body_is_received_and_refused(start):
    """Before the limit, this body was read whole and parsed on the event loop: other clients waited
    for seconds. Now it is refused once past 40 MiB, and a predict on another connection, sent while
    the big body streams in, is answered in milliseconds."""
    rest = start(max_body_bytes=40 * MiB)
    piece = b"%x\r\n%s\r\n" % (MiB, b"x" * MiB)
    big = {"sent": 0}

    def send_big():
        with connect(rest) as sock:
            began = time.perf_counter()
            sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            while big["sent"] < 50 and not select.select([sock], [], [], 0)[0]:  # until the 413 is there
                sock.sendall(piece)
                big["sent"] += 1
            big["response"] = read_response(sock, bytearray())
            big["took"], big["closed"] = time.perf_counter() - began, closed(sock)

    thread = threading.Thread(target=send_big)
    latencies = []
    with connect(rest) as other:
        small_predict(other)
        thread.start()
        while thread.is_alive():
            latencies.append((big["sent"], small_predict(other)))
        thread.join()
    assert refused(*big["response"], 40 * MiB) and big["response"][1]["connection"] == "close" and big["closed"]
    assert 40 <= big["sent"] < 50  # refused once past the limit, not after the whole body
    during = [took for sent, took in latencies if 0 < sent < 40]  # sent while the body was coming in
    assert len(during) >= 3, latencies
    assert max(during) < 0.1 and max(during) < big["took"] / 2, (during, big["took"])


def test_a_content_length_over_the_limit_is_refused_before_the_body(start):
    rest = start(max_body_bytes=MiB)
    with connect(rest) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nContent-Length: {50 * MiB}\r\nExpect: 100-continue\r\n\r\n".encode())
        status, headers, text = read_response(sock, bytearray())  # no 100 Continue first
        assert refused(status, headers, text, MiB) and headers["connection"] == "close"
        sock.sendall(b"x" * MiB)  # a client that sends anyway is drained, not reset, then closed
        assert closed(sock)
    with connect(rest) as sock:  # a body at the limit is served
        body = json.dumps({"inputs": [1.0]}).encode().ljust(MiB)
        sock.sendall(post(body))
        assert read_response(sock, bytearray())[0] == 200


def test_a_gzip_bomb_is_refused_without_holding_other_clients(start):
    rest = start()  # the default limit: 100 MiB once gunzipped
    bomb = gzip.compress(b" " * (512 * MiB), 9)  # ~0.5 MB on the wire
    answer = {}

    def send_bomb():
        with connect(rest) as sock:
            sock.sendall(post(bomb, extra="Content-Encoding: gzip\r\n"))
            answer["response"] = read_response(sock, bytearray())
            answer["then"] = small_predict(sock)  # the connection stays usable

    thread = threading.Thread(target=send_bomb)
    with connect(rest) as other:
        thread.start()
        latencies = [small_predict(other)]
        while thread.is_alive():
            latencies.append(small_predict(other))
        thread.join()
    assert refused(*answer["response"], 100 * MiB) and "gunzipped" in json.loads(answer["response"][2])["error"]
    assert max(latencies) < 0.1, latencies
    with connect(rest) as sock:  # a gzipped body within the limit still reads as before
        sock.sendall(post(gzip.compress(b'{"inputs": [3.0]}'), extra="Content-Encoding: gzip\r\n"))
        assert json.loads(read_response(sock, bytearray())[2]) == {"outputs": [6.0]}


class SlowSpecs(Doubler):
    """Its "slow" signature's inputs are looked up, during the body's parsing, only once ``release`` is set."""

    def __init__(self):
        super().__init__()
        self.release, self.parsing = threading.Event(), threading.Event()

    def input_specs(self, signature_name):
        if signature_name == "slow":
            self.parsing.set()
            assert self.release.wait(30)
        return super().input_specs(signature_name)


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_big_or_gzipped_body_is_parsed_off_the_event_loop(stub_rest, gzipped):
    servable = SlowSpecs()
    rest = stub_rest(servable)
    values = [1.0] * (300000 if not gzipped else 1)  # ~1.5 MB: over the size parsed on the loop
    body = json.dumps({"signature_name": "slow", "inputs": values}).encode()
    with connect(rest) as big, connect(rest) as other:
        big.sendall(post(gzip.compress(body), extra="Content-Encoding: gzip\r\n") if gzipped else post(body))
        assert servable.parsing.wait(30)  # the big request is being parsed, and stays so
        try:
            assert small_predict(other) < 5  # on a loop held by that parse it would wait for ever
        finally:
            servable.release.set()
        status, _, text = read_response(big, bytearray())
        assert status == 200 and json.loads(text)["outputs"][:1] == [2.0]


def wait_closed(sock, within: float) -> float:
    """Seconds until the server closes ``sock`` (fails after ``within``)."""
    began = time.perf_counter()
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"still open after {within} s")
    return time.perf_counter() - began


def test_half_sent_heads_time_out_and_idle_connections_close(start):
    rest = start(header_timeout_ms=300, idle_timeout_ms=900)
    halves = [connect(rest) for _ in range(20)]
    for sock in halves:
        sock.sendall(b"POST /v1/models/stub:predict HTTP/1.1\r\nContent-Le")
    sent = time.perf_counter()
    idle = connect(rest)
    small_predict(idle)
    idle_since = time.perf_counter()
    for sock in halves:
        wait_closed(sock, 5)
        assert 0.25 < time.perf_counter() - sent < 3
        sock.close()
    wait_closed(idle, 5)  # the header timeout does not apply between requests, the idle one does
    assert 0.85 < time.perf_counter() - idle_since < 5
    idle.close()


def test_a_trickled_head_and_a_stalled_body_are_closed(start):
    rest = start(header_timeout_ms=300, idle_timeout_ms=600)
    with connect(rest) as sock:  # each byte in time for the idle timeout, the whole head not
        began = time.perf_counter()
        for byte in b"GET /v1/models/stub HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.02)
        assert 0.25 < time.perf_counter() - began < 3 and closed(sock)
    with connect(rest) as sock:  # a body that stops coming
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nContent-Length: 100\r\n\r\n{{\"inputs\"".encode())
        assert 0.5 < wait_closed(sock, 5) < 4


def test_a_request_in_progress_is_not_timed_out(start):
    rest = start(header_timeout_ms=200, idle_timeout_ms=300)
    with connect(rest) as sock:
        servable = rest.api.registry.servable
        servable.gate = threading.Event()
        sock.sendall(SMALL)
        assert servable.entered.wait(30)
        time.sleep(0.8)  # well past both timeouts while the servable call runs
        servable.gate.set()
        assert read_response(sock, bytearray())[0] == 200


def test_connections_over_the_limit_wait_in_the_backlog(start):
    rest = start(max_connections=3)
    first = [connect(rest) for _ in range(3)]
    for sock in first:
        small_predict(sock)
    waiting = connect(rest)  # the kernel completes the handshake; the server does not take it yet
    waiting.sendall(SMALL)
    assert not select.select([waiting], [], [], 0.5)[0]
    first.pop().close()
    waiting.settimeout(5)
    assert read_response(waiting, bytearray())[0] == 200
    for sock in first + [waiting]:
        assert small_predict(sock) < 5
        sock.close()
