"""What operators see: the status page (even with every slot busy), access log, titles, demo."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest

from asyncmpm import MPM
from tests.conftest import base_url, serving

pytestmark = pytest.mark.anyio

AUTO_KEYS = ["ServerMPM", "ServerUptimeSeconds", "Total Accesses", "Total kBytes", "Uptime",
             "ReqPerSec", "BusyWorkers", "IdleWorkers", "Scoreboard"]


async def test_status_auto_answers_while_every_slot_is_busy(mpm: MPM) -> None:
    directives: dict[str, Any] = (
        {"start_servers": 2, "max_request_workers": 2, "min_spare_servers": 1,
         "max_spare_servers": 2}
        if mpm is MPM.PREFORK
        else {"start_servers": 1, "threads_per_child": 2, "max_request_workers": 2,
              "server_limit": 1, "min_spare_threads": 1, "max_spare_threads": 4}
    )
    async with serving(mpm=mpm, status_path="/server-status", **directives) as server, \
            httpx.AsyncClient(base_url=base_url(server), timeout=30) as c:
        assert (await c.get("/hello")).status_code == 200
        async with anyio.create_task_group() as tg:
            for _ in range(3):  # two hold both slots, one waits in the queue
                tg.start_soon(c.get, "/whoami?sleep=1.5")
            snap = await server.wait_status(lambda s: s.busy_workers >= 2, timeout=10)
            # ReqPerSec needs a whole second of uptime: let the clock get there.
            await anyio.sleep(max(0.0, 1.05 - (snap.taken_at - snap.restart_time)))
            with anyio.fail_after(1):  # answered by the front loop, not a slot
                r = await c.get("/server-status?auto")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        lines = r.text.splitlines()
        keys = [line.split(":", 1)[0] for line in lines[1:]]
        positions = [keys.index(k) for k in AUTO_KEYS]
        assert positions == sorted(positions), keys  # Apache's order
        fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        assert fields["ServerMPM"] == mpm.value
        assert fields["BusyWorkers"] == "2"
        assert int(fields["Total Accesses"]) >= 1
        assert fields["Scoreboard"].count("W") == 2
        html = (await c.get("/server-status")).text
        assert "Apache Server Status for" in html


async def test_status_is_refused_to_other_addresses() -> None:
    async with serving(status_path="/server-status", status_allow=("10.0.0.0/8",)) as server:
        ctx = server._ctx
        assert ctx is not None
        assert ctx._status_allowed("127.0.0.1")
        assert ctx._status_allowed("10.1.2.3")
        assert not ctx._status_allowed("192.0.2.1")


async def test_access_log_in_combined_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with serving(access_log=str(log)) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        # Raw, because clients refuse to send a tab inside a value; it must not break the line.
        async with await anyio.connect_tcp(*server.addresses[0]) as s:
            await s.send(b'GET /hello HTTP/1.1\r\nHost: t\r\nUser-Agent: evil "agent"\tX\r\n'
                         b"Referer: http://r/\r\nConnection: close\r\n\r\n")
            while True:
                try:
                    await s.receive()
                except anyio.EndOfStream:
                    break
        await c.get("/nope")
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    pattern = (r'^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] '
               r'"GET /hello HTTP/1\.1" 200 14 "http://r/" "evil \\"agent\\"\\tX"$')
    assert re.match(pattern, lines[0]), lines[0]
    assert ' "GET /nope HTTP/1.1" 404 10 ' in lines[1]


async def test_process_titles_and_demo_app(mpm: MPM) -> None:
    async with serving(None, mpm=mpm, proctitle=True) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        r = await c.get("/")
        assert r.status_code == 200
        assert "asyncmpm is serving" in r.text
        assert re.search(rf"<th>MPM</th><td>{mpm.value} *</td>", r.text)
        titles = set()
        for proc in psutil.Process().children(recursive=True):
            titles.add(" ".join(proc.cmdline()).strip())
        assert f"asyncmpm: zygote [{mpm.value}]" in titles
        assert any(re.fullmatch(r"asyncmpm: child slot \d+ gen 0", t) for t in titles), titles


async def test_access_log_with_custom_log_format(tmp_path: Path, mpm: MPM) -> None:
    log = tmp_path / "access.log"
    fmt = '%h %m %U%q %H %>s %b %{X-Test}i %{Content-Type}o %P %{tid}P %D'
    async with serving(access_log=str(log), access_log_format=fmt, mpm=mpm) as server, \
            httpx.AsyncClient(base_url=base_url(server)) as c:
        r = await c.get("/hello?x=1", headers={"X-Test": 'a "b"'})
        assert r.status_code == 200
    line = log.read_text()
    m = re.fullmatch(r'127\.0\.0\.1 GET /hello\?x=1 HTTP/1\.1 200 14 a \\"b\\" '
                     r"text/plain (\d+) (\d+) (\d+)\n", line)
    assert m, line
    pid, tid, _ = (int(g) for g in m.groups())
    assert pid != os.getpid()  # the child that served it
    assert tid > 0


async def _wait_for_text(path: Path, text: str, timeout: float = 10) -> str:
    """Poll a file another process writes, with a deadline."""
    apath = anyio.Path(path)
    with anyio.fail_after(timeout):
        while True:
            content = await apath.read_text() if await apath.exists() else ""
            if text in content:
                return content
            await anyio.sleep(0.02)


async def test_error_log_takes_stderr_and_gives_it_back(tmp_path: Path, mpm: MPM) -> None:
    log = tmp_path / "error.log"
    before = os.fstat(2)
    async with serving(error_log=str(log), mpm=mpm) as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        assert os.fstat(2).st_ino == log.stat().st_ino
        assert (await c.get("/raise")).status_code == 500
        await _wait_for_text(log, "boom from the application")
        log.rename(tmp_path / "error.log.1")  # logrotate
        assert await server.restart()
        assert (await c.get("/raise")).status_code == 500
        content = await _wait_for_text(log, "boom from the application")
        assert content.count("RuntimeError: boom from the application") == 1
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


async def test_children_report_cpu_times_for_mod_status(mpm: MPM) -> None:
    async with serving(mpm=mpm, status_path="/server-status") as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        assert (await c.get("/spin?ms=50")).status_code == 200  # 5 clock ticks of CPU
        snap = await server.wait_status(lambda s: s.total_accesses >= 1, timeout=10)
        served = [t for p in snap.processes for t in p.threads if t.access_count]
        assert served
        assert sum(served[0].times[:2]) > 0  # the child's user+system CPU seconds so far
        page = (await c.get("/server-status")).text
        assert "<th>CPU\n</th>" in page
