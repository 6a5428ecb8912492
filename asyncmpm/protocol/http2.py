"""HTTP/2, sans-IO: bytes in, the shared events out; h2 does the framing and HPACK.

This layer adds what h2 leaves to the server: translating requests into the same
:class:`~asyncmpm.protocol.events.Request` HTTP/1.1 produces (so nothing behind it knows the
version), and the abuse limits. Those are enforced on a scan of the raw frame headers before h2
sees the bytes, with token buckets in the manner of nghttp2: rapid reset (CVE-2023-44487),
CONTINUATION floods (CVE-2024-27316), SETTINGS/PING/PRIORITY/empty-frame floods. A breach ends
the connection with GOAWAY ``ENHANCE_YOUR_CALM``; a protocol error with the code h2 names.

The LimitRequest* directives hold for each stream as they do for an HTTP/1.1 request, from the
same :class:`~asyncmpm.protocol.http1.HTTP1Limits`: a stream over one gets a
:class:`~asyncmpm.protocol.events.Reject` (413/414/431) instead of its request, or in the middle
of its body, whose rest is then dropped; the connection goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from asyncmpm.protocol.events import (
    Body,
    EndBody,
    Event,
    GoAway,
    Reject,
    Request,
    StreamReset,
    WindowOpened,
)
from asyncmpm.protocol.http1 import HTTP1Limits, http_date

__all__ = ["PREFACE", "HTTP2Connection", "HTTP2Limits"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
_PING, _WINDOW_UPDATE, _CONTINUATION = 0x6, 0x8, 0x9
_END_STREAM, _END_HEADERS, _ACK = 0x1, 0x4, 0x1
_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


@dataclass(frozen=True, slots=True)
class HTTP2Limits:
    """Per-connection limits. Bucket pairs are (burst, refill per second). ``request``: the
    LimitRequest* directives, shared with HTTP/1.1 (``LimitRequestLine`` applies to the request
    line the access log shows, ``LimitRequestFieldSize`` to each field as name: value)."""

    max_concurrent_streams: int = 100
    initial_window_size: int = 65535
    max_header_list_size: int = 65536
    connection_window: int = 1024 * 1024  # request body bytes buffered per connection, at most
    max_header_frames: int = 32  # HEADERS + CONTINUATION frames in one header block
    resets: tuple[float, float] = (1000, 33)  # as nghttp2's stream reset rate limit
    settings: tuple[float, float] = (100, 10)
    pings: tuple[float, float] = (100, 10)
    priorities: tuple[float, float] = (1000, 100)
    empty_frames: tuple[float, float] = (100, 10)
    window_updates: tuple[float, float] = (2000, 200)
    server_header: bytes = b"asyncmpm"
    request: HTTP1Limits = field(default_factory=HTTP1Limits)


class _Bucket:
    """A token bucket: ``take()`` is False once the burst is spent faster than the refill."""

    __slots__ = ("burst", "clock", "last", "rate", "tokens")

    def __init__(self, spec: tuple[float, float], clock: Callable[[], float]) -> None:
        self.burst, self.rate = spec
        self.tokens = self.burst
        self.clock = clock
        self.last = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class HTTP2Connection:
    """One server-side HTTP/2 connection. Call :meth:`data_to_send` after every call."""

    def __init__(self, limits: HTTP2Limits, *, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.limits = limits
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True))
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        self.closed = False  # a GOAWAY went out: no new streams
        self.error: str | None = None  # why we closed, for the log
        self._scan = _FrameScanner(limits, clock)
        self._out = bytearray()  # frames we wrote ourselves, ahead of h2's
        self._last_stream = 2**31 - 1  # after a graceful GOAWAY: the last stream served
        self._body_len: dict[int, int] = {}  # request body bytes so far (LimitRequestBody)
        self._refused: set[int] = set()  # rejected streams: their body is dropped

    # ------------------------------------------------------------------ starting
    def initiate(self) -> None:
        """Our preface (SETTINGS) and a bigger connection window than RFC's 64 KiB."""
        self.h2.initiate_connection()
        self._grow_connection_window()

    def _grow_connection_window(self) -> None:
        extra = self.limits.connection_window - 65535
        if extra > 0:
            self.h2.increment_flow_control_window(extra)

    def initiate_upgrade(self, settings_header: bytes, request: Request) -> list[Event]:
        """``Upgrade: h2c``: the HTTP/1.1 request becomes stream 1, already half-closed."""
        self._scan.preface_pending = True
        try:
            self.h2.initiate_upgrade_connection(settings_header)
        except (h2.exceptions.ProtocolError, ValueError) as exc:
            raise ValueError(f"bad HTTP2-Settings: {exc}") from None
        self._grow_connection_window()
        upgraded = Request(
            stream_id=1, method=request.method, target=request.target, path=request.path,
            query=request.query, http_version="2.0", headers=request.headers,
            content_length=None, chunked=False, expect_continue=False)
        return [upgraded, EndBody(1)]

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; the events they complete."""
        if self.closed and self.error is not None:
            return []
        breach = self._scan.feed(data)
        if breach is not None:
            return self.fail(_CALM, breach)
        try:
            h2_events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return self.fail(code, f"{type(exc).__name__}: {exc}")
        events: list[Event] = []
        for ev in h2_events:
            if getattr(ev, "stream_id", 0) > self._last_stream:
                # Sent before the client saw our GOAWAY: refused (it may retry elsewhere),
                # and nothing of it goes further.
                if isinstance(ev, h2.events.RequestReceived):
                    self.h2.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                continue
            if isinstance(ev, h2.events.RequestReceived):
                request = self._request(ev)
                if request is not None:
                    events.append(request)
            elif isinstance(ev, h2.events.DataReceived):
                assert ev.stream_id is not None
                body = self._body(ev.stream_id, ev.data or b"")
                if body is not None:
                    events.append(body)
                if not isinstance(body, Body) and ev.flow_controlled_length:
                    # Padding only, or dropped: give the window back now.
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                # h2 reports the end of every stream this way, after its HEADERS, DATA or
                # trailers: the one place the body ends.
                self._forget(ev.stream_id)
                events.append(EndBody(ev.stream_id))
            elif isinstance(ev, h2.events.StreamReset):
                self._forget(ev.stream_id)
                events.append(StreamReset(ev.stream_id, int(ev.error_code or 0)))
            elif isinstance(ev, h2.events.WindowUpdated):
                events.append(WindowOpened(ev.stream_id))
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                events.append(WindowOpened(0))  # INITIAL_WINDOW_SIZE may have grown
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closed = True
                events.append(GoAway(int(ev.error_code or 0),
                                     int(ev.last_stream_id or 0)))
            elif isinstance(ev, h2.events.TrailersReceived):
                pass  # WSGI has no place for request trailers; the body ends with the stream
        return events

    def _body(self, stream_id: int, data: bytes) -> Body | Reject | None:
        """The event for body bytes: None when there are none or the stream was refused."""
        if not data or stream_id in self._refused:
            return None
        limit = self.limits.request.body
        if limit:
            size = self._body_len.get(stream_id, 0) + len(data)
            self._body_len[stream_id] = size
            if size > limit:
                self._refused.add(stream_id)
                return Reject(stream_id, 413, "request body larger than LimitRequestBody")
        return Body(stream_id, data)

    def _forget(self, stream_id: int) -> None:
        self._body_len.pop(stream_id, None)
        self._refused.discard(stream_id)

    def _request(self, ev: h2.events.RequestReceived) -> Request | Reject | None:
        assert ev.headers is not None
        pseudo: dict[bytes, bytes] = {}
        headers: list[tuple[bytes, bytes]] = []
        cookies: list[bytes] = []
        for raw_name, raw_value in ev.headers:
            name, value = bytes(raw_name), bytes(raw_value)
            if name.startswith(b":"):
                pseudo[name] = value
            elif name == b"cookie":
                cookies.append(value)  # RFC 9113 8.2.3: crumbs are joined again
            else:
                headers.append((name, value))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        authority = pseudo.get(b":authority")
        if authority and not any(n == b"host" for n, _ in headers):
            headers.insert(0, (b"host", authority))
        method = pseudo.get(b":method", b"GET")
        target = pseudo.get(b":path", b"/")
        if method == b"CONNECT":
            self.h2.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return None
        refusal = _over_limits(self.limits.request, method, target, headers)
        if refusal is not None:
            if ev.stream_ended is None:
                self._refused.add(ev.stream_id)
            return Reject(ev.stream_id, *refusal)
        path, _, query = target.partition(b"?")
        length: int | None = None
        for name, value in headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        ended = ev.stream_ended is not None
        limit = self.limits.request.body
        if limit and not ended and length is not None and length > limit:
            self._refused.add(ev.stream_id)
            return Reject(ev.stream_id, 413, "request body larger than LimitRequestBody")
        return Request(
            stream_id=ev.stream_id, method=method, target=target, path=path, query=query,
            http_version="2.0", headers=headers,
            content_length=length if not ended else None,
            # A body of unknown length is streamed to the child as HTTP/1.1 chunked would be.
            chunked=not ended and length is None,
            expect_continue=any(n == b"expect" and v.lower() == b"100-continue"
                                for n, v in headers) and not ended)

    def fail(self, code: int, why: str) -> list[Event]:
        """End the connection with GOAWAY ``code``; ``why`` is kept for the log."""
        self.error = why
        self.closed = True
        self.h2.close_connection(error_code=code)
        return [GoAway(int(code), 0, local=True)]

    # ------------------------------------------------------------------ output
    def data_to_send(self) -> bytes:
        if self._out:
            out, self._out = bytes(self._out) + self.h2.data_to_send(), bytearray()
            return out
        return self.h2.data_to_send()

    def consumed(self, stream_id: int, size: int) -> None:
        """The child took ``size`` body bytes: let the client send that much more."""
        if size and not self.closed:
            try:
                self.h2.acknowledge_received_data(size, stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass  # reset meanwhile; the connection window was given back by h2

    def informational(self, stream_id: int, status: int = 100) -> None:
        self._safe(self.h2.send_headers, stream_id, [(b":status", b"%d" % status)])

    def start_response(self, stream_id: int, status: int,
                       headers: list[tuple[bytes, bytes]], *, end: bool = False) -> None:
        out = [(b":status", b"%d" % status)]
        seen_date = seen_server = False
        for name, value in headers:
            lname = name.lower()
            if lname in _HOP_BY_HOP:
                continue  # connection-specific fields are malformed in HTTP/2
            seen_date = seen_date or lname == b"date"
            seen_server = seen_server or lname == b"server"
            out.append((lname, value))
        if not seen_date:
            out.append((b"date", http_date()))
        if not seen_server:
            out.append((b"server", self.limits.server_header))
        try:
            self.h2.send_headers(stream_id, out, end_stream=end)
        except h2.exceptions.StreamClosedError:
            pass  # the client reset the stream meanwhile
        except h2.exceptions.ProtocolError:
            # A head HTTP/2 cannot carry (say "TE: gzip"): the client must not wait for it.
            self.reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)

    def window(self, stream_id: int) -> int:
        """Bytes of body we may send on the stream now."""
        try:
            return min(self.h2.local_flow_control_window(stream_id),
                       self.h2.max_outbound_frame_size * 4)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return -1

    def send_body(self, stream_id: int, data: bytes) -> None:
        """Send ``data``: the caller keeps it within :meth:`window`."""
        size = self.h2.max_outbound_frame_size
        for start in range(0, len(data), size):
            self._safe(self.h2.send_data, stream_id, data[start:start + size])

    def end_response(self, stream_id: int) -> None:
        self._safe(self.h2.end_stream, stream_id)

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        self._forget(stream_id)
        self._safe(self.h2.reset_stream, stream_id, code)

    def goaway(self) -> None:
        """Graceful: no stream above the last one seen will be served; open ones finish.

        The frame is written here rather than by h2, whose state machine would refuse the
        frames (WINDOW_UPDATE, SETTINGS ACK...) those streams still need after it.
        """
        if not self.closed:
            self.closed = True
            self._last_stream = self.h2.highest_inbound_stream_id
            self._out += self.h2.data_to_send()
            self._out += GoAwayFrame(0, last_stream_id=self._last_stream,
                                     error_code=0).serialize()

    def stream_open(self, stream_id: int) -> bool:
        stream = self.h2.streams.get(stream_id)
        return stream is not None and not stream.closed

    @staticmethod
    def _safe(method: Callable[..., object], *args: object, **kwargs: object) -> None:
        try:
            method(*args, **kwargs)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client reset the stream meanwhile: nothing to send it


def _over_limits(limits: HTTP1Limits, method: bytes, target: bytes,
                 headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | None:
    """The status and reason for a head over a LimitRequest* directive, counted as HTTP/1.1
    counts the same request: the line ``METHOD target HTTP/2.0``, each field with ": " and
    CRLF, the Host built from :authority and the joined Cookie as one field each."""
    if len(method) + len(target) + 10 > limits.request_line:
        return 414, "request line too long"
    if limits.fields and len(headers) > limits.fields:
        return 431, "too many request header fields"
    if any(len(name) + len(value) + 4 > limits.field_size for name, value in headers):
        return 431, "request header field too large"
    return None


_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                         b"transfer-encoding", b"upgrade"})


class _FrameScanner:
    """Reads frame headers off the raw byte stream, ahead of h2, to count and limit."""

    def __init__(self, limits: HTTP2Limits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.preface_pending = True
        self._need = len(PREFACE)
        self._head = b""  # a partial frame header
        self._skip = 0  # payload bytes of the current frame still to pass
        self._block_frames = 0  # frames of the header block being received
        self._block_bytes = 0
        self.resets = _Bucket(limits.resets, clock)
        self.settings = _Bucket(limits.settings, clock)
        self.pings = _Bucket(limits.pings, clock)
        self.priorities = _Bucket(limits.priorities, clock)
        self.empty = _Bucket(limits.empty_frames, clock)
        self.windows = _Bucket(limits.window_updates, clock)

    def feed(self, data: bytes) -> str | None:
        """Scan ``data``; the reason the connection must end, if it must."""
        view = memoryview(data)
        pos = 0
        if self.preface_pending:
            take = min(self._need, len(view))
            pos += take
            self._need -= take
            if self._need:
                return None
            self.preface_pending = False
        while pos < len(view):
            if self._skip:
                step = min(self._skip, len(view) - pos)
                self._skip -= step
                pos += step
                continue
            want = 9 - len(self._head)
            self._head += bytes(view[pos:pos + want])
            pos += want
            if len(self._head) < 9:
                return None
            head, self._head = self._head, b""
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            self._skip = length
            breach = self._frame(ftype, flags, length)
            if breach is not None:
                return breach
        return None

    def _frame(self, ftype: int, flags: int, length: int) -> str | None:
        if ftype in (_HEADERS, _CONTINUATION):
            if ftype == _HEADERS:
                self._block_frames = self._block_bytes = 0
            self._block_frames += 1
            self._block_bytes += length
            if self._block_frames > self.limits.max_header_frames:
                return "CONTINUATION flood: too many frames in one header block"
            if self._block_bytes > self.limits.max_header_list_size:
                return "header block larger than the header list size limit"
            if length == 0 and not flags & _END_HEADERS and not self.empty.take():
                return "flood of empty header frames"
        elif ftype == _DATA:
            if length == 0 and not flags & _END_STREAM and not self.empty.take():
                return "flood of empty DATA frames"
        elif ftype == _RST_STREAM:
            if not self.resets.take():
                return "rapid reset: too many RST_STREAM frames"
        elif ftype == _SETTINGS:
            if not flags & _ACK and not self.settings.take():
                return "SETTINGS flood"
        elif ftype == _PING:
            if not flags & _ACK and not self.pings.take():
                return "PING flood"
        elif ftype == _PRIORITY:
            if not self.priorities.take():
                return "PRIORITY flood"
        elif ftype == _WINDOW_UPDATE and not self.windows.take():
            return "WINDOW_UPDATE flood"
        return None
