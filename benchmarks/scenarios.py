"""Scenarios that look at a server over time rather than at its peak rate.

- memory vs concurrency: total PSS once the spare-server policy has settled at each level;
- spare-server dynamics: processes and threads through an idle -> load -> idle step, and how
  long the status page takes to answer during the ramp;
- slow clients: a slowloris attack while a normal client asks for a page every 0.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import httpclient
from benchmarks.load import Tools, slowhttptest_command
from benchmarks.loadgen import LoadSpec, run_load
from benchmarks.processes import running
from benchmarks.resources import ResourceSampler
from benchmarks.servers import RunningServer
from benchmarks.stats import percentile

SLEEP_100MS = "/sleep?ms=100"


@contextlib.contextmanager
def background_load(server: RunningServer, tools: Tools, path: str, connections: int,
                    seconds: float, log_dir: Path) -> Iterator[None]:
    """Keep `connections` closed-loop clients busy on `path` for the block (wrk, else ours)."""
    if tools.wrk:
        threads = max(1, min(2, connections))
        command = [tools.wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                   "--timeout=30s", server.url(path)]
        with running(command, log_dir / "background-wrk.log"):
            yield
        return
    spec = LoadSpec(server.host, server.port, path, connections, seconds)
    thread = threading.Thread(target=run_load, args=(spec,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


@dataclass(frozen=True)
class MemoryPlan:
    levels: tuple[int, ...]
    settle: float
    sample: float


def memory_curve(server: RunningServer, tools: Tools, plan: MemoryPlan,
                 log_dir: Path) -> list[dict[str, Any]]:
    """Total PSS (and per-child PSS) at each concurrency of blocking 100 ms requests."""
    rows: list[dict[str, Any]] = []
    for level in plan.levels:
        with background_load(server, tools, SLEEP_100MS, level, plan.settle + plan.sample + 1,
                             log_dir):
            time.sleep(plan.settle)
            sampler = ResourceSampler(server.proc.pid, interval=0.5, keep_tree=True).start()
            time.sleep(plan.sample)
            summary = sampler.stop()
        samples = sampler.samples
        leaves = [p.pss for s in samples for p in s.tree if p.leaf]
        last = samples[-1].tree if samples else []
        rows.append({"server": server.spec.name, "concurrency": level,
                     "pss_total_mb": summary.pss_mean_mb, "processes": summary.processes_mean,
                     "threads": summary.threads_mean,
                     "child_pss_mb": sum(leaves) / len(leaves) / 2**20 if leaves else 0.0,
                     "children": len(leaves) / len(samples) if samples else 0,
                     "tree": [{"pid": p.pid, "ppid": p.ppid, "name": p.name,
                               "pss_mb": p.pss / 2**20, "threads": p.threads} for p in last]})
    return rows


@dataclass(frozen=True)
class SparePlan:
    idle_before: float
    load: float
    idle_after: float
    connections: int = 50


async def _every_half_second(probe: Callable[[], Coroutine[Any, Any, None]],
                             until: float) -> None:
    """Start ``probe`` every 0.5 s until ``until`` (a slow one does not delay the next),
    then wait for all of them."""
    tasks: list[asyncio.Task[None]] = []
    while time.monotonic() < until:
        tasks.append(asyncio.create_task(probe()))
        await asyncio.sleep(0.5)
    await asyncio.gather(*tasks)


async def _probe_status(server: RunningServer, path: str, t0: float, until: float,
                        probes: list[dict[str, Any]]) -> None:
    async def one() -> None:
        sent = time.monotonic()
        row: dict[str, Any] = {"t": sent - t0, "ok": False, "ms": None}
        try:
            response, seconds = await httpclient.fetch(server.host, server.port, path,
                                                       timeout=5, keep_body=True)
            row.update(ok=response.status == 200, ms=seconds * 1000)
            for line in response.body.decode("latin-1").splitlines():
                key, _, value = line.partition(": ")
                if key in ("BusyWorkers", "IdleWorkers"):
                    row[key] = int(value)
        except httpclient.RequestError as exc:
            row["error"] = exc.kind
        probes.append(row)

    await _every_half_second(one, until)


def spare_dynamics(server: RunningServer, tools: Tools, plan: SparePlan,
                   log_dir: Path) -> dict[str, Any]:
    """Processes/threads every 0.5 s and status-page latency through idle -> load -> idle."""
    status = f"{server.spec.status_path or '/server-status'}?auto"
    probes: list[dict[str, Any]] = []
    sampler = ResourceSampler(server.proc.pid, interval=0.5).start()
    t0 = time.monotonic()
    total = plan.idle_before + plan.load + plan.idle_after

    def drive_load() -> None:
        time.sleep(plan.idle_before)
        with background_load(server, tools, SLEEP_100MS, plan.connections, plan.load, log_dir):
            time.sleep(plan.load)

    loader = threading.Thread(target=drive_load, daemon=True)
    loader.start()
    try:
        asyncio.run(_probe_status(server, status, t0, t0 + total, probes))
    finally:
        loader.join()
        sampler.stop()
    offset = t0 - sampler.t0
    ramp_end = plan.idle_before + min(5.0, plan.load)
    ramp = [p["ms"] for p in probes
            if plan.idle_before <= p["t"] <= ramp_end and p["ms"] is not None]
    during = [p["ms"] for p in probes
              if plan.idle_before <= p["t"] <= plan.idle_before + plan.load and p["ms"]]
    failed = sum(1 for p in probes if not p["ok"])
    return {"server": server.spec.name, "plan": plan.__dict__,
            "samples": [{"t": s.t - offset, "processes": s.processes, "children": s.children,
                         "threads": s.threads, "pss_mb": s.pss / 2**20}
                        for s in sampler.samples],
            "status_probes": probes, "status_failed": failed,
            "status_ramp_max_ms": max(ramp) if ramp else None,
            "status_load_p50_ms": percentile(sorted(during), 50) if during else None,
            "status_load_max_ms": max(during) if during else None}


@dataclass(frozen=True)
class SlowPlan:
    connections: int
    ramp: float
    probe: float


async def _slowloris(host: str, port: int, connections: int, until: float) -> None:
    """Our own slowloris (when slowhttptest is missing): one header line every 5 s."""
    async def hold(i: int) -> None:
        while time.monotonic() < until:
            writer: asyncio.StreamWriter | None = None
            try:
                _, writer = await httpclient.open_connection(host, port, 5)
                await httpclient.send(writer, f"GET /hello?{i} HTTP/1.1\r\nHost: x\r\n".encode())
                while time.monotonic() < until:
                    await asyncio.sleep(5)
                    await httpclient.send(writer, f"X-{i}: slow\r\n".encode())
            except httpclient.RequestError:
                await asyncio.sleep(0.5)
            finally:
                await httpclient.close(writer)

    tasks = []
    for i in range(connections):
        tasks.append(asyncio.create_task(hold(i)))
        await asyncio.sleep(1 / 200)  # 200 new connections a second, as slowhttptest -r 200
    await asyncio.wait(tasks, timeout=max(0.0, until - time.monotonic()) + 1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _normal_client(server: RunningServer, start: float, until: float,
                         rows: list[dict[str, Any]]) -> None:
    async def one() -> None:
        row: dict[str, Any] = {"ok": False, "ms": None}
        try:
            response, seconds = await httpclient.fetch(server.host, server.port, "/hello",
                                                       timeout=3)
            row.update(ok=response.status == 200, ms=seconds * 1000, status=response.status)
        except httpclient.RequestError as exc:
            row["error"] = exc.kind
        rows.append(row)

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    await _every_half_second(one, until)


def slow_clients(server: RunningServer, tools: Tools, plan: SlowPlan,
                 log_dir: Path) -> dict[str, Any]:
    """Share of a normal client's requests answered within 1 s while slowloris holds sockets."""
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    probe_start, until = t0 + plan.ramp, t0 + plan.ramp + plan.probe
    if tools.slowhttptest:
        attacker = "slowhttptest"
        command = slowhttptest_command(tools.slowhttptest, server.url(),
                                       connections=plan.connections,
                                       duration=plan.ramp + plan.probe + 5)
        with running(command, log_dir / f"slowhttptest-{server.spec.name}.log"):
            asyncio.run(_normal_client(server, probe_start, until, rows))
    else:
        attacker = "builtin slowloris"

        async def both() -> None:
            await asyncio.gather(_slowloris(server.host, server.port, plan.connections, until),
                                 _normal_client(server, probe_start, until, rows))

        asyncio.run(both())
    fast = [r for r in rows if r["ok"] and r["ms"] is not None and r["ms"] <= 1000]
    answered = sorted(r["ms"] for r in rows if r["ms"] is not None)
    return {"server": server.spec.name, "attacker": attacker, "connections": plan.connections,
            "probes": len(rows), "within_1s": len(fast),
            "share_within_1s": len(fast) / len(rows) if rows else 0.0,
            "failed": sum(1 for r in rows if not r["ok"]),
            "latency_p50_ms": percentile(answered, 50) if answered else None,
            "latency_max_ms": answered[-1] if answered else None}
