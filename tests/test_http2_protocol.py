"""The HTTP/2 layer without sockets: an h2 client's bytes in, the shared events out."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import HeadersFrame, PingFrame

from asyncmpm.protocol.events import (
    Body,
    EndBody,
    GoAway,
    Reject,
    Request,
    StreamReset,
    WindowOpened,
)
from asyncmpm.protocol.http1 import HTTP1Limits
from asyncmpm.protocol.http2 import HTTP2Connection, HTTP2Limits


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pair(limits: HTTP2Limits | None = None,
         clock: Clock | None = None) -> tuple[HTTP2Connection, h2.connection.H2Connection]:
    server = HTTP2Connection(limits or HTTP2Limits(), clock=clock or Clock())
    server.initiate()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    assert server.receive_data(client.data_to_send()) == [WindowOpened(0)]  # its SETTINGS
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the client's SETTINGS ACK
    return server, client


HEADERS = [(":method", "POST"), (":path", "/a/b?x=1"), (":scheme", "https"),
           (":authority", "example.com"), ("cookie", "a=1"), ("x-one", "1"), ("cookie", "b=2")]


def test_request_maps_to_the_shared_event() -> None:
    server, client = pair()
    client.send_headers(1, HEADERS)
    client.send_data(1, b"hello ")
    client.send_data(1, b"world", end_stream=True)
    events = server.receive_data(client.data_to_send())
    request = events[0]
    assert isinstance(request, Request)
    assert (request.method, request.path, request.query) == (b"POST", b"/a/b", b"x=1")
    assert request.http_version == "2.0"
    assert request.request_line == "POST /a/b?x=1 HTTP/2.0"
    assert request.headers[0] == (b"host", b"example.com")
    assert (b"cookie", b"a=1; b=2") in request.headers  # crumbs joined (RFC 9113 8.2.3)
    assert request.chunked
    assert request.has_body
    assert events[1:] == [Body(1, b"hello "), Body(1, b"world"), EndBody(1)]


def test_bodiless_request_ends_at_once_and_response_goes_out() -> None:
    server, client = pair()
    client.send_headers(1, [*HEADERS[:4]], end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert isinstance(events[0], Request)
    assert not events[0].has_body
    assert events[1] == EndBody(1)
    server.start_response(1, 200, [(b"Content-Type", b"text/plain"),
                                   (b"Connection", b"keep-alive")])
    assert server.window(1) > 0
    server.send_body(1, b"x" * 40000)  # more than one frame
    server.end_response(1)
    got = client.receive_data(server.data_to_send())
    response = got[0]
    assert isinstance(response, h2.events.ResponseReceived)
    headers = dict(response.headers or [])
    assert headers[b":status"] == b"200"
    assert b"connection" not in headers  # connection-specific: not allowed in HTTP/2
    assert b"date" in headers
    assert b"server" in headers
    data = b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived))
    assert data == b"x" * 40000
    assert isinstance(got[-1], h2.events.StreamEnded)


def test_flow_control_is_backpressure() -> None:
    server, client = pair(HTTP2Limits(initial_window_size=1000, connection_window=65535))
    client.send_headers(1, HEADERS)
    client.send_data(1, b"a" * 1000)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.local_flow_control_window(1) == 0  # the client may send no more
    server.consumed(1, 1000)  # the child took it
    client.receive_data(server.data_to_send())
    assert client.local_flow_control_window(1) == 1000


def test_window_update_and_reset_events() -> None:
    server, client = pair()
    client.send_headers(1, HEADERS[:4], end_stream=True)
    server.receive_data(client.data_to_send())
    client.increment_flow_control_window(1000, stream_id=1)
    client.reset_stream(1, error_code=8)
    events = server.receive_data(client.data_to_send())
    assert WindowOpened(1) in events
    assert StreamReset(1, 8) in events


def test_ping_flood_closes_with_enhance_your_calm() -> None:
    server, client = pair()
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    server.receive_data(ping * 100)  # the burst
    assert server.error is None
    assert server.receive_data(ping) == [GoAway(0xB, 0, local=True)]
    assert "PING flood" in (server.error or "")
    ended = client.receive_data(server.data_to_send())
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 0xB
               for e in ended)


def test_rapid_reset_closes_with_enhance_your_calm() -> None:
    server, client = pair()
    for i in range(1001):
        client.send_headers(2 * i + 1, HEADERS[:4], end_stream=True)
        client.reset_stream(2 * i + 1, error_code=8)
    events = server.receive_data(client.data_to_send())
    assert events[-1] == GoAway(0xB, 0, local=True)
    assert "rapid reset" in (server.error or "")
    assert not any(isinstance(e, Request) for e in events)  # cut off before h2 parsed them


def test_buckets_refill_with_time() -> None:
    clock = Clock()
    server, _ = pair(clock=clock)
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    for _ in range(20):
        server.receive_data(ping * 10)
        clock.now += 1.0  # 10 per second is the refill rate
    assert server.error is None


def test_graceful_goaway_lets_open_streams_finish() -> None:
    server, client = pair()
    client.send_headers(1, HEADERS[:4], end_stream=True)
    server.receive_data(client.data_to_send())
    server.goaway()
    server.goaway()  # once only
    got = client.receive_data(server.data_to_send())
    goaway = [e for e in got if isinstance(e, h2.events.ConnectionTerminated)]
    assert [(e.error_code, e.last_stream_id) for e in goaway] == [(0, 1)]
    # Raw frames from here: h2's own client refuses anything after a GOAWAY.
    late = HEADERS[:4]
    block = client.encoder.encode(late)
    crossing = HeadersFrame(3, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    assert server.receive_data(crossing) == []  # crossed our GOAWAY: refused, not dispatched
    server.start_response(1, 204, [], end=True)
    out = server.data_to_send()
    frames = []
    while out:
        length = int.from_bytes(out[:3], "big")
        frames.append((out[3], int.from_bytes(out[5:9], "big") & 0x7FFFFFFF))
        out = out[9 + length:]
    assert (0x3, 3) in frames  # RST_STREAM REFUSED_STREAM for the late one
    assert (0x1, 1) in frames  # the open stream's response still goes out
    assert server.closed
    assert server.error is None


def test_protocol_error_names_its_code() -> None:
    server, _ = pair()
    events = server.receive_data(b"\x00\x00\x01\x04\x00\x00\x00\x00\x00\x00")  # bad SETTINGS
    assert len(events) == 1
    assert isinstance(events[0], GoAway)
    assert events[0].error_code in (0x1, 0x6)  # PROTOCOL_ERROR / FRAME_SIZE_ERROR
    assert server.error


def test_a_head_http2_cannot_carry_resets_the_stream() -> None:
    server, client = pair()
    client.send_headers(1, HEADERS[:4], end_stream=True)
    server.receive_data(client.data_to_send())
    server.start_response(1, 200, [(b"TE", b"gzip")])
    server.send_body(1, b"ignored")
    server.end_response(1)
    got = client.receive_data(server.data_to_send())
    assert [(type(e).__name__, getattr(e, "error_code", None)) for e in got] == [
        ("StreamReset", 2)]  # INTERNAL_ERROR, and nothing else on that stream


def test_limit_request_directives_refuse_the_stream_not_the_connection() -> None:
    """The same counts as HTTP/1.1: the request line, each field (Host from :authority and
    the joined Cookie included), the body by content-length or as it arrives."""
    request = HTTP1Limits(request_line=40, fields=4, field_size=30, body=10)
    server, client = pair(HTTP2Limits(request=request))
    sid = iter(range(1, 100, 2))

    def first(headers: list[tuple[str, str]], body: bytes | None = None) -> object:
        stream = next(sid)
        client.send_headers(stream, headers, end_stream=body is None)
        if body is not None:
            client.send_data(stream, body, end_stream=True)
        return server.receive_data(client.data_to_send())[0]

    base = HEADERS[:4]
    assert isinstance(first(base + [("x", "y")] * 3), Request)  # host + 3 fields = 4
    assert first(base + [("x", "y")] * 4) == Reject(3, 431, "too many request header fields")
    assert first([*base, ("x-big", "v" * 30)]) == Reject(
        5, 431, "request header field too large")
    assert first([base[0], (":path", "/" + "p" * 40), *base[2:]]) == Reject(
        7, 414, "request line too long")
    assert first([*base, ("content-length", "11")], b"x" * 11) == Reject(
        9, 413, "request body larger than LimitRequestBody")
    assert next(sid) == 11
    client.send_headers(11, base)
    client.send_data(11, b"x" * 6)
    client.send_data(11, b"x" * 6)
    client.send_data(11, b"x" * 6, end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert events[1:] == [Body(11, b"x" * 6),
                          Reject(11, 413, "request body larger than LimitRequestBody"),
                          EndBody(11)]  # the rest is dropped
    assert server.error is None
    assert isinstance(first(base, b"x" * 10), Request)  # at the limit: served
