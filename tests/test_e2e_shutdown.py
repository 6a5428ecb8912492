"""Stopping: in-flight requests finish, idle connections close, nothing is left behind."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from asyncmpm import MPM, Server
from asyncmpm.supervisor.scoreboard import SlotState
from tests.conftest import APPS, base_url, make_config

pytestmark = pytest.mark.anyio


async def wait_busy(server: Server) -> None:
    await server.wait_status(
        lambda s: any(t.state is SlotState.BUSY_WRITE for p in s.processes for t in p.threads),
        timeout=10,
    )


async def test_stop_lets_in_flight_requests_finish(mpm: MPM) -> None:
    server = Server(APPS, make_config(mpm))
    results: list[httpx.Response] = []
    async with httpx.AsyncClient(timeout=20) as client, anyio.create_task_group() as tg:
        await tg.start(server.serve)
        url = base_url(server)

        async def slow() -> None:
            results.append(await client.get(f"{url}/whoami?sleep=1"))

        tg.start_soon(slow)
        await wait_busy(server)
        idle = await anyio.connect_tcp(*server.addresses[0])  # an idle keep-alive client
        t0 = time.monotonic()
        server.stop()
        # The idle connection is closed at once, without an answer.
        with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
            await idle.receive()
        await idle.aclose()
    # serve() returned only after the request finished and the children were stopped.
    assert time.monotonic() - t0 >= 0.5
    assert [r.status_code for r in results] == [200]
    assert results[0].headers["connection"] == "close"
    with pytest.raises(OSError, match="onnect"):
        await anyio.connect_tcp(*server.addresses[0])


async def test_graceful_shutdown_timeout_bounds_the_wait() -> None:
    server = Server(APPS, make_config(graceful_shutdown_timeout=0.5))
    async with httpx.AsyncClient(timeout=20) as client, anyio.create_task_group() as tg:
        await tg.start(server.serve)

        async def hang() -> None:
            with pytest.raises(httpx.HTTPError):
                await client.get(f"{base_url(server)}/hang")

        tg.start_soon(hang)
        await wait_busy(server)
        t0 = time.monotonic()
        server.stop()
    assert time.monotonic() - t0 < 8


async def test_async_with_and_status() -> None:
    async with Server(APPS, make_config()) as server:
        snapshot = server.status()
        assert snapshot.mpm == "prefork"
        assert snapshot.idle_workers >= 1
        assert len(snapshot.letters()) == 8 or len(snapshot.letters()) == 256
