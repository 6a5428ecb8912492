"""The built-in load generator: closed-loop asyncio clients that record every single latency.

Used when wrk is missing, and always for the blocking-I/O workload: wrk drops requests still in
flight when its run ends and cannot see them, while a request slower than 5 s is exactly what
that workload looks for. Here a latency includes the connect when a client had to (re)connect,
and a request still waiting at the end of the run counts as slow if it had waited past the limit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from benchmarks import httpclient
from benchmarks.stats import LoadResult, summarize

_UPLOAD_BLOCK = b"x" * 65536


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0})
    body_bytes: int = 0
    slow: int = 0
    retries: int = 0
    in_flight: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    path: str
    connections: int
    duration: float
    keep_alive: bool = True
    method: str = "GET"
    body_size: int = 0
    timeout: float = 30.0
    slow_threshold: float = 5.0


async def _send_body(writer: asyncio.StreamWriter, size: int) -> None:
    while size > 0:
        block = _UPLOAD_BLOCK[: min(size, len(_UPLOAD_BLOCK))]
        await httpclient.send(writer, block)
        size -= len(block)


async def _client(spec: LoadSpec, ident: int, deadline: float, tally: _Tally) -> None:
    request = httpclient.build_request(spec.method, spec.path, f"{spec.host}:{spec.port}",
                                       body_size=spec.body_size, keep_alive=spec.keep_alive)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    reused = False
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            tally.in_flight[ident] = start
            response: httpclient.Response | None = None
            try:
                async with asyncio.timeout(spec.timeout):
                    for attempt in (1, 2):
                        if writer is None or reader is None:
                            reader, writer = await httpclient.open_connection(
                                spec.host, spec.port, spec.timeout)
                            reused = False
                        try:
                            await httpclient.send(writer, request)
                            await _send_body(writer, spec.body_size)
                            response = await httpclient.read_response(reader)
                            break
                        except httpclient.RequestError as exc:
                            # An idle keep-alive connection the server closed: retry once on a
                            # new one, as HTTP clients do (RFC 9112 9.3.1), and count it apart.
                            if not (reused and exc.unanswered and attempt == 1
                                    and spec.method == "GET"):
                                raise
                            tally.retries += 1
                            await httpclient.close(writer)
                            reader = writer = None
            except TimeoutError:
                tally.errors["timeout"] += 1
                tally.slow += 1
            except httpclient.RequestError as exc:
                tally.errors[exc.kind] += 1
                if exc.kind == "connect":
                    await asyncio.sleep(0.01)  # a refused connect would otherwise spin
            finally:
                tally.in_flight.pop(ident, None)
            if response is None:
                await httpclient.close(writer)
                reader = writer = None
                continue
            elapsed = time.perf_counter() - start
            tally.latencies.append(elapsed)
            tally.body_bytes += response.body_bytes
            if elapsed > spec.slow_threshold:
                tally.slow += 1
            if not 200 <= response.status < 300:
                tally.errors["status"] += 1
            reused = True
            if not (spec.keep_alive and response.keep_alive):
                await httpclient.close(writer)
                reader = writer = None
    finally:
        await httpclient.close(writer)


async def _run(spec: LoadSpec) -> LoadResult:
    tally = _Tally()
    start = time.perf_counter()
    deadline = start + spec.duration
    tasks = [asyncio.create_task(_client(spec, i, deadline, tally))
             for i in range(spec.connections)]
    await asyncio.wait(tasks, timeout=spec.duration)
    ended = time.perf_counter()
    # Requests still waiting now are not answered within the run: count those past the limit.
    tally.slow += sum(1 for began in tally.in_flight.values()
                      if ended - began > spec.slow_threshold)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    note = (f"{tally.retries} request(s) retried on a new connection after the server closed "
            "an idle keep-alive one" if tally.retries else "")
    return summarize("builtin", tally.latencies, ended - start, tally.body_bytes,
                     tally.errors, tally.slow, note)


def run_load(spec: LoadSpec) -> LoadResult:
    """Run the closed loop for `spec.duration` seconds in a fresh event loop."""
    return asyncio.run(_run(spec))
