"""Graceful restart (httpd's SIGUSR1) loses no request and brings in new code; a broken
reload keeps the old generation serving; SIGHUP restarts at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest

from asyncmpm import MPM, Config, Server
from asyncmpm.supervisor.scoreboard import ScoreboardSnapshot
from tests.conftest import APPS, base_url, serving

pytestmark = pytest.mark.anyio

APP = '''
import os, time
VERSION = "{version}"

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        def chunks():
            for i in range(4):
                time.sleep(0.05)
                yield f"{{VERSION}} part {{i}}\\n".encode()
        return chunks()
    if path == "/slow":
        time.sleep(0.3)
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def none_of(pids: set[int], snapshot: ScoreboardSnapshot) -> bool:
    return not pids & {p.pid for p in snapshot.processes}


def write_app(path: Path, version: str) -> None:
    path.write_text(APP.format(version=version))


async def test_graceful_restarts_under_load_lose_nothing(mpm: MPM, tmp_path: Path) -> None:
    app = tmp_path / "versioned.py"
    write_app(app, "v0")
    failures: list[str] = []
    seen: list[str] = []
    done = anyio.Event()
    async with serving(f"{app}:application", mpm=mpm) as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:

        async def load(path: str) -> None:
            while not done.is_set():
                try:
                    r = await c.get(path)
                except httpx.HTTPError as exc:
                    failures.append(f"{path}: {exc!r}")
                    continue
                if r.status_code != 200:
                    failures.append(f"{path}: {r.status_code}")
                elif path == "/stream" and r.text.count("part") != 4:
                    failures.append(f"{path}: truncated {r.text!r}")
                seen.append(r.text.split()[0])

        async with anyio.create_task_group() as tg:
            for path in ("/", "/", "/slow", "/stream"):
                tg.start_soon(load, path)
            for n in range(1, 4):
                write_app(app, f"v{n}")
                old_pids = {p.pid for p in server.status().processes if p.pid}
                assert await server.graceful_restart()
                # New requests reach the new code ...
                with anyio.fail_after(20):
                    while (await c.get("/")).text.split()[0] != f"v{n}":
                        pass
                # ... and the old children finish their requests and leave.
                await server.wait_status(partial(none_of, old_pids), timeout=20)
            done.set()
        assert not failures, failures[:5]
        assert server.status().generation == 3
        assert {"v0", "v1", "v2", "v3"} <= set(seen)


async def test_broken_reload_keeps_the_old_generation(tmp_path: Path) -> None:
    app = tmp_path / "versioned.py"
    write_app(app, "v0")
    async with serving(f"{app}:application") as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        app.write_text("this is not python\n")
        assert not await server.graceful_restart()
        assert (await c.get("/")).text.startswith("v0 ")
        assert server.status().generation == 0


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP], ids=["USR1", "HUP"])
def test_restart_signals_reach_the_cli(tmp_path: Path, sig: signal.Signals) -> None:
    app = tmp_path / "versioned.py"
    write_app(app, "v0")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncmpm", "--listen", "127.0.0.1:0", "--start-servers", "2",
         f"{app}:application"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    assert proc.stdout is not None
    try:
        port = None
        for line in proc.stdout:
            if "resuming normal operations" in line:
                port = int(line.rsplit("127.0.0.1:", 1)[1].split("'")[0])
                break
        assert port
        write_app(app, "v1")
        proc.send_signal(sig)
        for _ in range(200):
            reply = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
            if reply.startswith("v1 "):
                break
            time.sleep(0.05)  # a separate process: poll its answers
        assert reply.startswith("v1 ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


async def test_restart_reopens_the_access_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with serving(access_log=str(log)) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        await c.get("/hello")
        # The line is written with the scoreboard update, just after the response: wait for
        # it, or the reopen could win the race.
        await server.wait_status(lambda s: s.total_accesses >= 1, timeout=10)
        log.rename(tmp_path / "access.log.1")  # what logrotate does
        assert await server.graceful_restart()
        await c.get("/hello")
    assert (tmp_path / "access.log.1").read_text().count("GET /hello") == 1
    assert log.read_text().count("GET /hello") == 1


async def test_graceful_restart_rereads_the_configuration(tmp_path: Path) -> None:
    from asyncmpm.config.apache_file import load_config
    from tests.conftest import make_config

    conf = tmp_path / "httpd.conf"
    conf.write_text("Timeout 30\nMaxRequestWorkers 6\n")

    def reload() -> Config:
        return load_config(conf, make_config())

    async with Server(APPS, reload(), reload=reload) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        assert (server.config.timeout, server.limits.max_request_workers) == (30, 6)
        conf.write_text("Timeout 12\nMaxRequestWorkers 4\nServerLimit 99\n")
        assert await server.graceful_restart()
        assert (server.config.timeout, server.limits.max_request_workers) == (12, 4)
        assert server.limits.server_limit == 256  # kept across restarts, not 99 (AH00179)
        conf.write_text("Timeout never\n")
        assert not await server.graceful_restart()  # a broken file changes nothing
        assert server.config.timeout == 12
        assert server.status().generation == 1
        assert (await c.get("/hello")).status_code == 200
