"""Faults never harm other requests: crashes, hangs, exceptions, recycling, queueing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import anyio
import httpx
import pytest

from asyncmpm import MPM, Server
from asyncmpm.supervisor.scoreboard import ScoreboardSnapshot, SlotState
from tests.conftest import base_url, serving

pytestmark = pytest.mark.anyio


async def wait_for(server: Server, predicate: Callable[[ScoreboardSnapshot], bool],
                   timeout: float = 15.0) -> None:
    await server.wait_status(predicate, timeout)


def pids(server: Server) -> set[int]:
    return {p.pid for p in server.status().processes if p.pid}


@pytest.mark.parametrize("route", ["crash", "segfault"])
async def test_dying_child_gives_502_and_is_replaced(mpm: MPM, route: str) -> None:
    # MinSpareServers 2: losing one of the two children drops below it, so the policy
    # spawns a replacement on its next tick.
    async with serving(mpm=mpm, min_spare_servers=2) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        before = pids(server)
        r = await c.get(f"/{route}")
        assert r.status_code == 502
        # Other requests are unaffected and the policy refills the slot.
        for _ in range(5):
            assert (await c.get("/hello")).status_code == 200
        await wait_for(server, lambda s: s.process_count >= len(before))
        assert server.supervisor.crashes == 1


async def test_sigkill_during_request_gives_502() -> None:
    async with serving() as server, httpx.AsyncClient(base_url=base_url(server)) as c:
        async with anyio.create_task_group() as tg:
            result: list[int] = []

            async def slow() -> None:
                result.append((await c.get("/whoami?sleep=5")).status_code)

            tg.start_soon(slow)
            await wait_for(server, lambda s: any(
                t.state is SlotState.BUSY_WRITE for p in s.processes for t in p.threads))
            busy_pid = next(p.pid for p in server.status().processes
                            if p.threads[0].state is SlotState.BUSY_WRITE)
            os.kill(busy_pid, signal.SIGKILL)
        assert result == [502]
        assert (await c.get("/hello")).status_code == 200


async def test_hung_request_gets_504_and_child_is_replaced(mpm: MPM) -> None:
    async with serving(mpm=mpm, timeout=1) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=20
    ) as c:
        t0 = time.monotonic()
        r = await c.get("/hang")
        assert r.status_code == 504
        assert time.monotonic() - t0 < 10
        hung_children = server.supervisor.timeouts
        assert hung_children == 1
        # The hung child is killed (worker: once its other threads are done).
        await wait_for(server, lambda _: all(
            not c.doomed for c in server.supervisor.children.values()))
        assert (await c.get("/hello")).status_code == 200


async def test_exception_mid_stream_aborts_only_that_response() -> None:
    async with serving() as server, httpx.AsyncClient(base_url=base_url(server)) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get("/raise-mid-stream")
        assert (await c.get("/hello")).status_code == 200


async def test_requests_queue_in_front_when_every_slot_is_busy() -> None:
    # One slot: four concurrent requests are served one after another, none fails.
    async with serving(start_servers=1, min_spare_servers=1, max_spare_servers=2,
                       max_request_workers=1) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await c.get("/whoami?sleep=0.2")).status_code)

        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
        assert statuses == [200] * 4
        assert time.monotonic() - t0 >= 0.75  # serialized through the single slot


async def test_queue_bound_answers_503_with_retry_after() -> None:
    async with serving(start_servers=1, min_spare_servers=1, max_spare_servers=2,
                       max_request_workers=1, max_queued_requests=1) as server, \
            httpx.AsyncClient(base_url=base_url(server), timeout=30) as c:
        statuses: list[int] = []
        retry_after: list[str | None] = []

        async def one() -> None:
            r = await c.get("/whoami?sleep=0.5")
            statuses.append(r.status_code)
            retry_after.append(r.headers.get("retry-after"))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
        assert sorted(statuses) == [200, 200, 503, 503]
        assert retry_after.count("1") == 2


async def test_max_connections_per_child_recycles_without_failures(mpm: MPM) -> None:
    async with serving(mpm=mpm, max_connections_per_child=5) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:
        seen: set[int] = set()
        statuses: list[int] = []

        async def worker() -> None:
            for _ in range(15):
                # MaxConnectionsPerChild counts connections (as httpd does), and a slot may
                # serve several requests of one kept-alive connection: one request each.
                r = await c.get("/whoami", headers={"Connection": "close"})
                statuses.append(r.status_code)
                seen.add(r.json()["pid"])

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker)
        assert statuses == [200] * 60
        # Each child served at most 5 (prefork) / 5 + in-flight (worker) requests.
        assert len(seen) >= (60 // 5 if mpm is MPM.PREFORK else 60 // (5 + 4))
        assert server.supervisor.retirements >= len(seen) - len(pids(server))


async def test_worker_hang_lets_sibling_threads_finish() -> None:
    # One worker child with two threads: one request hangs, the other finishes normally,
    # then the child is killed and replaced.
    async with serving(mpm=MPM.WORKER, timeout=1.5, start_servers=1, threads_per_child=2,
                       min_spare_threads=1, max_spare_threads=4, max_request_workers=4,
                       server_limit=2) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=20
    ) as c:
        first_pid = next(p.pid for p in server.status().processes if p.pid)
        results: dict[str, int] = {}

        async def get(name: str, path: str) -> None:
            results[name] = (await c.get(path)).status_code

        async with anyio.create_task_group() as tg:
            tg.start_soon(get, "hang", "/hang")
            tg.start_soon(get, "sibling", "/whoami?sleep=1")
        assert results == {"hang": 504, "sibling": 200}
        await wait_for(server, lambda s: first_pid not in {p.pid for p in s.processes}
                       and s.idle_workers > 0)
        assert (await c.get("/hello")).status_code == 200


async def test_child_crash_during_streaming_upload_gives_502(mpm: MPM) -> None:
    async with serving(mpm=mpm, min_spare_servers=2) as server:
        host, port = server.addresses[0]
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(b"POST /crash HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"
                              + b"x" * 1000)
            reply = b""
            with anyio.fail_after(10):
                while b"\r\n\r\n" not in reply:
                    reply += await stream.receive()
        assert reply.startswith(b"HTTP/1.1 502 ")
        # The server is still serving.
        async with httpx.AsyncClient(base_url=base_url(server)) as c:
            assert (await c.get("/hello")).status_code == 200
