"""An app's mistakes stay its own: a bad head never reaches the wire, sys.exit() is a 500, a
huge chunk gets through, and a child that breaks the slot protocol is replaced."""

from __future__ import annotations

import hashlib
import time

import anyio
import httpx
import pytest

from asyncmpm import MPM, Server
from tests.apps import BAD_HEADS
from tests.conftest import UNVALIDATED_APPS, base_url, serving

pytestmark = pytest.mark.anyio


def pids(server: Server) -> set[int]:
    return {p.pid for p in server.status().processes if p.pid}


async def exchange(server: Server, raw: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    host, port = server.addresses[0]
    reply = b""
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(raw)
        with anyio.fail_after(10):
            while True:
                try:
                    reply += await stream.receive()
                except anyio.EndOfStream:
                    return reply


async def test_bad_heads_give_500_and_nothing_of_them_on_the_wire(mpm: MPM) -> None:
    # Each bad head is followed by a pipelined request on the same connection: exactly two
    # responses must come back, a 500 and the hello, so the connection stayed in step.
    wrong: dict[str, bytes] = {}
    async with serving(UNVALIDATED_APPS, mpm=mpm) as server:
        for case in BAD_HEADS:
            reply = await exchange(
                server,
                f"GET /bad-head/{case} HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(),
            )
            if (not reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
                    or reply.count(b"HTTP/1.1 ") != 2 or b"X-Injected" in reply
                    or not reply.endswith(b"\r\n\r\nHello, world!\n")):
                wrong[case] = reply
        assert server.supervisor.crashes == 0
    assert not wrong, wrong


@pytest.mark.parametrize("how", ["sys-exit", "keyboard-interrupt", "broken-pipe",
                                 "connection-reset"])
async def test_app_exit_answers_500_at_once_and_the_slot_keeps_serving(
    mpm: MPM, how: str
) -> None:
    # One child: every request goes through the same process (prefork: one at a time).
    async with serving(mpm=mpm, timeout=20, start_servers=1, min_spare_servers=1,
                       min_spare_threads=1) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:
        before = pids(server)
        t0 = time.monotonic()
        for _ in range(6):  # more than a worker child's 4 threads
            assert (await c.get(f"/exit/{how}")).status_code == 500
        with pytest.raises(httpx.RemoteProtocolError):  # after the start: the stream breaks
            await c.get(f"/exit/{how}?started=1")
        assert time.monotonic() - t0 < 10
        assert (await c.get("/hello")).status_code == 200
        assert pids(server) == before
        assert server.supervisor.crashes == 0
        assert server.supervisor.timeouts == 0


@pytest.mark.parametrize("how", ["list", "generator", "write"])
async def test_a_20_mib_chunk_gets_through(how: str) -> None:
    expected = hashlib.sha256(bytes(range(256)) * 4096 * 20).hexdigest()
    async with serving() as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:
        r = await c.get(f"/big-chunk/{how}?mb=20")
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == expected
        assert (await c.get("/hello")).status_code == 200
        assert server.supervisor.crashes == 0


async def test_a_20_mib_chunk_gets_through_h2c() -> None:
    expected = hashlib.sha256(bytes(range(256)) * 4096 * 20).hexdigest()
    async with serving() as server, httpx.AsyncClient(
        http1=False, http2=True, base_url=base_url(server), timeout=30
    ) as c:
        for how in ("list", "generator"):
            r = await c.get(f"/big-chunk/{how}?mb=20")
            assert r.http_version == "HTTP/2"
            assert r.status_code == 200
            assert hashlib.sha256(r.content).hexdigest() == expected


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
async def test_corrupt_frame_gives_502_and_the_child_is_replaced(mpm: MPM, http2: bool) -> None:
    async with serving(mpm=mpm, start_servers=1, min_spare_servers=1,
                       min_spare_threads=1) as server, httpx.AsyncClient(
        http1=not http2, http2=http2, base_url=base_url(server), timeout=30
    ) as c:
        before = pids(server)
        t0 = time.monotonic()
        r = await c.get("/corrupt-frame")
        assert r.status_code == 502
        assert time.monotonic() - t0 < 10
        # The child (hanging in the app, unaware) is killed, not left busy; a new one serves.
        await server.wait_status(
            lambda s: not before & {p.pid for p in s.processes if p.pid}
            and s.idle_workers > 0, 15)
        assert (await c.get("/hello")).status_code == 200


async def test_slot_lost_after_the_head_closes_the_connection_without_a_502(mpm: MPM) -> None:
    # A 502 written after the head would land inside the chunked body, as a response of its
    # own: the client must see the body cut short (the connection closes), nothing more.
    async with serving(mpm=mpm, start_servers=1, min_spare_servers=1,
                       min_spare_threads=1) as server:
        host, port = server.addresses[0]
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"POST /corrupt-frame?started=1 HTTP/1.1\r\nHost: t\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n")
            reply = b""
            with anyio.fail_after(10):
                while b"started\n" not in reply:
                    reply += await stream.receive()
                await stream.send(b"0\r\n\r\n")  # the app reads the end, then breaks its slot
                while True:
                    try:
                        reply += await stream.receive()
                    except anyio.EndOfStream:
                        break
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert reply.count(b"HTTP/1.1 ") == 1
        assert not reply.endswith(b"0\r\n\r\n")  # no end of the chunked body: it was cut
