"""The structured payloads: a request head (front -> child), a response head and the CPU
times that end a response (back).

The heads are flat lists of NUL-separated fields (see :mod:`asyncmpm.ipc.frames`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from asyncmpm.ipc.frames import pack_fields, unpack_fields

__all__ = ["CPU_TIMES", "RequestHead", "ResponseHead", "decode_cpu_times"]

_FIXED = 14  # fields before the header pairs


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What a child needs to build a WSGI environ. ``body`` is ``b""`` (none), ``b"l"``
    (Content-Length) or ``b"c"`` (chunked, length unknown)."""

    method: bytes
    path: bytes
    query: bytes
    protocol: bytes
    scheme: bytes
    remote_addr: bytes
    remote_port: bytes
    server_name: bytes
    server_port: bytes
    body: bytes
    content_length: bytes
    expect_continue: bool
    request_id: bytes
    stats: bytes  # "busy,idle,processes" for the demo page; cheap to carry
    headers: list[tuple[bytes, bytes]]

    def encode(self) -> bytes:
        fields = [
            self.method, self.path, self.query, self.protocol, self.scheme, self.remote_addr,
            self.remote_port, self.server_name, self.server_port, self.body,
            self.content_length, b"1" if self.expect_continue else b"", self.request_id,
            self.stats,
        ]
        for name, value in self.headers:
            fields.append(name)
            fields.append(value)
        return pack_fields(fields)

    @classmethod
    def decode(cls, payload: bytes) -> RequestHead:
        f = unpack_fields(payload)
        if len(f) < _FIXED or (len(f) - _FIXED) % 2:
            raise ValueError("malformed request head")
        rest = f[_FIXED:]
        return cls(
            f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11] == b"1",
            f[12], f[13], list(zip(rest[::2], rest[1::2], strict=True)),
        )


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]

    def encode(self) -> bytes:
        fields = [b"%d" % self.status, self.reason]
        for name, value in self.headers:
            fields.append(name)
            fields.append(value)
        return pack_fields(fields)

    @classmethod
    def decode(cls, payload: bytes) -> ResponseHead:
        """Decode, and refuse what the child should never send (defence in depth: the child
        validates the app's head): a status outside 200-599, a CR or LF anywhere (response
        splitting), a Content-Length that is not digits. One scan of the payload, one pass
        over the names."""
        if b"\r" in payload or b"\n" in payload:
            raise ValueError("CR or LF in a response head")
        f = unpack_fields(payload)
        if len(f) < 2 or len(f) % 2:
            raise ValueError("malformed response head")
        code = f[0]
        if len(code) != 3 or not code.isdigit() or not b"200" <= code <= b"599":
            raise ValueError(f"invalid response status {code!r}")
        rest = f[2:]
        headers = list(zip(rest[::2], rest[1::2], strict=True))
        for name, value in headers:
            if len(name) == 14 and name.lower() == b"content-length" and not value.isdigit():
                raise ValueError(f"invalid Content-Length {value!r}")
        return cls(int(code), f[1], headers)


CPU_TIMES = struct.Struct("!4d")
"""END's payload: the child's ``os.times()`` user, system, children's user and system
seconds, which mod_status shows per slot (httpd's ``ws->times``)."""


def decode_cpu_times(payload: bytes) -> tuple[float, float, float, float] | None:
    if len(payload) != CPU_TIMES.size:
        return None
    u, s, cu, cs = CPU_TIMES.unpack(payload)
    return u, s, cu, cs
