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
from collections import deque
from typing import Protocol

import anyio
import anyio.abc

__all__ = ["AnyioStream", "AsyncioStream", "ByteStream", "accept", "wrap_socket"]

_HIGH_WATER = 256 * 1024  # bytes read ahead of the reader before reading pauses


class ByteStream(Protocol):
    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Data, or ``b""`` at end of stream; BrokenResourceError if the peer reset."""
        ...

    async def send(self, data: bytes) -> None:
        """Raises BrokenResourceError or ClosedResourceError when the peer is gone."""
        ...

    async def aclose(self) -> None: ...


class AnyioStream:
    """Any anyio byte stream (used on trio)."""

    __slots__ = ("stream",)

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream

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


class AsyncioStream(asyncio.Protocol):
    """A socket driven by asyncio callbacks; one reader and one writer at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._lost: BaseException | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return True  # keep the write side open: a half-closed client still gets its reply

    def connection_lost(self, exc: BaseException | None) -> None:
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
        if self._reading_paused and self._buffered < _HIGH_WATER // 2 and self.transport:
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
    if _on_asyncio():
        raw = listener.extra(anyio.abc.SocketAttribute.raw_socket)
        conn, _ = await asyncio.get_running_loop().sock_accept(raw)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            remote, local = conn.getpeername(), conn.getsockname()
        except OSError:
            conn.close()
            raise
        return await wrap_socket(conn), remote, local
    stream = await listener.accept()
    remote = stream.extra(anyio.abc.SocketAttribute.remote_address)
    local = stream.extra(anyio.abc.SocketAttribute.local_address)
    return AnyioStream(stream), remote, local  # type: ignore[return-value]


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
