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
    # Handlers are installed before serving starts: a USR1/HUP that arrives while the first
    # children boot must not hit the default action (terminate).
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGWINCH,
                                    signal.SIGUSR1, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as tg:

            async def handle_signals() -> None:
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        await server.graceful_restart()
                    elif signum == signal.SIGHUP:
                        await server.restart()
                    else:
                        server.log.info(f"caught {signal.Signals(signum).name}, shutting "
                                        "down gracefully")
                        server.stop()

            tg.start_soon(handle_signals)
            await server.serve()
            tg.cancel_scope.cancel()
