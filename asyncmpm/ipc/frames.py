"""Sans-IO frame codec shared by the front loop (async) and the children (blocking sockets).

A frame is ``!IB`` (payload length, type) followed by the payload. Structured payloads
(request and response heads) are NUL-separated byte fields: HTTP forbids NUL in every field we
carry, so the split is unambiguous, and encoding a request costs one ``join``. Nothing is
pickled: a child never deserializes anything but bytes.

A small request is one write (REQUEST, or REQUEST+BODY+BODY_END) and its reply one write
(START+DATA+END), so a hello-world round trip is one send and one receive on each side.
Bodies stream as BODY/DATA frames; backpressure is the kernel's, because every slot has its own
socketpair and each side stops reading when it cannot pass data on.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence

__all__ = [
    "ABORT_FRAME",
    "BODY_END_FRAME",
    "BODY_GONE_FRAME",
    "HEADER",
    "MAX_DATA",
    "MAX_FRAME",
    "FrameDecoder",
    "FrameType",
    "encode",
    "pack_fields",
    "unpack_fields",
]

HEADER = struct.Struct("!IB")
MAX_FRAME = 16 * 1024 * 1024  # the decoder refuses more: a peer that sends it is broken
# A child splits a response chunk into DATA frames of at most this: any chunk an app yields
# then fits MAX_FRAME, and the front relays a huge chunk piecewise instead of buffering it whole.
MAX_DATA = 1024 * 1024


class FrameType(enum.IntEnum):
    # front -> child
    REQUEST = 1  # request head fields (see asyncmpm.dispatch.slot)
    BODY = 2  # request body bytes
    BODY_END = 3  # end of request body; payload b"!" if the client went away
    STOP = 4  # finish and exit
    ABORT = 5  # the client is gone: stop producing the response
    HANDOFF = 6  # a client connection for the slot to serve; its fd rides along (SCM_RIGHTS)
    # child -> front
    READY = 16  # slot ready; payload: pid
    START = 17  # status line then header name/value fields
    DATA = 18  # response body bytes
    END = 19  # response complete; slot free again
    CONTINUE = 20  # the app started reading a body sent with Expect: 100-continue
    BOOT_ERROR = 21  # the app could not be loaded; payload: traceback text
    FAILED = 22  # the response broke after START (app raised mid-stream)
    HANDBACK = 23  # a handed-off connection is idle or finished (see asyncmpm.ipc.handoff)


def encode(kind: FrameType, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind) + payload


# The front loop's fixed frames, encoded once.
BODY_END_FRAME = encode(FrameType.BODY_END)
BODY_GONE_FRAME = encode(FrameType.BODY_END, b"!")  # the client's body broke off
ABORT_FRAME = encode(FrameType.ABORT)  # the client is gone: stop producing


def pack_fields(fields: Sequence[bytes]) -> bytes:
    """Join fields with NUL; raises ValueError if a field itself holds a NUL."""
    joined = b"\x00".join(fields)
    if joined.count(b"\x00") != len(fields) - 1:
        raise ValueError("NUL byte in a field")
    return joined


def unpack_fields(payload: bytes) -> list[bytes]:
    return payload.split(b"\x00")


class FrameDecoder:
    """Bytes in, ``(type, payload)`` frames out; keeps partial frames between feeds."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        size = HEADER.size
        while end - pos >= size:
            length, kind = unpack(buf, pos)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            stop = pos + size + length
            if stop > end:
                break
            frames.append((kind, buf[pos + size : stop]))
            pos = stop
        self._buf = buf[pos:] if pos < end else b""
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)
