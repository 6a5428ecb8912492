"""The server outlives what would otherwise end it: running out of descriptors, losing its
zygote, children dying often, children that will not stop."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import anyio
import httpx
import psutil
import pytest
import structlog

from asyncmpm import MPM, Server
from asyncmpm.supervisor.scoreboard import SlotState
from tests.conftest import APPS, HERE, base_url, make_config, serving

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


def pids(server: Server) -> set[int]:
    return {p.pid for p in server.status().processes if p.pid}


async def test_killing_the_zygote_loses_no_request(mpm: MPM) -> None:
    extra: dict[str, Any] = {"min_spare_servers": 2} if mpm is MPM.PREFORK else {}
    with watch_logs() as logs:
        async with serving(mpm=mpm, **extra) as server, httpx.AsyncClient(
            base_url=base_url(server), timeout=30
        ) as c:
            dead = server.supervisor.zygote.pid
            before = pids(server)
            results: list[int] = []

            async def slow() -> None:
                results.append((await c.get("/whoami?sleep=1.5")).status_code)

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                await server.wait_status(lambda s: any(
                    t.state is SlotState.BUSY_WRITE for p in s.processes for t in p.threads), 10)
                os.kill(dead, signal.SIGKILL)
                died = await logs.wait_for(f"zygote pid {dead} exit signal SIGKILL")
                assert died["log_level"] == "error"
                started = await logs.wait_for(f"replacing pid {dead}")
                assert started["log_level"] == "info"
            assert results == [200]  # the request in flight finished
            zygote = server.supervisor.zygote.pid
            assert zygote != dead
            # The old children are ours now (we are their subreaper) and keep serving.
            assert {psutil.Process(pid).ppid() for pid in before} == {os.getpid()}
            for _ in range(5):
                assert (await c.get("/hello")).status_code == 200
            # One old child dies: it is reaped here, and its replacement comes from the new
            # zygote (prefork: the next tick; worker: at once, as a signal death).
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            fresh = await server.wait_status(
                lambda s: victim not in {p.pid for p in s.processes}
                and bool({p.pid for p in s.processes if p.pid} - before), 10)
            new_pids = {p.pid for p in fresh.processes if p.pid} - before
            assert {psutil.Process(pid).ppid() for pid in new_pids} == {zygote}
            await logs.wait_until(lambda: any(e.get("pid") == victim
                                              for e in logs.find("child stopped")))
            assert (await c.get("/hello")).status_code == 200
    for pid in before:  # reaped, not left as zombies
        assert not psutil.pid_exists(pid) or psutil.Process(pid).ppid() != os.getpid()


def running(p: psutil.Process) -> bool:
    try:
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def test_sigkill_of_the_main_process_ends_every_child() -> None:
    """A child's zygote may be gone, so only the EOF on its slot channels tells it that the
    main process died: nothing may outlive a SIGKILLed server."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncmpm", "--listen", "127.0.0.1:0", "--start-servers", "3",
         "--no-proctitle", APPS], cwd=HERE.parent, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if "resuming normal operations" in line:
                break
        main = psutil.Process(proc.pid)
        [zygote] = main.children()
        zygote.kill()
        for line in proc.stdout:
            if found := re.search(rf"zygote pid (\d+) started, replacing pid {zygote.pid}", line):
                break
        assert found
        family = main.children(recursive=True)
        orphans = [p for p in family if p.ppid() == main.pid and p.pid != int(found[1])]
        assert len(orphans) >= 3  # the old children, kept serving and now ours
        proc.kill()  # the main process only, not its process group
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not [p.pid for p in alive if running(p)]  # a zombie is for init to reap
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
