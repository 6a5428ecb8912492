"""Byte streams for the request path: one small interface, a fast asyncio implementation.

anyio's streams are correct on every backend, but on asyncio each ``send``/``receive`` adds a
scheduling checkpoint and guard bookkeeping: several event-loop iterations per request. On
asyncio we therefore drive sockets with a plain ``asyncio.Protocol`` (data is pushed into a
buffer; ``receive`` returns at once when it has data; ``send`` writes and waits only when the
transport asks for backpressure). On trio the anyio stream is used unchanged. Both honour anyio
cancel scopes, because waiting happens on ordinary futures of the running task.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.abc

__all__ = ["AnyioStream", "AsyncioStream", "ByteStream", "TLSInfo", "accept", "accept_raw",
           "open_tls", "wrap_socket"]

_HIGH_WATER = 256 * 1024  # bytes read ahead of the reader before reading pauses


_DN_NAMES = {"commonName": "CN", "organizationalUnitName": "OU", "organizationName": "O",
             "localityName": "L", "stateOrProvinceName": "ST", "countryName": "C",
             "emailAddress": "emailAddress", "domainComponent": "DC"}


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What a TLS connection negotiated; the child sees it as HTTPS/SSL_* variables."""

    alpn: str | None
    version: str
    cipher: str
    client_subject: str | None  # the verified client certificate's subject, RFC 4514-ish

    @classmethod
    def from_ssl(cls, obj: ssl.SSLObject | ssl.SSLSocket | None) -> TLSInfo:
        if obj is None:
            return cls(None, "", "", None)
        cert = obj.getpeercert()
        subject = None
        if cert and cert.get("subject"):
            # RFC 2253 order and short names, as mod_ssl's SSL_CLIENT_S_DN.
            subject = ",".join(f"{_DN_NAMES.get(k, k)}={v}" for rdn in reversed(cert["subject"])
                               for k, v in rdn)
        cipher = obj.cipher()
        return cls(obj.selected_alpn_protocol(), obj.version() or "",
                   cipher[0] if cipher else "", subject)


class ByteStream(Protocol):
    tls: TLSInfo | None

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Data, or ``b""`` at end of stream; BrokenResourceError if the peer reset."""
        ...

    async def send(self, data: bytes) -> None:
        """Raises BrokenResourceError or ClosedResourceError when the peer is gone."""
        ...

    async def aclose(self) -> None: ...

    def handoff_fd(self) -> tuple[int, int] | None:
        """(fd, address family) of a plaintext TCP connection a slot may be handed; None
        when the connection cannot leave this process (TLS state lives here)."""
        ...

    def suspend(self) -> bytes:
        """Stop reading (a slot owns the connection now); returns bytes read but not taken."""
        ...

    def resume(self) -> None:
        """Read again: the connection is back from its slot."""
        ...


class AnyioStream:
    """Any anyio byte stream (used on trio)."""

    __slots__ = ("stream", "tls")

    def __init__(self, stream: anyio.abc.ByteStream, tls: TLSInfo | None = None) -> None:
        self.stream = stream
        self.tls = tls

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self.stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send(data)
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()

    def handoff_fd(self) -> tuple[int, int] | None:
        if self.tls is not None:
            return None
        try:
            sock = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        except anyio.TypedAttributeLookupError:
            return None
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        return sock.fileno(), int(sock.family)

    def suspend(self) -> bytes:
        return b""  # trio reads only when asked: nothing is buffered, nothing to stop

    def resume(self) -> None:
        pass


class AsyncioStream(asyncio.Protocol):
    """A socket driven by asyncio callbacks; one reader and one writer at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.tls: TLSInfo | None = None
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._lost: BaseException | None = None
        self._closed = False
        self._reading_paused = False
        self._suspended = False
        self._writing_paused = False
        # Set: every chunk read goes straight to it (b"" at EOF), bypassing receive().
        self.on_data: Callable[[bytes], None] | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls = TLSInfo.from_ssl(ssl_object)

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        if self.on_data is not None:
            self.on_data(b"")
        self._eof = True
        self._wake_reader()
        # Keep the write side open: a half-closed client still gets its reply (TLS has no
        # half-close, and asyncio's TLS transport says so when asked).
        return self.tls is None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.on_data is not None:
            self.on_data(b"")
        self._closed = True
        self._lost = exc
        self._eof = True
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ByteStream ------------------------------------------------------------------------
    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._buffer:
            if self._eof:
                if self._lost is not None:
                    raise anyio.BrokenResourceError from self._lost
                return b""
            waiter = asyncio.get_running_loop().create_future()
            self._read_waiter = waiter
            try:
                await waiter
            finally:
                self._read_waiter = None
        data = self._buffer.popleft()
        if len(data) > max_bytes:
            self._buffer.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self._buffered -= len(data)
        if (self._reading_paused and self._buffered < _HIGH_WATER // 2 and self.transport
                and not self._suspended):
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def send(self, data: bytes) -> None:
        transport = self.transport
        if self._closed or transport is None or transport.is_closing():
            raise anyio.BrokenResourceError
        transport.write(data)
        while self._writing_paused:
            if self._closed:
                raise anyio.BrokenResourceError
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiter = waiter
            try:
                await waiter
            finally:
                self._drain_waiter = None

    async def aclose(self) -> None:
        self.close()

    def handoff_fd(self) -> tuple[int, int] | None:
        transport = self.transport
        if self.tls is not None or transport is None or transport.is_closing():
            return None
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        return sock.fileno(), int(sock.family)

    def suspend(self) -> bytes:
        transport = self.transport
        if transport is not None and not self._reading_paused:
            transport.pause_reading()
        self._reading_paused = self._suspended = True
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return data

    @property
    def at_eof(self) -> bool:
        return self._eof

    def take_buffered(self) -> bytes:
        """What was read but not yet received (handed to a new ``on_data``)."""
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return data

    def resume(self) -> None:
        self._suspended = False
        transport = self.transport
        if self._reading_paused and transport is not None and not transport.is_closing():
            self._reading_paused = False
            transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self._closed = True
        self._eof = True
        self._wake_reader()
        self._wake_writer()


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def accept(listener: anyio.abc.SocketListener) -> tuple[ByteStream, tuple[str, int],
                                                               tuple[str, int]]:
    """The next connection as (stream, remote address, local address)."""
    raw, remote, local = await accept_raw(listener)
    if isinstance(raw, socket.socket):
        return await wrap_socket(raw), remote, local
    return AnyioStream(raw), remote, local


async def wrap_socket(sock: socket.socket) -> ByteStream:
    """A connected socket as a ByteStream for the running backend (takes ownership)."""
    sock.setblocking(False)
    if _on_asyncio():
        loop = asyncio.get_running_loop()
        _, protocol = await loop.connect_accepted_socket(AsyncioStream, sock)
        return protocol
    if sock.family == socket.AF_UNIX:
        return AnyioStream(await anyio.abc.UNIXSocketStream.from_socket(sock))
    return AnyioStream(await anyio.abc.SocketStream.from_socket(sock))


async def accept_raw(listener: anyio.abc.SocketListener) -> tuple[
        socket.socket | anyio.abc.SocketStream, tuple[str, int], tuple[str, int]]:
    """The next connection, not yet wrapped: its TLS handshake belongs in its own task."""
    if _on_asyncio():
        raw = listener.extra(anyio.abc.SocketAttribute.raw_socket)
        conn, _ = await asyncio.get_running_loop().sock_accept(raw)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            remote, local = conn.getpeername(), conn.getsockname()
        except OSError:
            conn.close()
            raise
        return conn, remote, local
    try:
        stream = await listener.accept()
    except anyio.BrokenResourceError as exc:
        # anyio's trio listener turns every OSError into BrokenResourceError, which reads as
        # "the listener is gone": hand back the OSError so EMFILE and kin are retried.
        if isinstance(exc.__cause__, OSError):
            raise exc.__cause__ from None
        raise
    remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
    local = stream.extra(anyio.abc.SocketAttribute.local_address)
    return stream, remote, local  # type: ignore[return-value]


async def open_tls(raw: socket.socket | anyio.abc.SocketStream, context: ssl.SSLContext,
                   timeout: float) -> ByteStream:
    """Run the server side of the TLS handshake; raises on failure or after ``timeout``.

    On asyncio the event loop's own TLS transport does the work (C code under uvloop); on
    trio anyio's TLSStream does. Either way the raw connection is closed on failure.
    """
    if isinstance(raw, socket.socket):
        raw.setblocking(False)
        protocol = AsyncioStream()  # uvloop hands back its TLS wrapper, not ours: keep ours
        try:
            with anyio.fail_after(timeout):
                await asyncio.get_running_loop().connect_accepted_socket(
                    lambda: protocol, raw, ssl=context, ssl_handshake_timeout=timeout)
        except BaseException:
            raw.close()
            raise
        return protocol
    from anyio.streams.tls import TLSAttribute, TLSStream

    try:
        with anyio.fail_after(timeout):
            tls = await TLSStream.wrap(raw, server_side=True, ssl_context=context,
                                       standard_compatible=False)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await raw.aclose()
        raise
    return AnyioStream(tls, TLSInfo.from_ssl(tls.extra(TLSAttribute.ssl_object)))
