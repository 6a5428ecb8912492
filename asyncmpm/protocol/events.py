"""The events HTTP/1.1 and HTTP/2 turn bytes into, and the ones they turn into bytes.

Every event carries a ``stream_id``: always 1 on HTTP/1.1, the stream on HTTP/2. The last
three (StreamReset, WindowOpened, GoAway) only HTTP/2 produces: multiplexing and flow control
have no HTTP/1.1 counterpart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Body",
    "ConnectionClosed",
    "Data",
    "EndBody",
    "EndResponse",
    "Event",
    "GoAway",
    "InfoResponse",
    "Reject",
    "Request",
    "Response",
    "StreamReset",
    "WindowOpened",
]

Headers = list[tuple[bytes, bytes]]


# --- from the client -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """A request head. ``headers`` keep their order; names are lower-case bytes."""

    stream_id: int
    method: bytes
    target: bytes
    path: bytes
    query: bytes
    http_version: str
    headers: Headers
    content_length: int | None
    chunked: bool
    expect_continue: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def request_line(self) -> str:
        return f"{self.method.decode('latin-1')} {self.target.decode('latin-1')} " \
               f"HTTP/{self.http_version}"


@dataclass(frozen=True, slots=True)
class Body:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class EndBody:
    """The request body is complete (sent right after :class:`Request` when there is none)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class Reject:
    """The client broke the protocol or a limit: answer ``status`` (if possible) and close."""

    stream_id: int
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed its side."""

    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The client cancelled one stream (RST_STREAM); the others go on."""

    stream_id: int
    error_code: int = 0


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """Flow control lets more response data out (stream 0: the whole connection)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    """The connection is ending: the client said so, or ``local``ly we broke it off."""

    error_code: int
    last_stream_id: int
    local: bool = False
    stream_id: int = 0


# --- to the client ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InfoResponse:
    stream_id: int
    status: int = 100


@dataclass(frozen=True, slots=True)
class Response:
    stream_id: int
    status: int
    headers: Headers
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class Data:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class EndResponse:
    stream_id: int


Event = Request | Body | EndBody | Reject | ConnectionClosed | StreamReset | WindowOpened | GoAway
