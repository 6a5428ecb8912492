"""The server outlives what would otherwise end it: running out of descriptors, losing its
zygote, children dying often, children that will not stop."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import anyio
import httpx
import pytest
import structlog

from asyncmpm import MPM, Server
from tests.conftest import APPS, base_url, make_config, serving

pytestmark = pytest.mark.anyio

EventDict = dict[str, Any]


class LogWatch:
    """A structlog processor that keeps every event and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.entries: list[EventDict] = []
        self._changed: anyio.Event | None = None

    def __call__(self, logger: Any, method: str, event: EventDict) -> EventDict:
        event["log_level"] = method
        self.entries.append(event)
        if self._changed is not None:
            self._changed.set()
        raise structlog.DropEvent

    def find(self, text: str) -> list[EventDict]:
        return [e for e in self.entries if text in str(e["event"])]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait (woken by each new event) until ``predicate()`` holds."""
        with anyio.fail_after(timeout):
            while not predicate():
                self._changed = anyio.Event()
                await self._changed.wait()

    async def wait_for(self, text: str, timeout: float = 15.0) -> EventDict:
        """The first event whose message contains ``text`` (waits for it)."""
        await self.wait_until(lambda: bool(self.find(text)), timeout)
        return self.find(text)[0]


@contextlib.contextmanager
def watch_logs() -> Iterator[LogWatch]:
    """Capture the server's log events (as structlog.testing.capture_logs, but awaitable)."""
    watch = LogWatch()
    processors = structlog.get_config()["processors"]
    saved = processors.copy()
    processors.clear()
    processors.append(watch)
    structlog.configure(processors=processors)
    try:
        yield watch
    finally:
        processors.clear()
        processors.extend(saved)
        structlog.configure(processors=processors)


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """Use up every descriptor this process may open (a lowered RLIMIT_NOFILE keeps that
    quick), then give them back and restore the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, highest + 32), hard))
    held: list[int] = []
    try:
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def read_all(sock: socket.socket) -> bytes:
    stream = await anyio.abc.SocketStream.from_socket(sock)
    async with stream:
        reply = b""
        with anyio.fail_after(10):
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    reply += await stream.receive()
    return reply


async def test_accept_survives_running_out_of_descriptors() -> None:
    with watch_logs() as logs:
        async with serving() as server:
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                with descriptors_exhausted():
                    # connect() needs no new descriptor here, but the server's accept() does.
                    client.connect(server.addresses[0])
                    client.sendall(b"GET /hello HTTP/1.0\r\nHost: t\r\n\r\n")
                    line = await logs.wait_for("accept failed")
                    assert line["log_level"] == "error"
                    assert line["errno"] == "EMFILE"
                # Descriptors are back: the waiting connection is accepted and served.
                reply = await read_all(client)
            finally:
                client.close()
            assert reply.startswith(b"HTTP/1.0 200 ") or reply.startswith(b"HTTP/1.1 200 ")
            assert reply.endswith(b"Hello, world!\n")
            await logs.wait_for("accepting connections again")
            assert len(logs.find("accept failed")) == 1  # once per episode, not per retry


# Pools with a MinSpare the tests can fall below by killing children.
REFILL: dict[MPM, dict[str, Any]] = {
    MPM.PREFORK: {"start_servers": 3, "min_spare_servers": 2, "max_spare_servers": 4,
                  "max_request_workers": 8},
    MPM.WORKER: {"start_servers": 2, "threads_per_child": 2, "min_spare_threads": 3,
                 "max_spare_threads": 8, "max_request_workers": 8, "server_limit": 4},
}


async def test_pool_refills_while_children_die_every_second(mpm: MPM) -> None:
    # Children exit on their own (a crash, not a signal: worker respawns signal deaths at once
    # for a while, which would hide a starving maintenance loop).
    with watch_logs() as logs:
        async with serving(mpm=mpm, **REFILL[mpm]) as server, httpx.AsyncClient(
            base_url=base_url(server), timeout=10
        ) as c:
            lowest = server.status().process_count

            def crashed(n: int) -> bool:
                return len(logs.find("exit status 3")) >= n

            async def watch() -> None:
                nonlocal lowest
                while True:
                    await server.scoreboard.wait_changed()
                    lowest = min(lowest, server.status().process_count)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                for deaths in range(1, 7):
                    await anyio.sleep(1.2)  # the pace of the deaths, not a wait for an event
                    if server.status().process_count == 0:
                        break
                    assert (await c.get("/crash")).status_code == 502
                    await logs.wait_until(partial(crashed, deaths))
                tg.cancel_scope.cancel()
            assert lowest > 0
            await server.wait_status(lambda s: s.idle_workers >= server.limits.min_spare, 10)
            assert (await c.get("/hello")).status_code == 200


async def test_retiring_children_are_replaced_at_once(mpm: MPM) -> None:
    with watch_logs() as logs:
        async with serving(mpm=mpm, max_connections_per_child=10) as server, \
                httpx.AsyncClient(base_url=base_url(server), timeout=30) as c:
            statuses: list[int] = []

            async def load() -> None:
                statuses.extend([(await c.get("/hello")).status_code for _ in range(40)])

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(load)
            assert statuses == [200] * 320

            def retired() -> set[int]:
                return {e["pid"] for e in logs.find("retiring child")
                        if e["why"] == "MaxConnectionsPerChild"}

            def replaced() -> set[int]:
                return {e["replaces"] for e in logs.find("child started") if "replaces" in e}

            assert len(retired()) >= 10
            # Each retirement started its replacement itself (maintenance ticks start children
            # that replace nobody); the last one may still be on its way.
            await logs.wait_until(lambda: retired() <= replaced(), 10)


async def test_stop_kills_a_stopped_child_after_the_grace() -> None:
    server = Server(APPS, make_config(graceful_shutdown_timeout=1))
    with watch_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            victim = max(p.pid for p in server.status().processes if p.pid)
            os.kill(victim, signal.SIGSTOP)
            t0 = time.monotonic()
            server.stop()
        took = time.monotonic() - t0
    assert took < 15
    [line] = logs.find("still did not exit")
    assert (line["pid"], line["state"], line["log_level"]) == (victim, "stopped", "warning")
    [done] = logs.find("shutdown complete")
    assert done["killed"] == [victim]
    assert "1 only when killed with SIGKILL" in done["event"]
