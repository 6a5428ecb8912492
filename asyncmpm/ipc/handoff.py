"""What travels with a connection handed to a slot, and what comes back with it (sans-IO).

The front loop reads a request head, then hands the whole connection to a slot: a HANDOFF frame
whose payload is a :class:`Handoff` and whose first byte carries the socket (SCM_RIGHTS). The
slot serves that request and every following one that is already there, writing straight to
the client; when the connection goes quiet (or must close) it answers with a HANDBACK frame: a
:class:`Handback` that says whether the connection may be kept, what the slot read but did not
use (the start of a next request), and one small record per request served, which the front
needs for its totals and metrics. No per-request message crosses the channel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from asyncmpm.ipc.frames import pack_fields, unpack_fields

__all__ = ["Handback", "Handoff", "Served"]

_FIXED = 9  # NUL-separated fields before the raw bytes


@dataclass(frozen=True, slots=True)
class Handoff:
    """The connection's addresses and history, and the bytes the front already read.

    ``family`` is the socket's address family, so the slot wraps the fd without asking the
    kernel; ``keepalives`` continues MaxKeepAliveRequests across slots; ``data`` starts at the
    first byte of the request the front parsed (it may hold more: a body, pipelined requests).
    """

    family: int
    remote_addr: bytes
    remote_port: bytes
    local_addr: bytes
    local_port: bytes
    server_name: bytes
    keepalives: int
    request_id: bytes
    stats: bytes
    data: bytes

    def encode(self) -> bytes:
        fields = [
            b"%d" % self.family, self.remote_addr, self.remote_port, self.local_addr,
            self.local_port, self.server_name, b"%d" % self.keepalives, self.request_id,
            self.stats,
        ]
        return pack_fields(fields) + b"\x00" + self.data

    @classmethod
    def decode(cls, payload: bytes) -> Handoff:
        f = payload.split(b"\x00", _FIXED)
        if len(f) != _FIXED + 1:
            raise ValueError("malformed handoff")
        return cls(int(f[0]), f[1], f[2], f[3], f[4], f[5], int(f[6]), f[7], f[8], f[9])


_SERVED = struct.Struct("!HQQ")  # status, body bytes, microseconds


@dataclass(frozen=True, slots=True)
class Served:
    """One request a slot served on a handed-off connection."""

    status: int
    body_bytes: int
    duration_us: int


@dataclass(frozen=True, slots=True)
class Handback:
    """``keep``: the connection may carry another request (the front holds it idle);
    otherwise the slot has finished it (response complete, write side shut) and the front
    closes its copy. ``leftover``: bytes read past the last request (an incomplete next head).
    ``cpu_times``: the child's ``os.times()[:4]`` (mod_status's CPU column)."""

    keep: bool
    keepalives: int
    leftover: bytes = b""
    served: tuple[Served, ...] = ()
    cpu_times: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    last_request: bytes = b""

    def encode(self) -> bytes:
        records = b"".join(_SERVED.pack(s.status, s.body_bytes, s.duration_us)
                           for s in self.served)
        head = pack_fields([
            b"k" if self.keep else b"c", b"%d" % self.keepalives,
            b"%d" % len(self.served), b"%r,%r,%r,%r" % self.cpu_times,
            self.last_request.replace(b"\x00", b""),
        ])
        return b"%d\x00" % len(head) + head + records + self.leftover

    @classmethod
    def decode(cls, payload: bytes) -> Handback:
        size_text, sep, rest = payload.partition(b"\x00")
        if not sep or not size_text.isdigit():
            raise ValueError("malformed handback")
        size = int(size_text)
        f = unpack_fields(rest[:size])
        if len(f) != 5 or f[0] not in (b"k", b"c"):
            raise ValueError("malformed handback")
        count = int(f[2])
        start = size
        end = start + count * _SERVED.size
        if end > len(rest):
            raise ValueError("truncated handback")
        served = tuple(Served(*_SERVED.unpack_from(rest, start + i * _SERVED.size))
                       for i in range(count))
        u, s, cu, cs = (float(x) for x in f[3].split(b","))
        return cls(f[0] == b"k", int(f[1]), bytes(rest[end:]), served, (u, s, cu, cs), f[4])
