"""serving.rest_api.wire's body limits: gunzip() reads what gzip.decompress() reads (and fails where it
fails) but stops at the limit; a chunked body is refused at the chunk that passes the limit."""
import gzip
import os
import zlib

import pytest

from serving.rest_api.wire import BodyTooLarge, check_length, gunzip, parse_head, read_body

MiB = 1 << 20


def reference(data: bytes):
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return "fails"


def ours(data: bytes, limit: int = 1 << 40):
    try:
        return gunzip(data, limit)
    except (OSError, EOFError, zlib.error):
        return "fails"


ONE = gzip.compress(b'{"inputs": [1.0]}')
CASES = {
    "empty": b"", "one": ONE, "two members": ONE + gzip.compress(b"[2]"), "zero padding": ONE + b"\0\0\0",
    "trailing junk": ONE + b"junk", "truncated": ONE[:-3], "not gzip": b'{"inputs": [1.0]}',
    "bad length": ONE[:-1] + b"\x01",
    "exactly 1 MiB pieces": gzip.compress(b"a" * (3 * MiB)),  # output ends on the piece size
    "long runs at the end": gzip.compress(os.urandom(1000) + b"\0" * (5 * MiB), 9),
    "incompressible": gzip.compress(os.urandom(3 * MiB)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gunzip_reads_as_gzip_decompress(name):
    assert ours(CASES[name]) == reference(CASES[name])


def test_gunzip_stops_at_the_limit():
    bomb = gzip.compress(b" " * (64 * MiB), 9)
    with pytest.raises(BodyTooLarge, match=r"larger than 1048576 bytes once gunzipped.*--rest_api_max_body_bytes"):
        gunzip(bomb, MiB)
    assert gunzip(gzip.compress(b" " * MiB), MiB) == b" " * MiB  # at the limit is fine


def head(text: str):
    request, end = parse_head(bytearray(text.encode()))
    return request


def test_content_length_over_the_limit():
    check_length(head("POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n"), 100)
    with pytest.raises(BodyTooLarge, match="larger than 99 bytes"):
        check_length(head("POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n"), 99)


def test_a_chunked_body_is_refused_at_the_chunk_passing_the_limit():
    request = head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    buf = bytearray(b"5\r\nabcde\r\n5\r\nfghij\r\n")
    assert read_body(request, buf, False, 10) is None  # 10 bytes so far: more may come
    buf += b"100000\r\n"  # the size line alone is enough to refuse
    with pytest.raises(BodyTooLarge):
        read_body(request, buf, False, 10)
    request = head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    buf = bytearray(b"5\r\nabcde\r\n")
    for _ in range(3):  # a chunk arriving in pieces is counted once
        assert read_body(request, buf, False, 5) is None
    buf += b"0\r\n\r\n"
    assert read_body(request, buf, False, 5) is not None and request.body == b"abcde"
