"""Limits and slow clients: LimitRequest*, mod_reqtimeout-style read timeouts, keep-alive."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from asyncmpm import RequestReadTimeout
from tests.conftest import APPS, serving

pytestmark = pytest.mark.anyio


async def exchange(server: object, data: bytes, *, pause_after: float = 0.0,
                   timeout: float = 15) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes; returns (reply, seconds to close)."""
    host, port = server.addresses[0]  # type: ignore[attr-defined]
    async with await anyio.connect_tcp(host, port) as stream:
        t0 = time.monotonic()
        await stream.send(data)
        reply = b""
        with anyio.fail_after(timeout):
            while True:
                try:
                    reply += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        return reply, time.monotonic() - t0


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize(
    ("directives", "request_bytes", "status"),
    [
        ({"limit_request_line": 100},
         b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        ({"limit_request_fields": 5},
         b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(6))
         + b"\r\n", 431),
        ({"limit_request_field_size": 50},
         b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 60 + b"\r\n\r\n", 431),
        ({"limit_request_body": 10},
         b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world", 413),
        ({"limit_request_body": 10},
         b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n", 413),
        ({}, b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        ({}, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ({}, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: "
             b"chunked\r\n\r\n", 400),
        ({}, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        ({}, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # TLS on a plain port
    ],
    ids=["line-414", "fields-431", "field-size-431", "body-cl-413", "body-chunked-413",
         "no-host", "two-hosts", "cl-and-te", "version", "garbage"],
)
async def test_limits_and_malformed_requests(
    directives: dict[str, Any], request_bytes: bytes, status: int
) -> None:
    async with serving(APPS, **directives) as server:
        reply, _ = await exchange(server, request_bytes)
        assert status_of(reply) == status
        assert b"Connection: close" in reply
        # A bad request never harms the next one.
        good, _ = await exchange(server, b"GET /hello HTTP/1.1\r\nHost: t\r\n"
                                 b"Connection: close\r\n\r\n")
        assert status_of(good) == 200


async def test_slow_header_gets_408() -> None:
    rrt = RequestReadTimeout(header_timeout=1, header_max=2, header_min_rate=500)
    async with serving(request_read_timeout=rrt) as server:
        reply, elapsed = await exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\n")
        assert status_of(reply) == 408
        assert 0.9 <= elapsed < 5


async def test_idle_connection_closed_silently_after_header_timeout() -> None:
    rrt = RequestReadTimeout(header_timeout=1, header_max=1)
    async with serving(request_read_timeout=rrt) as server:
        reply, elapsed = await exchange(server, b"")
        assert reply == b""
        assert 0.9 <= elapsed < 5


async def test_slow_body_gets_408_and_frees_the_slot() -> None:
    rrt = RequestReadTimeout(body_timeout=1, body_max=2, body_min_rate=500)
    async with serving(request_read_timeout=rrt) as server:
        reply, elapsed = await exchange(
            server, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        assert status_of(reply) == 408
        assert elapsed < 5
        good, _ = await exchange(server, b"GET /hello HTTP/1.1\r\nHost: t\r\n"
                                 b"Connection: close\r\n\r\n")
        assert status_of(good) == 200
        # (the response may reach us a moment before the slot hands the connection back)
        await server.wait_status(lambda s: s.busy_workers == 0, timeout=5)


async def test_keep_alive_timeout_and_max_requests() -> None:
    async with serving(keep_alive_timeout=0.5, max_keep_alive_requests=2) as server:
        host, port = server.addresses[0]
        # KeepAliveTimeout: an idle persistent connection is closed after 0.5 s.
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            first = await stream.receive()
            assert b"200 OK" in first
            assert b"Connection: close" not in first
            t0 = time.monotonic()
            with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
                await stream.receive()
            assert 0.4 <= time.monotonic() - t0 < 3
        # MaxKeepAliveRequests 2: the third response closes, as httpd counts it.
        reply, _ = await exchange(server, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n" * 4)
        assert reply.count(b"HTTP/1.1 200 OK") == 3
        assert reply.count(b"Connection: close") == 1


async def test_keep_alive_header_for_http10_clients() -> None:
    async with serving() as server:
        reply, _ = await exchange(server, b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                  b"GET /hello HTTP/1.0\r\n\r\n")
        assert reply.count(b"200 OK") == 2
        assert b"Keep-Alive: timeout=5, max=100" in reply
        assert b"Connection: Keep-Alive" in reply


async def test_no_keep_alive() -> None:
    async with serving(keep_alive=False) as server:
        reply, _ = await exchange(server, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n" * 2)
        assert reply.count(b"200 OK") == 1
        assert b"Connection: close" in reply
