"""The structured payloads: a request head (front -> child), a response head and the CPU
times that end a response (back).

The heads are flat lists of NUL-separated fields (see :mod:`asyncmpm.ipc.frames`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from asyncmpm.ipc.frames import pack_fields, unpack_fields
from asyncmpm.protocol.events import Request

__all__ = ["CPU_TIMES", "RequestHead", "ResponseHead", "decode_cpu_times", "split_host"]

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
    def from_request(
        cls,
        request: Request,
        *,
        scheme: bytes,
        remote: tuple[bytes, bytes],
        local: tuple[bytes, bytes],
        configured_name: bytes,
        request_id: bytes,
        stats: bytes,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> RequestHead:
        """The head a slot builds its environ from, the same for HTTP/1.1 and HTTP/2 and
        whether the front or the slot parsed the request."""
        host = b""
        for name, value in request.headers:
            if name == b"host":
                host = value
                break
        server_name, server_port = split_host(host, local[0], local[1])
        if configured_name and not host:
            server_name = configured_name
        if request.chunked:
            body = b"c"
        elif request.content_length:
            body = b"l"
        else:
            body = b""
        headers = request.headers
        if extra_headers:
            headers = [*headers, *extra_headers]
        return cls(
            method=request.method,
            path=request.path,
            query=request.query,
            # WSGI (and CGI) spell it HTTP/2; the access log shows HTTP/2.0 as httpd's does.
            protocol=b"HTTP/2" if request.http_version == "2.0"
            else b"HTTP/" + request.http_version.encode(),
            scheme=scheme,
            remote_addr=remote[0],
            remote_port=remote[1],
            server_name=server_name,
            server_port=server_port,
            body=body,
            content_length=b"%d" % request.content_length if request.content_length else b"",
            expect_continue=request.expect_continue,
            request_id=request_id,
            stats=stats,
            headers=headers,
        )

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


def split_host(host: bytes, local_addr: bytes, local_port: bytes) -> tuple[bytes, bytes]:
    """SERVER_NAME and SERVER_PORT from a Host field (the local address without one)."""
    if not host:
        return local_addr, local_port
    if host.startswith(b"["):
        end = host.find(b"]")
        name = host[: end + 1]
        port = host[end + 2 :] if host[end + 1 : end + 2] == b":" else b""
    else:
        name, _, port = host.partition(b":")
    return name, port or local_port


CPU_TIMES = struct.Struct("!4d")
"""END's payload: the child's ``os.times()`` user, system, children's user and system
seconds, which mod_status shows per slot (httpd's ``ws->times``)."""


def decode_cpu_times(payload: bytes) -> tuple[float, float, float, float] | None:
    if len(payload) != CPU_TIMES.size:
        return None
    u, s, cu, cs = CPU_TIMES.unpack(payload)
    return u, s, cu, cs
