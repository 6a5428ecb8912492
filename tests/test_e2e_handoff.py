"""The request path: plaintext HTTP/1.1 connections handed to slots and back.

Real sockets and children, on every backend and both MPMs: a connection served by one slot,
handed back, then served by another; pipelining across a handback; a slot that dies before or
after its response started; a hung slot; bodies larger than a child's memory could hold; a
slow body read by the slot itself.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import anyio
import anyio.abc
import pytest

from asyncmpm import MPM, Server
from tests.conftest import serving

pytestmark = pytest.mark.anyio

_GET = b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n"


async def _connect(server: Server) -> anyio.abc.SocketStream:
    return await anyio.connect_tcp(*server.addresses[0])


async def _read_response(stream: anyio.abc.SocketStream, buf: bytearray) -> tuple[bytes, bytes]:
    """One Content-Length response from ``stream`` (``buf`` keeps what follows it)."""
    with anyio.fail_after(20):
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive()
            buf += chunk
        head, _, _ = bytes(buf).partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        need = len(head) + 4 + length
        while len(buf) < need:
            buf += await stream.receive()
        body = bytes(buf[len(head) + 4 : need])
        del buf[:need]
        return head, body


async def _read_to_close(stream: anyio.abc.SocketStream) -> bytes:
    data = b""
    with anyio.fail_after(20):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


def _served_by(body: bytes) -> tuple[int, int]:
    info: dict[str, Any] = json.loads(body)
    return int(info["pid"]), int(info["thread"])


async def test_keep_alive_connection_moves_between_slots(mpm: MPM) -> None:
    """Served by one slot, handed back idle, then served by another slot."""
    two_slots: dict[str, Any] = (
        {"start_servers": 2, "min_spare_servers": 1, "max_spare_servers": 2,
         "max_request_workers": 2} if mpm is MPM.PREFORK else
        {"start_servers": 1, "threads_per_child": 2, "server_limit": 1,
         "min_spare_threads": 1, "max_spare_threads": 2, "max_request_workers": 2})
    async with serving(mpm=mpm, **two_slots) as server:
        conn = await _connect(server)
        other = await _connect(server)
        buf = bytearray()
        servers: set[tuple[int, int]] = set()
        # While a slow request on another connection holds one of the two slots, our next
        # request can only go to the other one; a few rounds see both (the idle stack is
        # LIFO, so usually the first).
        for _ in range(6):
            await conn.send(_GET)
            head, body = await _read_response(conn, buf)
            assert head.startswith(b"HTTP/1.1 200")
            servers.add(_served_by(body))
            if len(servers) == 2:
                break
            # The response reaches us before the slot hands the connection back.
            await server.wait_status(lambda s: s.busy_workers == 0, timeout=10)
            await other.send(b"GET /whoami?sleep=0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
            await server.wait_status(lambda s: s.busy_workers >= 1, timeout=10)
            await conn.send(_GET)
            head, body = await _read_response(conn, buf)
            servers.add(_served_by(body))
            await _read_response(other, bytearray())
        assert len(servers) == 2
        await other.aclose()
        await conn.aclose()


async def test_pipelined_requests_and_a_head_split_across_a_handback() -> None:
    async with serving() as server:
        conn = await _connect(server)
        buf = bytearray()
        # Three whole requests in one write: one slot serves them in order.
        await conn.send(b"".join(
            b"GET /environ/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(3)))
        for i in range(3):
            _, body = await _read_response(conn, buf)
            assert json.loads(body)["PATH_INFO"] == f"/environ/{i}"
        # A request and half of the next: the slot serves the first and hands the
        # connection back with the half it read; the rest arrives later.
        second = b"GET /environ/late HTTP/1.1\r\nHost: t\r\n\r\n"
        await conn.send(b"GET /environ/first HTTP/1.1\r\nHost: t\r\n\r\n" + second[:20])
        _, body = await _read_response(conn, buf)
        assert json.loads(body)["PATH_INFO"] == "/environ/first"
        await server.wait_status(lambda s: s.busy_workers == 0, timeout=10)
        await conn.send(second[20:])
        _, body = await _read_response(conn, buf)
        assert json.loads(body)["PATH_INFO"] == "/environ/late"
        await conn.aclose()


async def test_slot_killed_before_its_response_gives_502(mpm: MPM) -> None:
    async with serving(mpm=mpm) as server:
        conn = await _connect(server)
        await conn.send(b"GET /whoami?sleep=5 HTTP/1.1\r\nHost: t\r\n\r\n")
        snap = await server.wait_status(lambda s: s.busy_workers >= 1, timeout=10)
        pid = next(p.pid for p in snap.processes if any(t.state.is_busy for t in p.threads))
        os.kill(pid, signal.SIGKILL)
        data = await _read_to_close(conn)
        assert data.startswith(b"HTTP/1.1 502 ")
        await conn.aclose()
        # The connection that was lost cost nothing else: the next one is served.
        other = await _connect(server)
        await other.send(_GET)
        head, _ = await _read_response(other, bytearray())
        assert head.startswith(b"HTTP/1.1 200")
        await other.aclose()


async def test_slot_killed_after_its_response_started_closes_the_connection(mpm: MPM) -> None:
    async with serving(mpm=mpm) as server:
        conn = await _connect(server)
        await conn.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        with anyio.fail_after(10):
            while b"chunk 0" not in data:
                data += await conn.receive()
        snap = server.status()
        pid = next(p.pid for p in snap.processes if any(t.state.is_busy for t in p.threads))
        os.kill(pid, signal.SIGKILL)
        data += await _read_to_close(conn)
        assert data.startswith(b"HTTP/1.1 200 ")
        assert b"502" not in data  # nothing is appended to a response already on its way
        assert not data.endswith(b"0\r\n\r\n")  # and it is not passed off as complete
        await conn.aclose()


async def test_hung_handed_off_request_gets_504_and_its_child_is_replaced(mpm: MPM) -> None:
    async with serving(mpm=mpm, timeout=1) as server:
        conn = await _connect(server)
        await conn.send(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        snap = await server.wait_status(lambda s: s.busy_workers >= 1, timeout=10)
        hung = next(p.pid for p in snap.processes if any(t.state.is_busy for t in p.threads))
        data = await _read_to_close(conn)
        assert data.startswith(b"HTTP/1.1 504 ")
        await conn.aclose()
        await server.wait_status(lambda s: hung not in {p.pid for p in s.processes},
                                 timeout=15)


async def test_slow_body_on_a_handed_off_connection_gets_408() -> None:
    async with serving(request_read_timeout=_body_timeout(1.0)) as server:
        conn = await _connect(server)
        await conn.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
                        b"only part of it")
        data = await _read_to_close(conn)
        assert data.startswith(b"HTTP/1.1 408 ")
        await conn.aclose()


def _body_timeout(seconds: float) -> Any:
    from asyncmpm.config.model import RequestReadTimeout

    return RequestReadTimeout(body_timeout=seconds, body_min_rate=0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_gigabyte_through_a_child_stays_within_its_memory(mpm: MPM) -> None:
    """A 1 GiB upload and a 1 GiB streamed response pass through a slot whose peak memory
    stays far below what buffering them would take (64 MiB)."""
    size = 1024 * 1024 * 1024
    async with serving(mpm=mpm) as server:
        conn = await _connect(server)
        buf = bytearray()
        await conn.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        block = bytes(range(256)) * 1024
        with anyio.fail_after(120):
            for _ in range(size // len(block)):
                await conn.send(block)
        _, body = await _read_response(conn, buf)
        assert body.split()[0] == b"%d" % size
        await conn.send(b"GET /download?mb=1024 HTTP/1.1\r\nHost: t\r\n\r\n")
        received = 0
        with anyio.fail_after(120):
            while b"\r\n\r\n" not in buf:
                buf += await conn.receive()
            head, _, rest = bytes(buf).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            tail = rest
            while not tail.endswith(b"\r\n0\r\n\r\n"):
                chunk = await conn.receive()
                received += len(chunk)
                tail = (tail + chunk)[-16:]
        assert received + len(rest) > size  # the body and its chunk framing
        for proc in server.status().processes:
            if proc.pid:
                assert _peak_rss_mib(proc.pid) < 64, f"child {proc.pid} buffered the body"
        await conn.aclose()


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0
