"""HTTP/1.1, sans-IO, over httptools (llhttp).

Theory of operation
-------------------
:meth:`HTTP1Connection.receive_data` feeds bytes to llhttp and returns the events they
completed: :class:`Request`, :class:`Body`, :class:`EndBody`, or one :class:`Reject` after which
the connection is dead. llhttp does the grammar (request line, field syntax, chunked framing,
Content-Length/Transfer-Encoding conflicts); this module adds what llhttp leaves to the server:
Apache's ``LimitRequest*`` limits, RFC 9112's Host and request-target rules, forbidden trailer
fields, and keep-alive bookkeeping.

Pipelined requests parse ahead into the event list; the caller reads more bytes only when it
needs more events, so at most one receive buffer is parsed ahead of the request being served.

:meth:`HTTP1Connection.start_response`, :meth:`body` and :meth:`end_response` turn the reply
into bytes, choosing Content-Length, chunked or close-delimited framing and deciding whether
the connection stays open, with Apache's ``ap_set_keepalive`` rules.

llhttp was chosen over h11 by measurement: parsing a 5-field GET costs 1.5 µs against 20 µs.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate

import httptools

from asyncmpm.protocol.events import Body, EndBody, Event, Reject, Request

__all__ = ["HTTP1Connection", "HTTP1Limits", "http_date", "reason_phrase"]

_FORBIDDEN_TRAILERS = frozenset(
    {
        b"content-length", b"transfer-encoding", b"host", b"content-type", b"content-encoding",
        b"content-range", b"trailer", b"authorization", b"cache-control", b"expect",
        b"max-forwards", b"pragma", b"range", b"te", b"set-cookie", b"cookie",
        b"proxy-authorization", b"www-authenticate", b"age", b"expires", b"date", b"location",
        b"retry-after", b"vary", b"warning", b"connection", b"keep-alive", b"upgrade",
    }
)
_NO_BODY_STATUS = frozenset({204, 304})
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"proxy-connection", b"upgrade",
     b"te", b"trailer"}
)

_REASONS: dict[int, bytes] = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently",
    302: b"Found", 303: b"See Other", 304: b"Not Modified", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout", 411: b"Length Required",
    413: b"Content Too Large", 414: b"URI Too Long", 417: b"Expectation Failed",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header value, formatted once per second (it is on every response)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


@dataclass(frozen=True, slots=True)
class HTTP1Limits:
    """Apache's LimitRequest* directives; 0 for fields/body means unlimited."""

    request_line: int = 8190
    fields: int = 100
    field_size: int = 8190
    body: int = 0
    keep_alive: bool = True
    max_keep_alive_requests: int = 100
    keep_alive_timeout: float = 5.0
    server_header: bytes = b"asyncmpm"

    @property
    def max_head(self) -> int:
        """Bytes a request head may take before it is refused without parsing further."""
        fields = self.fields or 1000
        return self.request_line + 2 + fields * (self.field_size + 2) + 2


class _Refuse(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HTTP1Connection:
    """One client connection's HTTP/1.1 state. Not thread-safe; owned by one task."""

    def __init__(self, limits: HTTP1Limits | None = None) -> None:
        self.limits = limits or HTTP1Limits()
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._dead = False
        self.bytes_received = 0
        # Per message.
        self._url: list[bytes] = []
        self._url_len = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = False
        self._head_bytes = 0
        self._trailers = False
        self._body_len = 0
        self._chunked = False
        self._content_length: int | None = None
        # Per response.
        self.requests_started = 0
        self._keepalives = 0
        # (method, version, client asked close, client sent keep-alive) of each parsed request
        # not yet answered: pipelined requests parse ahead of their responses.
        self._unanswered: deque[tuple[bytes, str, bool, bool]] = deque()
        self._req_method = b""
        self._req_version = "1.1"
        self._client_close = True
        self._client_keepalive_token = False
        self._resp_chunked = False
        self._resp_no_body = False
        self._resp_close_delimited = False
        self.keep_alive = True

    # ---------------------------------------------------------------- input
    @property
    def dead(self) -> bool:
        return self._dead

    @property
    def between_requests(self) -> bool:
        """True when no request head has started arriving (idle keep-alive)."""
        return not self._in_head and not self._events

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes (``b""`` = the client closed its side); return the completed events."""
        if self._dead:
            return []
        if not data:
            self._dead = True
            return self._take()
        self.bytes_received += len(data)
        if self._in_head or not self._events:
            self._head_bytes += len(data)
        try:
            self._feed(data)
            if self._in_head and self._head_bytes > self.limits.max_head:
                raise _Refuse(431 if self._url_len < self.limits.request_line else 414,
                              "request head too large")
        except _Refuse as exc:
            self._fail(exc.status, exc.reason)
        except httptools.HttpParserError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _Refuse):
                self._fail(cause.status, cause.reason)
            else:
                self._fail(400, f"malformed request: {exc}")
        return self._take()

    def _feed(self, data: bytes) -> None:
        while data:
            try:
                self._parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as exc:
                # We serve Upgrade/CONNECT requests as ordinary requests: start a fresh
                # parser on whatever followed the completed message.
                offset = int(exc.args[0]) if exc.args else len(data)
                if self._in_head or self._content_length or self._chunked:
                    raise _Refuse(400, "upgrade request with a body") from None
                self._parser = httptools.HttpRequestParser(self)
                data = data[offset:]

    def _take(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _fail(self, status: int, reason: str) -> None:
        self._dead = True
        self._in_head = False
        self._events.append(Reject(1, status, reason))

    # llhttp callbacks ------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = []
        self._url_len = 0
        self._headers = []
        self._in_head = True
        self._trailers = False
        self._body_len = 0
        self._chunked = False
        self._content_length = None

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_len += len(url)
        if self._url_len > self.limits.request_line:
            raise _Refuse(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers:
            lname = name.lower()
            if lname in _FORBIDDEN_TRAILERS:
                raise _Refuse(400, f"forbidden trailer field {name!r}")
            if len(name) + len(value) + 2 > self.limits.field_size:
                raise _Refuse(431, "trailer field too large")
            return
        if len(name) + len(value) + 2 > self.limits.field_size:
            raise _Refuse(431, "request header field too large")
        if self.limits.fields and len(self._headers) >= self.limits.fields:
            raise _Refuse(431, "too many request header fields")
        if b"\x00" in value:
            raise _Refuse(400, "NUL in header value")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        method: bytes = parser.get_method()
        version: str = parser.get_http_version()
        target = b"".join(self._url)
        line_len = len(method) + len(target) + 10
        if line_len > self.limits.request_line:
            raise _Refuse(414, "request line too long")
        if version not in ("1.1", "1.0"):
            raise _Refuse(505, f"HTTP/{version} not supported")
        headers = self._headers
        host_count = 0
        content_types = 0
        te: bytes | None = None
        expect = False
        cl: int | None = None
        for name, value in headers:
            if name == b"host":
                host_count += 1
            elif name == b"content-type":
                content_types += 1
            elif name == b"transfer-encoding":
                te = value if te is None else te + b"," + value
            elif name == b"content-length":
                cl = int(value)  # llhttp has validated it
            elif name == b"expect" and value.strip().lower() == b"100-continue":
                expect = True
        if host_count > 1 or (version == "1.1" and host_count == 0):
            raise _Refuse(400, "a request needs exactly one Host field")
        if content_types > 1:
            raise _Refuse(400, "more than one Content-Type field")
        if te is not None:
            if version == "1.0":
                raise _Refuse(400, "Transfer-Encoding in an HTTP/1.0 request")
            codings = [c.strip().lower() for c in te.split(b",") if c.strip()]
            if not codings or codings[-1] != b"chunked":
                raise _Refuse(400, "chunked must be the final transfer coding")
            self._chunked = True
        self._content_length = cl
        limit = self.limits.body
        if limit and cl is not None and cl > limit:
            raise _Refuse(413, "request body larger than LimitRequestBody")
        path, query = _split_target(method, target)
        self._in_head = False
        self._head_bytes = 0
        self.requests_started += 1
        conn = b",".join(v for n, v in headers if n == b"connection").lower()
        self._unanswered.append((method, version, b"close" in conn, b"keep-alive" in conn))
        self._events.append(
            Request(
                stream_id=1,
                method=method,
                target=target,
                path=path,
                query=query,
                http_version=version,
                headers=headers,
                content_length=cl,
                chunked=self._chunked,
                expect_continue=expect and version == "1.1",
            )
        )
        self._trailers = True

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        limit = self.limits.body
        if limit and self._body_len > limit:
            raise _Refuse(413, "request body larger than LimitRequestBody")
        self._events.append(Body(1, body))

    def on_message_complete(self) -> None:
        self._trailers = False
        self._events.append(EndBody(1))

    # --------------------------------------------------------------- output
    def start_response(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        reason: bytes = b"",
        *,
        stopping: bool = False,
        force_close: bool = False,
    ) -> bytes:
        """Serialize a response head; decides framing and whether the connection persists."""
        if self._unanswered:
            (self._req_method, self._req_version, self._client_close,
             self._client_keepalive_token) = self._unanswered.popleft()
        else:  # an error before any request head was complete
            self._req_method, self._req_version = b"", "1.1"
            self._client_close, self._client_keepalive_token = True, False
        method = self._req_method
        no_body = method == b"HEAD" or status in _NO_BODY_STATUS or status < 200
        length: bytes | None = None
        out_headers: list[bytes] = []
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                length = value
                continue
            if lname in _HOP_BY_HOP:
                continue
            if lname in (b"date", b"server"):
                continue
            out_headers.append(name + b": " + value)
        http11 = self._req_version == "1.1"
        chunked = False
        close_delimited = False
        if not no_body and length is None:
            if http11:
                chunked = True
            else:
                close_delimited = True
        limits = self.limits
        max_req = limits.max_keep_alive_requests
        left = max_req - self._keepalives
        persist = (
            limits.keep_alive
            and not force_close
            and not stopping
            and not close_delimited
            and not self._client_close
            and (max_req == 0 or left > 0)
            and (http11 or self._client_keepalive_token)
        )
        self.keep_alive = persist
        if persist:
            self._keepalives += 1
        self._resp_chunked = chunked
        self._resp_no_body = no_body
        self._resp_close_delimited = close_delimited
        head = [
            b"HTTP/1.1 ", str(status).encode("ascii"), b" ", reason or reason_phrase(status),
            b"\r\nDate: ", http_date(), b"\r\nServer: ", limits.server_header, b"\r\n",
        ]
        for line in out_headers:
            head.append(line)
            head.append(b"\r\n")
        if length is not None:
            head.append(b"Content-Length: " + length + b"\r\n")
        if chunked:
            head.append(b"Transfer-Encoding: chunked\r\n")
        if persist:
            if self._client_keepalive_token:
                timeout = b"%d" % int(limits.keep_alive_timeout)
                head.append(b"Keep-Alive: timeout=" + timeout + b", max=" + b"%d" % left + b"\r\n")
                head.append(b"Connection: Keep-Alive\r\n")
        else:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        return b"".join(head)

    def informational(self, status: int = 100) -> bytes:
        return b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason_phrase(status))

    def body(self, data: bytes) -> bytes:
        if self._resp_no_body or not data:
            return b""
        if self._resp_chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def end_response(self) -> bytes:
        return b"0\r\n\r\n" if self._resp_chunked and not self._resp_no_body else b""

    def error_response(self, status: int, message: str, *, extra: list[tuple[bytes, bytes]]
                       | None = None, close: bool = True) -> bytes:
        """A complete canned error response (head and body)."""
        body = _error_body(status, message)
        head = self.start_response(
            status,
            [(b"Content-Type", b"text/html; charset=iso-8859-1"),
             (b"Content-Length", str(len(body)).encode("ascii")), *(extra or [])],
            force_close=close,
        )
        if self._resp_no_body:
            return head
        return head + body


def _error_body(status: int, message: str) -> bytes:
    reason = reason_phrase(status).decode("ascii")
    text = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
        f"<title>{status} {reason}</title>\n</head><body>\n<h1>{reason}</h1>\n"
        f"<p>{text}</p>\n</body></html>\n"
    ).encode("latin-1", "replace")


def _split_target(method: bytes, target: bytes) -> tuple[bytes, bytes]:
    """Path and query of a request-target, following RFC 9112 §3.2's four forms."""
    if target.startswith(b"/"):
        rest = target
    elif target == b"*":
        if method != b"OPTIONS":
            raise _Refuse(400, "asterisk-form is only for OPTIONS")
        return b"*", b""
    elif method == b"CONNECT":
        return b"", b""
    else:
        scheme, sep, after = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https") or not after:
            raise _Refuse(400, "invalid request-target")
        slash = after.find(b"/")
        qmark = after.find(b"?")
        if slash == -1 or (qmark != -1 and qmark < slash):
            rest = b"/" + after[qmark:] if qmark != -1 else b"/"
        else:
            rest = after[slash:]
    if method == b"CONNECT":
        raise _Refuse(400, "CONNECT needs an authority-form target")
    rest = rest.partition(b"#")[0]
    path, _, query = rest.partition(b"?")
    return path, query
