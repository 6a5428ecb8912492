"""Process counts follow Apache's policy with real children: idle -> burst -> idle, and the
MPM's basic promise (prefork: one request per process; worker: threads in few processes)."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from asyncmpm import MPM
from tests.conftest import base_url, serving

pytestmark = pytest.mark.anyio

BURST = {
    MPM.PREFORK: {"start_servers": 2, "min_spare_servers": 1, "max_spare_servers": 2,
                  "max_request_workers": 8},
    MPM.WORKER: {"start_servers": 1, "threads_per_child": 2, "min_spare_threads": 1,
                 "max_spare_threads": 4, "max_request_workers": 8, "server_limit": 4},
}


async def test_idle_burst_idle(mpm: MPM) -> None:
    directives: dict[str, Any] = BURST[mpm]
    async with serving(mpm=mpm, **directives) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:
        start = server.status().process_count
        assert start == directives["start_servers"]
        statuses: list[int] = []

        async def hold() -> None:
            statuses.append((await c.get("/whoami?sleep=2.5")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(hold)
            # Under load the policy spawns (1, 2, 4 ... per second) up to the limit.
            peak = await server.wait_status(lambda s: s.process_count > start + 1, timeout=10)
        assert statuses == [200] * 6
        assert peak.process_count <= server.limits.process_limit
        # Load gone: one retirement per second until idle <= MaxSpare.
        limits = server.limits
        await server.wait_status(
            lambda s: s.idle_workers <= limits.max_spare and s.busy_workers == 0
            and not any(p.quiescing for p in s.processes),
            timeout=20,
        )
        assert server.supervisor.retirements >= 1


async def concurrent_whoami(client: httpx.AsyncClient, n: int) -> list[dict[str, Any]]:
    """``n`` overlapping requests that each hold a slot for 0.5 s; who served each."""
    results: list[dict[str, Any]] = []

    async def one() -> None:
        results.append((await client.get("/whoami?sleep=0.5")).json())

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return results


async def test_prefork_serves_one_request_per_process() -> None:
    async with serving(start_servers=4, min_spare_servers=1, max_spare_servers=8,
                       max_request_workers=8) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:
        results = await concurrent_whoami(c, 4)
        assert len({r["pid"] for r in results}) == 4
        assert not any(r["multithread"] for r in results)


async def test_worker_serves_concurrent_requests_on_threads_of_one_child() -> None:
    async with serving(mpm=MPM.WORKER, start_servers=1, threads_per_child=4,
                       min_spare_threads=1, max_spare_threads=8, max_request_workers=8,
                       server_limit=2) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:
        results = await concurrent_whoami(c, 4)
        assert len({r["pid"] for r in results}) == 1
        assert len({r["thread"] for r in results}) == 4
        assert all(r["multithread"] for r in results)
