"""Run a Server on the configured backend until a stop signal (used by the CLI and run())."""

from __future__ import annotations

import importlib.util
import signal

import anyio

from asyncmpm.config.model import Backend
from asyncmpm.front.server import Server

__all__ = ["run_server"]


def run_server(server: Server) -> None:
    config = server.config
    options: dict[str, object] = {}
    if config.backend is Backend.ASYNCIO:
        use_uvloop = config.use_uvloop
        if use_uvloop is None:
            use_uvloop = importlib.util.find_spec("uvloop") is not None
        options["use_uvloop"] = use_uvloop
    anyio.run(_serve_until_signalled, server, backend=config.backend.value,
              backend_options=options)


async def _serve_until_signalled(server: Server) -> None:
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    server.log.info(f"caught {signal.Signals(signum).name}, shutting down "
                                    "gracefully")
                    server.stop()

        tg.start_soon(watch_signals)
        await server.serve()
        tg.cancel_scope.cancel()
