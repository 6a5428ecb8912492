"""The server outlives what would otherwise end it: running out of descriptors, losing its
zygote, children dying often, children that will not stop."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import structlog

from tests.conftest import serving

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

    async def wait_for(self, text: str, timeout: float = 15.0) -> EventDict:
        """The first event whose message contains ``text`` (waits for it)."""
        with anyio.fail_after(timeout):
            while not (found := self.find(text)):
                self._changed = anyio.Event()
                await self._changed.wait()
        return found[0]


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
