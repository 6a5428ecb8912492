"""The sans-IO HTTP/1.1 layer, without sockets: every input also fed byte by byte."""

from __future__ import annotations

from typing import Any, SupportsIndex

import pytest

from asyncmpm.protocol.events import Body, EndBody, Event, Reject, Request
from asyncmpm.protocol.http1 import HTTP1Connection, HTTP1Limits


def feed(data: bytes, *, piece: int | None = None, limits: HTTP1Limits | None = None
         ) -> list[Event]:
    conn = HTTP1Connection(limits)
    events: list[Event] = []
    step = piece or len(data)
    for i in range(0, len(data), step):
        events += conn.receive_data(data[i:i + step])
    return merge_bodies(events)


def merge_bodies(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(1, out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


@pytest.fixture(params=[None, 1, 3], ids=["whole", "bytewise", "piece3"])
def piece(request: pytest.FixtureRequest) -> int | None:
    return request.param  # type: ignore[no-any-return]


def test_pipelined_requests_with_bodies(piece: int | None) -> None:
    data = (b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;name=value\r\nabc\r\n2 ; q=\"x y\"\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    events = feed(data, piece=piece)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Request", "EndBody", "Request", "Body", "EndBody", "Request", "Body",
                     "EndBody"]
    first, second, third = (e for e in events if isinstance(e, Request))
    assert (first.method, first.path, first.query) == (b"GET", b"/a", b"x=1")
    assert second.content_length == 5
    assert events[3] == Body(1, b"hello")
    assert third.chunked
    assert events[6] == Body(1, b"abcde")


def test_custom_token_method_and_absolute_target(piece: int | None) -> None:
    events = feed(b"PROPFIND2 http://h:8/p/q?z HTTP/1.1\r\nHost: h:8\r\n\r\n", piece=piece)
    req = events[0]
    assert isinstance(req, Request)
    assert (req.method, req.path, req.query) == (b"PROPFIND2", b"/p/q", b"z")


def test_header_values_are_trimmed_and_names_lowercased() -> None:
    (req, _) = feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \t v \t\r\n\r\n")
    assert isinstance(req, Request)
    assert req.headers == [(b"host", b"h"), (b"x-a", b"v")]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
         b"Content-Length: 5\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET foo/bar HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"\x16\x03\x01\x00", 400),
    ],
)
def test_malformed_requests_are_rejected(data: bytes, status: int, piece: int | None) -> None:
    events = feed(data, piece=piece)
    assert isinstance(events[-1], Reject)
    assert events[-1].status == status


@pytest.mark.parametrize(
    ("limits", "data", "status"),
    [
        (HTTP1Limits(request_line=50), b"GET /" + b"x" * 60 + b" HTTP/1.1\r\n", 414),
        (HTTP1Limits(fields=2), b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", 431),
        (HTTP1Limits(field_size=20), b"GET / HTTP/1.1\r\nHost: a\r\nA: " + b"1" * 20 + b"\r\n\r\n",
         431),
        (HTTP1Limits(body=3), b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n", 413),
        (HTTP1Limits(body=3), b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         b"\r\n2\r\nab\r\n2\r\ncd\r\n", 413),
    ],
)
def test_limits(limits: HTTP1Limits, data: bytes, status: int) -> None:
    events = feed(data, limits=limits)
    assert isinstance(events[-1], Reject)
    assert events[-1].status == status


def test_unterminated_head_is_bounded() -> None:
    conn = HTTP1Connection(HTTP1Limits(fields=2, field_size=100))
    events: list[Event] = []
    events += conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n")
    for _ in range(10):
        events += conn.receive_data(b"X: " + b"y" * 90 + b"\r\n")
    assert isinstance(events[-1], Reject)
    assert events[-1].status == 431


def test_keep_alive_rules() -> None:
    conn = HTTP1Connection(HTTP1Limits(max_keep_alive_requests=2))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
    heads = [conn.start_response(200, [(b"Content-Length", b"0")]) for _ in range(3)]
    assert [b"Connection: close" in h for h in heads] == [False, False, True]
    # HTTP/1.0 without keep-alive, and a body of unknown length for 1.0: close.
    conn = HTTP1Connection()
    conn.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    assert b"Connection: close" in conn.start_response(200, [])
    assert not conn.keep_alive


def test_response_framing() -> None:
    conn = HTTP1Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = conn.start_response(200, [(b"Content-Type", b"text/plain"),
                                     (b"Connection", b"x"), (b"Transfer-Encoding", b"x")])
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert b"Connection: x" not in head
    assert conn.body(b"abc") == b"3\r\nabc\r\n"
    assert conn.end_response() == b"0\r\n\r\n"
    head = conn.start_response(200, [(b"Content-Length", b"3")])
    assert conn.body(b"abc") == b""
    assert conn.end_response() == b""


def test_end_of_input_mid_body_gives_no_end_event() -> None:
    conn = HTTP1Connection()
    events = conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    events += conn.receive_data(b"")
    assert not any(isinstance(e, EndBody) for e in events)
    assert conn.dead


class ScanCountingBuffer(bytearray):
    """A receive buffer that counts the bytes its searches examine: a cost measure that does
    not depend on how busy the machine is."""

    scanned = 0

    def _range(self, start: SupportsIndex | None, end: SupportsIndex | None) -> tuple[int, int]:
        return slice(start, end).indices(len(self))[:2]

    def find(self, sub: Any, start: SupportsIndex | None = None,
             end: SupportsIndex | None = None) -> int:
        lo, hi = self._range(start, end)
        found = super().find(sub, lo, hi)
        self.scanned += (found + len(sub) if found >= 0 else hi) - lo
        return found

    def rfind(self, sub: Any, start: SupportsIndex | None = None,
              end: SupportsIndex | None = None) -> int:
        lo, hi = self._range(start, end)
        found = super().rfind(sub, lo, hi)
        self.scanned += hi - (found if found >= 0 else lo)
        return found

    def count(self, sub: Any, start: SupportsIndex | None = None,
              end: SupportsIndex | None = None) -> int:
        lo, hi = self._range(start, end)
        self.scanned += hi - lo
        return super().count(sub, lo, hi)

    def strip(self, chars: Any = None) -> bytearray:
        self.scanned += len(self)
        return super().strip(chars)


def counting_connection(limits: HTTP1Limits | None = None) -> tuple[HTTP1Connection,
                                                                    ScanCountingBuffer]:
    conn = HTTP1Connection(limits)
    buf = conn._buf = ScanCountingBuffer()
    return conn, buf


def test_head_cost_is_linear_in_its_size_whatever_the_read_size() -> None:
    # A legal 800 KB head (100 fields of 8 KB) arriving in 256-byte reads: each read must scan
    # its new bytes only, not the whole head again (that was 2.4 s of front CPU).
    fields, size = 100, 8192
    conn, buf = counting_connection(HTTP1Limits(fields=fields + 1, field_size=size + 4))
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(
        b"X-%03d: %s\r\n" % (i, b"v" * (size - 9)) for i in range(fields)) + b"\r\n"
    events: list[Event] = []
    for i in range(0, len(head), 256):
        events += conn.receive_data(head[i:i + 256])
        if not events:
            assert not conn.between_requests  # the front asks after each read
    assert conn._buf is buf
    assert [type(e) for e in events] == [Request, EndBody]
    assert isinstance(events[0], Request)
    assert len(events[0].headers) == fields + 1
    assert len(head) <= buf.scanned <= 2 * len(head)


def test_incomplete_framing_lines_are_scanned_once() -> None:
    # Chunk-size lines (with extensions) and trailers that arrive a byte at a time, up to
    # their limits: the search for their end never goes back over what it has seen.
    limits = HTTP1Limits(field_size=4000)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    ext = b"3;" + b";".join(b"e%d=v" % i for i in range(500)) + b"\r\nabc\r\n"
    trailer = b"0\r\nX-T: " + b"t" * 3980 + b"\r\n\r\n"
    conn, buf = counting_connection(limits)
    events = conn.receive_data(head)
    for i in range(len(ext + trailer)):
        events += conn.receive_data((ext + trailer)[i:i + 1])
    assert [type(e) for e in merge_bodies(events)] == [Request, Body, EndBody]
    assert buf.scanned <= 3 * len(head + ext + trailer)
    # The limits still hold for a line that never ends.
    for line, status in ((b"3;" + b"e" * 5000, 400), (b"0\r\nX-T: " + b"t" * 5000, 431)):
        conn, buf = counting_connection(limits)
        events = conn.receive_data(head)
        for i in range(len(line)):
            events += conn.receive_data(line[i:i + 1])
        assert isinstance(events[-1], Reject)
        assert events[-1].status == status
        assert buf.scanned <= 3 * len(head + line)


@pytest.mark.parametrize("read", [None, 1000], ids=["one-read", "1000-byte-reads"])
def test_tiny_chunks_give_one_body_event_per_read(read: int | None) -> None:
    # 10,000 one-byte chunks: the front pays per read, not per chunk (one Body, one IPC frame).
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"1\r\n%c\r\n" % (48 + i % 10) for i in range(10_000)) + b"0\r\n\r\n")
    conn = HTTP1Connection()
    step = read or len(data)
    reads = 0
    bodies: list[bytes] = []
    ends = 0
    for i in range(0, len(data), step):
        reads += 1
        events = conn.receive_data(data[i:i + step])
        assert sum(isinstance(e, Body) for e in events) <= 1
        bodies += [e.data for e in events if isinstance(e, Body)]
        ends += sum(isinstance(e, EndBody) for e in events)
    assert ends == 1
    assert len(bodies) <= reads
    assert b"".join(bodies) == b"0123456789" * 1000
