"""HTTP/2 connections that end badly with streams running in children, and HTTP/2 under the
LimitRequest* directives: no slot may outlive its connection, and h2 gets the same 413/414/431
answers as HTTP/1.1."""

from __future__ import annotations

from typing import Any

import anyio
import h2.errors
import h2.events
import pytest

from asyncmpm import MPM, Server
from asyncmpm.supervisor.scoreboard import ScoreboardSnapshot
from tests.conftest import MPM_SETTINGS, serving
from tests.test_e2e_http2 import RawH2, _still_serves, raw_h2

# A zero-length PING on stream 1: a connection error (PROTOCOL_ERROR) however it is read.
GARBAGE = b"\x00\x00\x00\x06\x00\x00\x00\x00\x01"


def spares(mpm: MPM) -> dict[str, Any]:
    """Enough ready slots for the streams a test opens at once."""
    return {"start_servers": 4, "min_spare_servers": 4} if mpm is MPM.PREFORK else {}


def idle(snapshot: ScoreboardSnapshot) -> bool:
    return snapshot.busy_workers == 0


def started(sid: int) -> Any:
    return lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid


async def _open_streams(client: RawH2, server: Server, paths: list[str]) -> None:
    """Streams on ``paths`` until every one of them is running in a child."""
    for i, path in enumerate(paths):
        client.conn.send_headers(2 * i + 1, client.request_headers(path), end_stream=True)
    await client.flush()
    await server.wait_status(lambda s: s.busy_workers >= len(paths), timeout=15)


# ----------------------------------------------------------------------------- item 1: slots
@pytest.mark.parametrize("ending", ["close", "garbage", "stop-reading"])
async def test_connection_ending_mid_streams_frees_every_slot(ending: str, mpm: MPM) -> None:
    """However the connection ends, each child is told to stop and its slot comes back."""
    async with serving(mpm=mpm, timeout=3.0, **spares(mpm)) as server:
        if ending == "stop-reading":
            # Big windows and big downloads: our socket buffers fill, then TCP's window is
            # zero and stays so, as the client never reads; Timeout ends the connection.
            async with raw_h2(server, initial_window_size=2**31 - 1) as client:
                client.conn.increment_flow_control_window(2**31 - 1 - 65535)
                await _open_streams(client, server, ["/download?mb=64"] * 3)
                # ...and while it still holds the connection, the children are drained.
                await server.wait_status(idle, timeout=20)
        else:
            async with raw_h2(server) as client:
                await _open_streams(client, server, ["/whoami?sleep=1"] * 3)
                if ending == "garbage":
                    await client.send_raw(GARBAGE)
                    ev = await client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
                    assert isinstance(ev, h2.events.ConnectionTerminated)
                    assert ev.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        await server.wait_status(idle, timeout=15)
        await _still_serves(server)
        await server.wait_status(idle, timeout=15)


async def test_more_dropped_connections_than_slots_still_serve() -> None:
    """Each dropped connection used to keep its slot busy for good: then every request 503s."""
    workers = MPM_SETTINGS[MPM.PREFORK]["max_request_workers"]
    async with serving(timeout=2.0) as server:
        for _ in range(workers + 4):
            async with raw_h2(server) as client:
                client.conn.send_headers(1, client.request_headers("/stream"), end_stream=True)
                await client.flush()
                assert await client.until(started(1)) is not None  # in a child: hang up
        await server.wait_status(idle, timeout=15)
        await _still_serves(server)


async def test_graceful_restart_retires_the_old_generation_after_a_dropped_connection(
        mpm: MPM) -> None:
    async with serving(mpm=mpm, timeout=5.0, **spares(mpm)) as server:
        old = {p.pid for p in server.status().processes if p.pid}
        async with raw_h2(server) as client:
            await _open_streams(client, server, ["/whoami?sleep=1"] * 2)
        assert await server.graceful_restart()
        await server.wait_status(lambda s: not old & {p.pid for p in s.processes}, timeout=20)
        await _still_serves(server)


# ----------------------------------------------------------------------------- item 6: limits
async def _h1_status(server: Server, request: bytes) -> int:
    async with await anyio.connect_tcp(*server.addresses[0]) as s:
        await s.send(request)
        with anyio.fail_after(10):
            reply = await s.receive()
    return int(reply.split(b" ", 2)[1])


async def _h2_answer(client: RawH2, sid: int) -> tuple[int, bool]:
    """The status of stream ``sid`` and whether its response ended normally."""
    head = await client.until(started(sid))
    assert isinstance(head, h2.events.ResponseReceived), "no response"
    status = int(dict(head.headers)[b":status"])
    end = await client.until(lambda e: isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
                             and e.stream_id == sid)
    return status, isinstance(end, h2.events.StreamEnded)


LIMITS: dict[str, Any] = {"limit_request_body": 1000, "limit_request_fields": 5,
                          "limit_request_field_size": 200, "limit_request_line": 300}


@pytest.mark.parametrize(("case", "expected"), [
    ("fields", 431), ("field-size", 431), ("line", 414), ("content-length", 413)])
async def test_h2_head_limits_match_http1(case: str, expected: int) -> None:
    extra: list[tuple[str, str]] = []
    path = "/environ"
    if case == "fields":
        extra = [(f"x-f{i}", "v") for i in range(6)]
    elif case == "field-size":
        extra = [("x-big", "v" * 300)]
    elif case == "line":
        path = "/environ?" + "q" * 300
    elif case == "content-length":
        extra = [("content-length", "5000")]
    async with serving(**LIMITS) as server:
        h1 = "".join(f"{k}: {v}\r\n" for k, v in extra)
        method = "POST" if case == "content-length" else "GET"
        assert await _h1_status(server, f"{method} {path} HTTP/1.1\r\nHost: x\r\n{h1}\r\n"
                                .encode()) == expected
        async with raw_h2(server) as client:
            headers = client.request_headers(path) + extra
            if case == "content-length":
                headers[0] = (":method", "POST")
            client.conn.send_headers(1, headers, end_stream=case != "content-length")
            await client.flush()
            assert (await _h2_answer(client, 1))[0] == expected
            # The connection carries on: another stream on it is served.
            client.conn.send_headers(3, client.request_headers("/hello"), end_stream=True)
            await client.flush()
            assert await _h2_answer(client, 3) == (200, True)
        await server.wait_status(idle, timeout=15)


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "no-length"])
async def test_h2_body_over_limit_is_413_and_the_connection_goes_on(length: bool) -> None:
    """Without a content-length the limit is met mid-body, with the child already reading."""
    async with serving(limit_request_body=1000) as server:
        body = b"x" * 1500
        cl = f"Content-Length: {len(body)}\r\n" if length else "Transfer-Encoding: chunked\r\n"
        payload = body if length else b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        assert await _h1_status(server, f"POST /upload HTTP/1.1\r\nHost: x\r\n{cl}\r\n"
                                .encode() + payload) == 413
        async with raw_h2(server) as client:
            headers = [(":method", "POST"), *client.request_headers("/upload")[1:]]
            if length:
                headers.append(("content-length", str(len(body))))
            client.conn.send_headers(1, headers)
            client.conn.send_data(1, body[:600])
            await client.flush()
            if not length:  # the child has the first part before the rest breaks the limit
                await server.wait_status(lambda s: s.busy_workers >= 1, timeout=15)
            client.conn.send_data(1, body[600:], end_stream=True)
            await client.flush()
            assert (await _h2_answer(client, 1))[0] == 413
            client.conn.send_headers(3, client.request_headers("/hello"), end_stream=True)
            await client.flush()
            assert await _h2_answer(client, 3) == (200, True)
            # Under the limit, a body still goes through whole.
            client.conn.send_headers(5, [*headers[:4], ("content-length", "999")]
                                     if length else headers)
            client.conn.send_data(5, b"y" * 999, end_stream=True)
            await client.flush()
            assert await _h2_answer(client, 5) == (200, True)
        await server.wait_status(idle, timeout=15)


async def test_h2_body_limit_holds_for_a_client_that_keeps_sending() -> None:
    """Past the limit the stream is answered and reset (NO_ERROR); the rest is not buffered
    and the connection's window is given back, so later streams still upload."""
    async with serving(limit_request_body=1000, h2_window_size=65535) as server, \
            raw_h2(server) as client:
        headers = [(":method", "POST"), *client.request_headers("/upload")[1:]]
        client.conn.send_headers(1, headers)
        client.conn.send_data(1, b"x" * 16000)
        await client.flush()
        status, _ = await _h2_answer(client, 1)
        assert status == 413
        reset = await client.until(lambda e: isinstance(e, h2.events.StreamReset))
        assert isinstance(reset, h2.events.StreamReset)
        assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR
        client.conn.send_headers(3, [*headers, ("content-length", "900")])
        client.conn.send_data(3, b"z" * 900, end_stream=True)
        await client.flush()
        assert await _h2_answer(client, 3) == (200, True)
