"""Throughput workloads: one load shape each, measured after a warm-up on a running server.

A warm-up at the same load lets the spare-server policies (asyncmpm's and Apache's) grow the
process tree first, so the measured window compares steady states rather than ramp-ups.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import tls as tlsmod
from benchmarks.cpu import CpuAccount
from benchmarks.load import Tools, run_h2load, run_wrk, speaks_h2c
from benchmarks.loadgen import LoadSpec, run_load
from benchmarks.resources import ResourceSampler
from benchmarks.servers import RunningServer, ServerSpec
from benchmarks.stats import LoadResult

TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    path: str
    connections: int
    keep_alive: bool = True
    method: str = "GET"
    body_size: int = 0
    tool: str = "wrk"  # wrk (built-in generator when wrk is missing), builtin, h2load
    hello: bool = False  # a hello request: uvicorn's raw ASGI ceiling can take part
    window_factor: float = 1.0  # longer windows where rare slow responses are the point
    warm_factor: float = 1.0  # longer warm-ups where the tree must first grow to 150 slots
    tls: bool = False  # served over HTTPS, by a server started apart with a certificate


WORKLOADS: tuple[Workload, ...] = (
    Workload("hello-ka", "hello, keep-alive, 64 connections", "/hello", 64, hello=True,
             warm_factor=4.0),  # Apache prefork needs a process per keep-alive connection
    Workload("hello-close", "hello, no keep-alive (Connection: close), 64 connections", "/hello",
             64, keep_alive=False, hello=True),
    Workload("hello-tls", "hello over TLS (HTTPS, self-signed), keep-alive, 64 connections",
             "/hello", 64, hello=True, warm_factor=4.0, tls=True),
    Workload("blocking", "blocking I/O: time.sleep(0.05), 200 connections vs 150 slots",
             "/sleep?ms=50", 200, tool="builtin", window_factor=2.5, warm_factor=4.0),
    Workload("cpu", "CPU-bound: 5 ms of CPU per request, 16 connections", "/cpu?ms=5", 16),
    Workload("stream", "streamed response: 10 MB in 64 KB chunks, 4 connections",
             f"/stream?bytes={TEN_MB}&chunk=65536", 4),
    Workload("upload", "upload: 10 MB POST read to the end, 4 connections", "/upload", 4,
             method="POST", body_size=TEN_MB),
    Workload("h2", "HTTP/2 cleartext (prior knowledge), h2load -c 10 -m 10", "/hello", 10,
             tool="h2load", hello=True),
)
WORKLOAD_NAMES = tuple(w.name for w in WORKLOADS)


@dataclass(frozen=True)
class Timing:
    warm_up: float
    measure: float


def _load(server: RunningServer, workload: Workload, tools: Tools, seconds: float) -> LoadResult:
    if workload.tool == "h2load":
        assert tools.h2load
        return run_h2load(tools.h2load, server.url(workload.path), clients=10, streams=10,
                          duration=seconds, warm_up=1)
    if workload.tool == "wrk" and tools.wrk:
        return run_wrk(tools.wrk, server.url(workload.path), connections=workload.connections,
                       duration=seconds, keep_alive=workload.keep_alive, method=workload.method,
                       body_size=workload.body_size)
    return run_load(LoadSpec(server.host, server.port, workload.path, workload.connections,
                             seconds, workload.keep_alive, workload.method, workload.body_size))


def _mb_per_s(workload: Workload, result: LoadResult) -> float:
    """Payload MB/s: response bytes, or for an upload the request bodies sent."""
    if not result.duration_s:
        return 0.0
    sent = result.requests * workload.body_size if workload.body_size else result.body_bytes
    return sent / 2**20 / result.duration_s


def plan_skip(spec: ServerSpec, workload: Workload, tools: Tools) -> str | None:
    """Why `spec` does not run `workload`, known before starting it (or None)."""
    if spec.hello_only and not workload.hello:
        return "raw ASGI hello only (a ceiling, not a WSGI peer)"
    if spec.workloads and workload.name not in spec.workloads:
        return f"not part of {spec.name}'s comparison (it runs {', '.join(spec.workloads)})"
    if workload.tls:
        if not tools.wrk:
            return "needs wrk: the built-in generator (no wrk, or --load-tool builtin) has no TLS"
        return spec.tls_reason()
    return None


def skip_reason(server: RunningServer, workload: Workload, tools: Tools) -> str | None:
    reason = plan_skip(server.spec, workload, tools)
    if reason:
        return reason
    if workload.tool == "h2load":
        if not tools.h2load:
            return "h2load is not installed (nghttp2-client)"
        if not speaks_h2c(server.host, server.port):
            return "does not speak HTTP/2 cleartext (prior-knowledge preface not answered)"
    return None


def measure(server: RunningServer, workload: Workload, tools: Tools,
            timing: Timing) -> dict[str, Any]:
    """Warm up, then measure one workload with the resource sampler running; a JSON record."""
    record: dict[str, Any] = {"server": server.spec.name, "workload": workload.name}
    reason = skip_reason(server, workload, tools)
    if reason:
        return {**record, "skipped": reason}
    measure_s = timing.measure * workload.window_factor
    if workload.tool != "h2load":  # h2load warms up inside its own run
        _load(server, workload, tools, timing.warm_up * workload.warm_factor)
    load_before = os.getloadavg()[0]
    sampler = ResourceSampler(server.proc.pid).start()
    cpu = CpuAccount(server.proc.pid).start()
    started = time.monotonic()
    try:
        result = _load(server, workload, tools, measure_s)
    finally:
        by_role = cpu.stop()
        resources = sampler.stop()
    # h2load's own 1 s warm-up falls inside the CPU window but not in its count: for it, the
    # requests of the window are estimated at the measured rate.
    by_role.per_request(round(result.rps * by_role.window_s) if result.tool == "h2load"
                        else result.requests)
    if server.tls:
        record["tls"] = tlsmod.negotiated(server.host, server.port)
    return {**record, "tool": result.tool, "requests": result.requests,
            "cpu_by_role": asdict(by_role),
            "duration_s": result.duration_s, "rps": result.rps,
            "mb_per_s": _mb_per_s(workload, result),
            "latency_ms": asdict(result.latency), "errors": result.errors,
            "errors_total": result.error_total, "slow_over_5s": result.slow_over_5s,
            "note": result.note, "resources": asdict(resources),
            "loadavg_before": load_before, "wall_s": time.monotonic() - started}
