"""Shared fixtures: both anyio backends, real servers on random ports, and leak checks."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from asyncmpm import MPM, Config, ListenAddress, Server

HERE = Path(__file__).resolve().parent
APPS = f"{HERE / 'apps.py'}:application"
UNVALIDATED_APPS = f"{HERE / 'apps.py'}:unvalidated"  # the same routes without wsgiref.validate

# Small but real MPM settings, so a 2-core machine runs the suite quickly.
MPM_SETTINGS: dict[MPM, dict[str, Any]] = {
    MPM.PREFORK: {"start_servers": 2, "min_spare_servers": 1, "max_spare_servers": 4,
                      "max_request_workers": 8},
    MPM.WORKER: {"start_servers": 1, "threads_per_child": 4, "min_spare_threads": 2,
                     "max_spare_threads": 8, "max_request_workers": 16, "server_limit": 4},
}


# The front loop runs on each backend a user can pick: plain asyncio, asyncio with uvloop (the
# configuration we benchmark and the default when uvloop is installed) and trio.
BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {"use_uvloop": False}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


@pytest.fixture(params=list(BACKENDS))
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return BACKENDS[str(request.param)]


@pytest.fixture(params=[MPM.PREFORK, MPM.WORKER], ids=["prefork", "worker"])
def mpm(request: pytest.FixtureRequest) -> MPM:
    return MPM(request.param)


def make_config(mpm: MPM = MPM.PREFORK, **directives: Any) -> Config:
    settings: dict[str, Any] = dict(MPM_SETTINGS[mpm])
    settings.update(directives)
    settings.setdefault("proctitle", False)
    return Config(mpm=mpm, listen=(ListenAddress("127.0.0.1", 0),), **settings)


@asynccontextmanager
async def serving(app: str | None = APPS, mpm: MPM = MPM.PREFORK,
                  **directives: Any) -> AsyncIterator[Server]:
    """A real server (front loop in this event loop, real child processes) on a free port."""
    async with Server(app, make_config(mpm, **directives)) as server:
        yield server


def base_url(server: Server) -> str:
    host, port = server.addresses[0]
    return f"http://{host}:{port}"


def _socket_fds() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(("socket:", "pipe:")):
            fds.add(f"{fd}->{target}")
    return fds


@pytest.fixture(autouse=True, scope="session")
def _uvloop_warm() -> None:
    """uvloop opens one process-wide pipe with its first loop's signal handling (and keeps it):
    open it before the leak checks start counting."""
    try:
        import uvloop
    except ImportError:
        return

    async def install_handler() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, lambda: None)

    uvloop.run(install_handler())


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test must leave no child process and no socket or pipe behind."""
    me = psutil.Process()
    before_children = {p.pid for p in me.children(recursive=True)}
    before_fds = _socket_fds()
    yield
    deadline = time.monotonic() + 10
    while True:
        extra = [p for p in me.children(recursive=True) if p.pid not in before_children
                 and p.status() != psutil.STATUS_ZOMBIE]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"leaked processes: {[(p.pid, p.cmdline()) for p in extra]}"
    leaked = _socket_fds() - before_fds
    assert len(leaked) <= 0, f"leaked descriptors: {sorted(leaked)}"
