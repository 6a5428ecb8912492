"""asyncmpm: Apache httpd's prefork and worker MPMs for WSGI apps, on an anyio front loop.

Embedding::

    async with asyncmpm.Server("myapp:app", asyncmpm.Config(mpm=asyncmpm.MPM.WORKER)) as server:
        print(server.addresses)

or ``await task_group.start(server.serve)``; for scripts, ``asyncmpm.run("myapp:app")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from asyncmpm.config.model import MPM, Backend, Config, ListenAddress, RequestReadTimeout
from asyncmpm.errors import AppLoadError, AsyncMPMError, ChildBootError, ConfigError, ProtocolError
from asyncmpm.front.context import VERSION
from asyncmpm.front.server import Server

__all__ = [
    "MPM",
    "AppLoadError",
    "AsyncMPMError",
    "Backend",
    "ChildBootError",
    "Config",
    "ConfigError",
    "ListenAddress",
    "ProtocolError",
    "RequestReadTimeout",
    "Server",
    "__version__",
    "run",
]

__version__ = VERSION


def run(
    app: str | Callable[..., Iterable[bytes]] | None = None,
    *,
    mpm: str | MPM = MPM.PREFORK,
    backend: str | Backend = Backend.ASYNCIO,
    config: Config | None = None,
    **directives: Any,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT: the one-call entry point for scripts."""
    from asyncmpm.front.runner import run_server

    base = config or Config()
    base = base.replace(mpm=MPM(mpm), backend=Backend(backend), **directives)
    run_server(Server(app, base))
