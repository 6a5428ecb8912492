"""New connections without keep-alive: accepted in batches, each head read at once, handed
to a slot, closed after its one response (the hello-close benchmark, in small).

On every backend the plaintext connections go through the callback front (``HandoffFront``;
on trio one task drives it), so these also check that nothing of a connection stays behind
in the front once the client has gone: no connection held, no descriptor leaked (the
``no_leaks`` fixture), every request answered.
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from asyncmpm import MPM, Server
from tests.conftest import serving

pytestmark = pytest.mark.anyio

_CLOSE = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


async def _one(server: Server, replies: list[bytes]) -> None:
    async with await anyio.connect_tcp(*server.addresses[0]) as stream:
        await stream.send(_CLOSE)
        reply = b""
        while True:
            try:
                reply += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
    replies.append(reply)


async def _front_holds_nothing(server: Server) -> None:
    """The front closes its copy when the client's FIN reaches it (lingering close): there
    is no event to await for that, so look until it has happened."""
    front = server._handoff
    assert front is not None  # plaintext HTTP/1.1 is held by the callback front
    while len(front):  # noqa: ASYNC110 (no event: see the docstring)
        await anyio.sleep(0.01)


async def test_many_short_connections_are_all_answered_and_none_is_held(mpm: MPM) -> None:
    # Fewer slots than connections at once: some wait in the FIFO queue for a handback.
    async with serving(mpm=mpm) as server:
        replies: list[bytes] = []
        with anyio.fail_after(60):
            for _ in range(4):
                async with anyio.create_task_group() as tg:
                    for _ in range(40):
                        tg.start_soon(_one, server, replies)
            await _front_holds_nothing(server)
        assert len(replies) == 160
        assert all(r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"Hello, world!\n")
                   for r in replies), [r[:40] for r in replies if b" 200 " not in r[:20]]
        metrics = server._ctx.metrics if server._ctx is not None else None
        assert metrics is not None
        assert metrics.open_connections.get("http/1.1") == 0
        assert metrics.connections.get("http/1.1") == 160


async def test_clients_that_leave_early_are_not_held() -> None:
    """Clients that close before their head is complete, right after sending it, or without
    sending anything: the front forgets each one, and a normal request still works."""
    async with serving() as server:
        host, port = server.addresses[0]
        with anyio.fail_after(30):
            for data in (b"", b"GET /hello HTTP/1.1\r\nHo", _CLOSE):
                for _ in range(10):
                    stream = await anyio.connect_tcp(host, port)
                    if data:
                        await stream.send(data)
                    await stream.aclose()
            await _front_holds_nothing(server)
            replies: list[bytes] = []
            await _one(server, replies)
            await _front_holds_nothing(server)
        assert replies[0].startswith(b"HTTP/1.1 200 ")
