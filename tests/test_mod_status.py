"""mod_status rendering: ``?auto`` lines, counting rules, %g, the HTML page, escaping."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from asyncmpm.status import mod_status
from asyncmpm.status.mod_status import (
    ServerInfo,
    StatusQuery,
    auto_fields,
    count_workers,
    format_g,
    format_uptime,
    parse_query,
    render_auto,
    render_html,
    scoreboard_letters,
)
from asyncmpm.supervisor.scoreboard import (
    ProcessSnapshot,
    ScoreboardSnapshot,
    SlotState,
    WorkerSnapshot,
)
from tests.conftest import base_url, serving

LETTER = {s.value: s for s in SlotState}


BLANK = WorkerSnapshot()
BUSY5 = WorkerSnapshot(access_count=5)


def proc(index: int, pid: int, gen: int, letters: str, *, quiescing: bool = False,
         like: WorkerSnapshot = BLANK) -> ProcessSnapshot:
    """A process slot whose threads are in the states ``letters`` spells (mod_status letters),
    their other fields copied from ``like``."""
    threads = tuple(dataclasses.replace(like, state=LETTER[c]) for c in letters)
    return ProcessSnapshot(index, pid, gen, quiescing, threads)


def board(*procs: ProcessSnapshot, mpm: str = "prefork", generation: int = 0,
          total_accesses: int = 0, total_bytes: int = 0,
          total_duration: float = 0.0) -> ScoreboardSnapshot:
    tpc = len(procs[0].threads) if procs else 1
    return ScoreboardSnapshot(mpm, generation, tpc, procs, total_accesses=total_accesses,
                              total_bytes=total_bytes, total_duration=total_duration)


def prefork_board(letters: str, generation: int = 0) -> ScoreboardSnapshot:
    return board(*(proc(i, 0 if c == "." else 100 + i, generation, c)
                   for i, c in enumerate(letters)), generation=generation)


INFO = ServerInfo(
    server_name="www.example.com",
    server_version="asyncmpm/0.1.0 (Python 3.11.7; anyio asyncio)",
    mpm="prefork",
    built="asyncmpm 0.1.0",
    config_generation=1,
    mpm_generation=0,
    restart_time=1_000_000_000.0,
    now=1_000_090_061.0,
    uptime=90061.0,
    load=(0.125, 1.5, 2.0),
    cpu_user=1.5,
    cpu_system=0.5,
    cpu_children_user=0.0,
    cpu_children_system=0.0,
    local_address="127.0.0.1",
)


@pytest.fixture(autouse=True)
def fixed_clock_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU figures go through clock ticks; pin Linux's 100 per second."""
    monkeypatch.setattr(mod_status, "CLK_TCK", 100)


@pytest.fixture(autouse=True)
def fixed_tz() -> Iterator[None]:
    """A POSIX TZ string (3 hours west of UTC, named ABC): no tzdata needed."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "ABC+3"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


# ---------------------------------------------------------------------------------- ?auto
def test_auto_prefork_exact() -> None:
    snapshot = board(
        proc(0, 100, 0, "W", like=BUSY5),
        proc(1, 101, 0, "_"),
        proc(2, 102, 0, "K"),
        proc(3, 0, 0, "."),
        proc(4, 104, 0, "S"),
        total_accesses=10, total_bytes=20 * 1024 + 1023, total_duration=2.5,
    )
    assert render_auto(snapshot, INFO) == (
        "www.example.com\n"
        "ServerVersion: asyncmpm/0.1.0 (Python 3.11.7; anyio asyncio)\n"
        "ServerMPM: prefork\n"
        "Server Built: asyncmpm 0.1.0\n"
        "CurrentTime: Sunday, 09-Sep-2001 23:47:41 ABC\n"
        "RestartTime: Saturday, 08-Sep-2001 22:46:40 ABC\n"
        "ParentServerConfigGeneration: 1\n"
        "ParentServerMPMGeneration: 0\n"
        "ServerUptimeSeconds: 90061\n"
        "ServerUptime: 1 day 1 hour 1 minute 1 second\n"
        "Load1: 0.12\n"
        "Load5: 1.50\n"
        "Load15: 2.00\n"
        "Total Accesses: 10\n"
        "Total kBytes: 20\n"
        "Total Duration: 2500\n"
        "CPUUser: 1.5\n"
        "CPUSystem: 0.5\n"
        "CPUChildrenUser: 0\n"
        "CPUChildrenSystem: 0\n"
        "CPULoad: 0.00222072\n"
        "Uptime: 90061\n"
        "ReqPerSec: 0.000111036\n"
        "BytesPerSec: 0.227401\n"
        "BytesPerReq: 2048\n"
        "DurationPerReq: 250\n"
        "BusyWorkers: 2\n"
        "GracefulWorkers: 0\n"
        "IdleWorkers: 1\n"
        "Scoreboard: W_K.S\n"
    )


def _keys(text: str) -> list[str]:
    return [line.partition(":")[0] for line in text.splitlines()[1:]]


ALWAYS_BEFORE = ["ServerVersion", "ServerMPM", "Server Built", "CurrentTime", "RestartTime",
                 "ParentServerConfigGeneration", "ParentServerMPMGeneration",
                 "ServerUptimeSeconds", "ServerUptime", "Load1", "Load5", "Load15",
                 "Total Accesses", "Total kBytes", "Total Duration", "CPUUser", "CPUSystem",
                 "CPUChildrenUser", "CPUChildrenSystem"]
ALWAYS_AFTER = ["BusyWorkers", "GracefulWorkers", "IdleWorkers", "Scoreboard"]


@pytest.mark.parametrize(
    ("uptime", "accesses", "cpu", "optional"),
    [
        (100, 4, 1.0, ["CPULoad", "Uptime", "ReqPerSec", "BytesPerSec", "BytesPerReq",
                       "DurationPerReq"]),
        (0, 4, 1.0, ["CPULoad", "Uptime", "BytesPerReq", "DurationPerReq"]),
        (100, 0, 1.0, ["CPULoad", "Uptime", "ReqPerSec", "BytesPerSec"]),
        (100, 4, 0.0, ["Uptime", "ReqPerSec", "BytesPerSec", "BytesPerReq", "DurationPerReq"]),
        (0, 0, 0.0, ["Uptime"]),
    ],
    ids=["all", "no-uptime", "no-accesses", "no-cpu", "none"],
)
def test_auto_optional_lines(uptime: int, accesses: int, cpu: float,
                             optional: list[str]) -> None:
    info = dataclasses.replace(INFO, uptime=uptime, cpu_user=cpu, cpu_system=0.0)
    text = render_auto(board(proc(0, 1, 0, "_"), total_accesses=accesses), info)
    assert _keys(text) == ALWAYS_BEFORE + optional + ALWAYS_AFTER


@pytest.mark.parametrize(
    ("accesses", "uptime", "expected"),
    [(109, 13, "8.38461"), (112, 13, "8.61539"), (143, 17, "8.41177")],
)
def test_auto_rates_use_c_float_precision(accesses: int, uptime: int, expected: str) -> None:
    """Apache divides ``(float) count / (float) up_time``: in double these would round the
    other way (8.38462, 8.61538, 8.41176)."""
    info = dataclasses.replace(INFO, uptime=uptime)
    text = render_auto(board(proc(0, 1, 0, "_"), total_accesses=accesses), info)
    assert f"\nReqPerSec: {expected}\n" in text


def test_auto_cpu_load_with_zero_uptime_is_inf_as_in_c() -> None:
    info = dataclasses.replace(INFO, uptime=0)
    assert "CPULoad: inf\n" in render_auto(board(proc(0, 1, 0, "_")), info)


@pytest.mark.parametrize(
    ("snapshot", "busy", "graceful", "idle", "letters"),
    [
        pytest.param(prefork_board("_WRKLDCGIS."), 6, 1, 1, "_WRKLDCGIS.", id="prefork-states"),
        pytest.param(
            board(
                proc(0, 200, 1, "_W_R"),
                proc(1, 201, 0, "_GG_"),  # old generation: READY is not idle, G is graceful
                proc(2, 202, 0, "WWGW", quiescing=True),  # quiescing: not counted at all
                proc(3, 0, 0, "...."),
                proc(4, 204, 1, "SS__"),
                mpm="worker", generation=1,
            ),
            2, 2, 4, "_W_R_GG_WWGW....SS__", id="worker-old-gen-quiescing",
        ),
        pytest.param(prefork_board("GGW__", generation=1), 1, 2, 2, "GGW__",
                     id="prefork-graceful-restart"),
        pytest.param(
            # httpd's prefork never marks a process quiescing: its G slot still counts.
            board(proc(0, 300, 0, "G", quiescing=True), proc(1, 301, 1, "_"), generation=1),
            0, 1, 1, "G_", id="prefork-retiring-process-counts"),
        pytest.param(board(proc(0, 0, 0, "KW")), 0, 0, 0, "KW", id="no-pid-not-counted"),
    ],
)
def test_worker_counts(snapshot: ScoreboardSnapshot, busy: int, graceful: int, idle: int,
                       letters: str) -> None:
    counts = count_workers(snapshot)
    assert (counts.busy, counts.graceful, counts.idle) == (busy, graceful, idle)
    # server.status() hands embedding programs the same figures.
    assert (snapshot.busy_workers, snapshot.graceful_workers, snapshot.idle_workers) == (
        busy, graceful, idle)
    text = render_auto(snapshot, INFO)
    assert f"BusyWorkers: {busy}\nGracefulWorkers: {graceful}\nIdleWorkers: {idle}\n" in text
    assert text.endswith(f"\nScoreboard: {letters}\n")
    html = render_html(snapshot, INFO, StatusQuery())
    assert (f"<dt>{busy} requests currently being processed, {graceful} workers gracefully "
            f"restarting, {idle} idle workers</dt>") in html


@pytest.mark.parametrize(("limit", "letters"), [(None, "W_...."), (3, "W_."), (1, "W_")])
def test_process_limit_hides_disabled_dead_slots(limit: int | None, letters: str) -> None:
    snapshot = prefork_board("W_....")
    assert scoreboard_letters(snapshot, limit) == letters
    info = dataclasses.replace(INFO, process_limit=limit)
    assert render_auto(snapshot, info).endswith(f"Scoreboard: {letters}\n")


def test_auto_scoreboard_is_not_wrapped() -> None:
    text = render_auto(prefork_board("_" * 200), INFO)
    assert f"\nScoreboard: {'_' * 200}\n" in text


# ---------------------------------------------------------------------------------- helpers
@pytest.mark.parametrize(
    ("value", "precision", "expected"),
    [
        (0.5, 6, "0.5"),
        (1e-05, 6, "1e-05"),
        (0.0001, 6, "0.0001"),
        (12345678, 6, "1.23457e+07"),
        (123456, 6, "123456"),
        (1234567, 6, "1.23457e+06"),
        (1e100, 6, "1e+100"),
        (0, 6, "0"),
        (250.0, 6, "250"),
        (2.0 / 3.0, 6, "0.666667"),
        (-1.5, 6, "-1.5"),
        (math.inf, 6, "inf"),
        (0.00268456, 3, "0.00268"),
        (4.0349, 3, "4.03"),
        (1234.5, 3, "1.23e+03"),
    ],
)
def test_format_g_matches_printf(value: float, precision: int, expected: str) -> None:
    assert format_g(value, precision) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, ""),
        (1, "1 second"),
        (2, "2 seconds"),
        (60, "1 minute"),
        (61, "1 minute 1 second"),
        (3600, "1 hour"),
        (7322, "2 hours 2 minutes 2 seconds"),
        (86400, "1 day"),
        (86404, "1 day 4 seconds"),
        (90061, "1 day 1 hour 1 minute 1 second"),
        (2 * 86400 + 2 * 3600 + 3 * 60 + 4, "2 days 2 hours 3 minutes 4 seconds"),
    ],
)
def test_uptime_wording(seconds: int, expected: str) -> None:
    assert format_uptime(seconds) == expected
    info = dataclasses.replace(INFO, uptime=seconds)
    text = render_auto(board(proc(0, 1, 0, "_")), info)
    # show_time() puts a space before each part, so zero uptime leaves "ServerUptime:" bare.
    assert f"\nServerUptime:{' ' + expected if expected else ''}\n" in text
    html = render_html(board(proc(0, 1, 0, "_")), info, StatusQuery())
    assert f"<dt>Server uptime: {' ' + expected if expected else ''}</dt>" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", StatusQuery()),
        ("auto", StatusQuery(auto=True)),
        ("notable", StatusQuery(notable=True)),
        ("refresh", StatusQuery(refresh=10)),
        ("refresh=6", StatusQuery(refresh=6)),
        ("refresh=42;fish", StatusQuery(refresh=42)),
        ("refresh=0", StatusQuery(refresh=10)),
        ("refresh=-5", StatusQuery(refresh=10)),
        ("refresh=fish", StatusQuery(refresh=10)),
        ("refresh=", StatusQuery(refresh=10)),
        ("refresh= +7x", StatusQuery(refresh=7)),
        ("refresh=99999999999999999999999", StatusQuery(refresh=2**63 - 1)),
        pytest.param("refresh=" + "9" * 5000, StatusQuery(refresh=2**63 - 1), id="huge"),
        pytest.param("refresh=-" + "9" * 5000, StatusQuery(refresh=10), id="huge-negative"),
        pytest.param("refresh=" + "0" * 5000 + "8", StatusQuery(refresh=8), id="zero-padded"),
        ("notable&refresh=3&auto", StatusQuery(auto=True, notable=True, refresh=3)),
        ("xautox", StatusQuery(auto=True)),  # substring search, as mod_status
        ("autorefresh=5", StatusQuery(auto=True, refresh=5)),
    ],
)
def test_parse_query(query: str, expected: StatusQuery) -> None:
    assert parse_query(query) == expected


# ---------------------------------------------------------------------------------- HTML
def _pre(html: str) -> str:
    match = re.search(r"<pre>(.*?)</pre>", html, re.S)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 128, 130, 256])
def test_html_scoreboard_wraps_at_64(n: int) -> None:
    letters = ("_W" * n)[:n]
    pre = _pre(render_html(prefork_board(letters), INFO, StatusQuery()))
    lines = [letters[i:i + 64] for i in range(0, n, 64)]
    # Apache writes a newline after every 64th letter, including the last one.
    assert pre == "\n".join(lines) + ("\n" if n % 64 == 0 else "")
    assert all(len(line) <= 64 for line in pre.split("\n"))


def test_html_header_and_legend() -> None:
    snapshot = board(proc(0, 100, 0, "W", like=BUSY5), proc(1, 101, 0, "_"),
                     total_accesses=10, total_bytes=20 * 1024, total_duration=2.5)
    html = render_html(snapshot, INFO, StatusQuery())
    # Apache's own test suite (t/modules/status.t) matches this prefix.
    assert "<h1>Apache Server Status for www.example.com (via 127.0.0.1)</h1>" in html
    for line in [
        "<dl><dt>Server Version: asyncmpm/0.1.0 (Python 3.11.7; anyio asyncio)</dt>",
        "<dt>Server MPM: prefork</dt>",
        "<dt>Server Built: asyncmpm 0.1.0\n</dt></dl><hr /><dl>",
        "<dt>Current Time: Sunday, 09-Sep-2001 23:47:41 ABC</dt>",
        "<dt>Restart Time: Saturday, 08-Sep-2001 22:46:40 ABC</dt>",
        "<dt>Parent Server Config. Generation: 1</dt>",
        "<dt>Parent Server MPM Generation: 0</dt>",
        "<dt>Server uptime:  1 day 1 hour 1 minute 1 second</dt>",
        "<dt>Server load: 0.12 1.50 2.00</dt>",
        "<dt>Total accesses: 10 - Total Traffic: 20 kB - Total Duration: 2500</dt>",
        "<dt>CPU Usage: u1.5 s0.5 cu0 cs0 - 0.00222% CPU load</dt>",
        "<dt>0.000111 requests/sec - 0 B/second - 2048 B/request - 250 ms/request</dt>",
        "<dt>1 requests currently being processed, 0 workers gracefully restarting, "
        "1 idle workers</dt>",
        '"<b><code>_</code></b>" Waiting for Connection,',
        '"<b><code>S</code></b>" Starting up,',
        '"<b><code>R</code></b>" Reading Request,<br />',
        '"<b><code>W</code></b>" Sending Reply,',
        '"<b><code>K</code></b>" Keepalive (read),',
        '"<b><code>D</code></b>" DNS Lookup,<br />',
        '"<b><code>C</code></b>" Closing connection,',
        '"<b><code>L</code></b>" Logging,',
        '"<b><code>G</code></b>" Gracefully finishing,<br />',
        '"<b><code>I</code></b>" Idle cleanup of worker,',
        '"<b><code>.</code></b>" Open slot with no current process<br />',
    ]:
        assert line in html
    assert html.endswith("</body></html>\n")


@pytest.mark.parametrize(
    ("kbytes", "uptime", "traffic", "rates"),
    [
        (0, 0, "0 kB", ""),
        (2048, 10, "2.0 MB",
         "0.1 requests/sec - 204.8 kB/second - 2.0 MB/request - 0 ms/request"),
        (3 * 1048576, 1, "3.0 GB",
         "1 requests/sec - 3.0 GB/second - 3.0 GB/request - 0 ms/request"),
    ],
)
def test_html_traffic_units(kbytes: int, uptime: int, traffic: str, rates: str) -> None:
    snapshot = board(proc(0, 1, 0, "_"), total_accesses=1 if kbytes else 0,
                     total_bytes=kbytes * 1024)
    info = dataclasses.replace(INFO, uptime=uptime)
    html = render_html(snapshot, info, StatusQuery())
    assert f"Total Traffic: {traffic} - " in html
    assert f"<dt>{rates}</dt>" in html


MALICIOUS = WorkerSnapshot(
    access_count=1,
    client='<script>alert("c")</script>',
    request='GET /"><img src=x onerror=alert(1)>\r\n<b>x HTTP/1.1',
    vhost='evil&"<host>',
    protocol="HTTP/<1>",
)


@pytest.mark.parametrize("notable", [False, True], ids=["table", "notable"])
def test_html_escapes_network_fields(notable: bool) -> None:
    snapshot = board(proc(0, 100, 0, "W", like=MALICIOUS))
    info = dataclasses.replace(INFO, server_name="<srv>", local_address="::1")
    html = render_html(snapshot, info, StatusQuery(notable=notable))
    for raw in ("<script>", "<img", "<b>x", "<host>", "<1>", "\r", "<srv>"):
        assert raw not in html
    assert "&lt;script&gt;alert(&quot;c&quot;)&lt;/script&gt;" in html
    assert "GET /\\&quot;&gt;&lt;img src=x onerror=alert(1)&gt;\\r\\n&lt;b&gt;x HTTP/1.1" in html
    assert "evil&amp;&quot;&lt;host&gt;" in html
    assert "Apache Server Status for &lt;srv&gt; (via ::1)" in html


def _row_snapshot() -> ScoreboardSnapshot:
    finished = WorkerSnapshot(
        access_count=7, my_access_count=3, conn_count=2, bytes_served=3 * 1048576,
        my_bytes_served=1048576, conn_bytes=2048, start_time=1_000_090_050.0,
        stop_time=1_000_090_050.25, last_used=1_000_090_050.25, duration=1.2345,
        client="10.0.0.1", protocol="http/1.1", vhost="www:80", request="GET /x HTTP/1.1",
        times=(1.25, 0.5, 0.0, 0.01),
    )
    # In flight: stop_time (of the previous request) < start_time, so Req shows 0.
    in_flight = dataclasses.replace(finished, start_time=1_000_090_060.0)
    return board(proc(0, 100, 2, "K", like=finished), proc(1, 101, 2, "W", like=in_flight),
                 proc(2, 0, 1, ".", like=finished), proc(3, 103, 2, "_"), generation=2)


def test_html_table_rows() -> None:
    html = render_html(_row_snapshot(), INFO, StatusQuery())
    assert ("<th>Srv</th><th>PID</th><th>Acc</th><th>M</th><th>CPU\n</th><th>SS</th>"
            "<th>Req</th><th>Dur</th><th>Conn</th><th>Child</th><th>Slot</th><th>Client</th>"
            "<th>Protocol</th><th>VHost</th><th>Request</th></tr>") in html
    rows = re.findall(r"<tr><td><b>.*?</tr>", html, re.S)
    tail = ("</td><td>2.0</td><td>1.00</td><td>3.00\n</td><td>10.0.0.1</td><td>http/1.1</td>"
            "<td nowrap>www:80</td><td nowrap>GET /x HTTP/1.1</td></tr>")
    assert rows == [
        "<tr><td><b>0-2</b></td><td>100</td><td>2/3/7</td><td><b>K</b>\n</td>"
        "<td>1.76</td><td>10</td><td>250</td><td>1234" + tail,
        # In flight: SS counts from the request's start, Req is 0 until it ends.
        "<tr><td><b>1-2</b></td><td>101</td><td>2/3/7</td><td><b>W</b>\n</td>"
        "<td>1.76</td><td>1</td><td>0</td><td>1234" + tail,
        "<tr><td><b>2-1</b></td><td>-</td><td>2/3/7</td><td>.\n</td>"
        "<td>1.76</td><td>10</td><td>250</td><td>1234" + tail,
    ]
    assert "<tr><th>Srv</th><td>Child Server number - generation</td></tr>" in html
    assert "<tr><th>CPU</th><td>CPU usage, number of seconds</td></tr>" in html


def test_notable_renders_text_not_table() -> None:
    html = render_html(_row_snapshot(), INFO, StatusQuery(notable=True))
    assert "<table" not in html
    assert "<hr /><h2>Server Details</h2>\n\n" in html
    assert (
        "<b>Server 0-2</b> (100): 2|3|7 [<b>Keepalive</b>] u1.25 s0.5 cu0 cs0.01\n"
        " 10 250 1234(2048 B|1.0 MB|3.0 MB)\n"
        " <i>10.0.0.1 {GET /x HTTP/1.1}</i> <i>(http/1.1)</i> <b>[www:80]</b><br />\n\n"
    ) in html
    assert "<b>Server 2-1</b> (-): 2|3|7 [Dead]" in html
    assert "Server 3-2" not in html


@pytest.mark.parametrize(
    ("letter", "accesses", "shown"),
    [
        ("_", 0, False),
        (".", 0, False),
        ("_", 1, True),
        (".", 1, True),
        ("S", 0, True),
        ("W", 0, True),
        ("G", 0, True),
    ],
)
@pytest.mark.parametrize("notable", [False, True], ids=["table", "notable"])
def test_rows_skipped_when_ready_or_dead_without_accesses(
    letter: str, accesses: int, shown: bool, notable: bool
) -> None:
    snapshot = board(proc(0, 100, 0, letter, like=WorkerSnapshot(access_count=accesses)))
    html = render_html(snapshot, INFO, StatusQuery(notable=notable))
    marker = "<b>Server 0-0</b>" if notable else "<tr><td><b>0-0</b>"
    assert (marker in html) is shown


# ---------------------------------------------------------------------------------- exact pages
_DONE = WorkerSnapshot(
    access_count=7, my_access_count=3, conn_count=1, bytes_served=3 * 1048576 + 5000,
    my_bytes_served=1048576, conn_bytes=6000, start_time=1_000_090_050.0,
    stop_time=1_000_090_050.25, last_used=1_000_090_050.25, duration=1.2345,
    client="10.0.0.1", protocol="http/1.1", vhost="www.example.com:80",
    request="GET /index.html HTTP/1.1", times=(0.12, 0.03, 0.0, 0.0),
)
_IN_FLIGHT = dataclasses.replace(_DONE, start_time=1_000_090_059.5,
                                 request="POST /upload HTTP/1.1", times=(0.2, 0.05, 0.0, 0.0))


def _prefork_sample() -> ScoreboardSnapshot:
    return board(
        proc(0, 4101, 0, "W", like=_IN_FLIGHT),
        proc(1, 4102, 0, "_", like=_DONE),
        proc(2, 4103, 0, "_"),
        proc(3, 0, 0, "."),
        total_accesses=14, total_bytes=6 * 1048576 + 10000, total_duration=2.469,
    )


def test_html_page_exact() -> None:
    """The whole page, byte for byte as mod_status.c (2.4, ExtendedStatus On, HAVE_TIMES)
    writes it for this scoreboard: legend with its trailing spaces, CPU column, key."""
    html = render_html(_prefork_sample(), dataclasses.replace(INFO, process_limit=4),
                       StatusQuery())
    assert html == (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
        "<html><head>\n"
        "<title>Apache Status</title>\n"
        "</head><body>\n"
        "<h1>Apache Server Status for www.example.com (via 127.0.0.1)</h1>\n"
        "\n"
        "<dl><dt>Server Version: asyncmpm/0.1.0 (Python 3.11.7; anyio asyncio)</dt>\n"
        "<dt>Server MPM: prefork</dt>\n"
        "<dt>Server Built: asyncmpm 0.1.0\n"
        "</dt></dl><hr /><dl>\n"
        "<dt>Current Time: Sunday, 09-Sep-2001 23:47:41 ABC</dt>\n"
        "<dt>Restart Time: Saturday, 08-Sep-2001 22:46:40 ABC</dt>\n"
        "<dt>Parent Server Config. Generation: 1</dt>\n"
        "<dt>Parent Server MPM Generation: 0</dt>\n"
        "<dt>Server uptime:  1 day 1 hour 1 minute 1 second</dt>\n"
        "<dt>Server load: 0.12 1.50 2.00</dt>\n"
        "<dt>Total accesses: 14 - Total Traffic: 6.0 MB - Total Duration: 2469</dt>\n"
        "<dt>CPU Usage: u1.82 s0.58 cu0 cs0 - 0.00266% CPU load</dt>\n"
        "<dt>0.000155 requests/sec - 69 B/second - 439.5 kB/request - 176.357 ms/request</dt>\n"
        "<dt>1 requests currently being processed, 0 workers gracefully restarting, "
        "2 idle workers</dt>\n"
        "</dl><pre>W__.</pre>\n"
        "<p>Scoreboard Key:<br />\n"
        '"<b><code>_</code></b>" Waiting for Connection, \n'
        '"<b><code>S</code></b>" Starting up, \n'
        '"<b><code>R</code></b>" Reading Request,<br />\n'
        '"<b><code>W</code></b>" Sending Reply, \n'
        '"<b><code>K</code></b>" Keepalive (read), \n'
        '"<b><code>D</code></b>" DNS Lookup,<br />\n'
        '"<b><code>C</code></b>" Closing connection, \n'
        '"<b><code>L</code></b>" Logging, \n'
        '"<b><code>G</code></b>" Gracefully finishing,<br /> \n'
        '"<b><code>I</code></b>" Idle cleanup of worker, \n'
        '"<b><code>.</code></b>" Open slot with no current process<br />\n'
        "</p>\n"
        "\n"
        "\n"
        '<table border="0"><tr><th>Srv</th><th>PID</th><th>Acc</th><th>M</th><th>CPU\n'
        "</th><th>SS</th><th>Req</th><th>Dur</th><th>Conn</th><th>Child</th><th>Slot</th>"
        "<th>Client</th><th>Protocol</th><th>VHost</th><th>Request</th></tr>\n"
        "\n"
        "<tr><td><b>0-0</b></td><td>4101</td><td>1/3/7</td><td><b>W</b>\n"
        "</td><td>0.25</td><td>1</td><td>0</td><td>1234</td><td>5.9</td><td>1.00</td>"
        "<td>3.00\n"
        "</td><td>10.0.0.1</td><td>http/1.1</td><td nowrap>www.example.com:80</td>"
        "<td nowrap>POST /upload HTTP/1.1</td></tr>\n"
        "\n"
        "<tr><td><b>1-0</b></td><td>4102</td><td>1/3/7</td><td>_\n"
        "</td><td>0.15</td><td>10</td><td>250</td><td>1234</td><td>5.9</td><td>1.00</td>"
        "<td>3.00\n"
        "</td><td>10.0.0.1</td><td>http/1.1</td><td nowrap>www.example.com:80</td>"
        "<td nowrap>GET /index.html HTTP/1.1</td></tr>\n"
        "\n"
        "</table>\n"
        " <hr /> <table>\n"
        " <tr><th>Srv</th><td>Child Server number - generation</td></tr>\n"
        " <tr><th>PID</th><td>OS process ID</td></tr>\n"
        " <tr><th>Acc</th><td>Number of accesses this connection / this child / this slot"
        "</td></tr>\n"
        " <tr><th>M</th><td>Mode of operation</td></tr>\n"
        "<tr><th>CPU</th><td>CPU usage, number of seconds</td></tr>\n"
        "<tr><th>SS</th><td>Seconds since beginning of most recent request</td></tr>\n"
        " <tr><th>Req</th><td>Milliseconds required to process most recent request</td></tr>\n"
        " <tr><th>Dur</th><td>Sum of milliseconds required to process all requests</td></tr>\n"
        " <tr><th>Conn</th><td>Kilobytes transferred this connection</td></tr>\n"
        " <tr><th>Child</th><td>Megabytes transferred this child</td></tr>\n"
        " <tr><th>Slot</th><td>Total megabytes transferred this slot</td></tr>\n"
        " </table>\n"
        "</body></html>\n"
    )


def test_notable_page_exact_details() -> None:
    html = render_html(_prefork_sample(), INFO, StatusQuery(notable=True))
    assert html.endswith(
        "</p>\n"
        "<hr /><h2>Server Details</h2>\n\n"
        "<b>Server 0-0</b> (4101): 1|3|7 [<b>Write</b>] u0.2 s0.05 cu0 cs0\n"
        " 1 0 1234(5.9 kB|1.0 MB|3.0 MB)\n"
        " <i>10.0.0.1 {POST /upload HTTP/1.1}</i> <i>(http/1.1)</i>"
        " <b>[www.example.com:80]</b><br />\n\n"
        "<b>Server 1-0</b> (4102): 1|3|7 [Ready] u0.12 s0.03 cu0 cs0\n"
        " 10 250 1234(5.9 kB|1.0 MB|3.0 MB)\n"
        " <i>10.0.0.1 {GET /index.html HTTP/1.1}</i> <i>(http/1.1)</i>"
        " <b>[www.example.com:80]</b><br />\n\n"
        "</body></html>\n"
    )


def test_auto_worker_exact_after_graceful_restart() -> None:
    """worker, generation 1: slot 1 is an old-generation process finishing (G, its idle
    thread neither idle nor busy), slot 2 an old one already quiescing (not counted at all,
    though its CPU still is), slot 3 beyond the process limit (hidden)."""
    snapshot = board(
        proc(0, 5200, 1, "W_K", like=_DONE),
        proc(1, 5100, 0, "G_G", like=_DONE),
        proc(2, 5101, 0, "GG.", like=_DONE, quiescing=True),
        proc(3, 0, 0, "..."),
        mpm="worker", generation=1,
        total_accesses=109, total_bytes=1234567, total_duration=13.0,
    )
    info = dataclasses.replace(INFO, mpm="worker", config_generation=2, mpm_generation=1,
                               uptime=13, now=1_000_000_013.0, process_limit=3)
    assert render_auto(snapshot, info) == (
        "www.example.com\n"
        "ServerVersion: asyncmpm/0.1.0 (Python 3.11.7; anyio asyncio)\n"
        "ServerMPM: worker\n"
        "Server Built: asyncmpm 0.1.0\n"
        "CurrentTime: Saturday, 08-Sep-2001 22:46:53 ABC\n"
        "RestartTime: Saturday, 08-Sep-2001 22:46:40 ABC\n"
        "ParentServerConfigGeneration: 2\n"
        "ParentServerMPMGeneration: 1\n"
        "ServerUptimeSeconds: 13\n"
        "ServerUptime: 13 seconds\n"
        "Load1: 0.12\n"
        "Load5: 1.50\n"
        "Load15: 2.00\n"
        "Total Accesses: 109\n"
        "Total kBytes: 1205\n"
        "Total Duration: 13000\n"
        "CPUUser: 1.86\n"
        "CPUSystem: 0.59\n"
        "CPUChildrenUser: 0\n"
        "CPUChildrenSystem: 0\n"
        "CPULoad: 18.8462\n"
        "Uptime: 13\n"
        "ReqPerSec: 8.38461\n"
        "BytesPerSec: 94916.9\n"
        "BytesPerReq: 11320.4\n"
        "DurationPerReq: 119.266\n"
        "BusyWorkers: 2\n"
        "GracefulWorkers: 2\n"
        "IdleWorkers: 1\n"
        "Scoreboard: W_KG_GGG.\n"
    )
    html = render_html(snapshot, info, StatusQuery())
    assert "<tr><td><b>1-0</b></td><td>5100</td><td>1/3/7</td><td>G\n</td>" in html
    assert "<tr><td><b>0-1</b></td><td>5200</td><td>1/3/7</td><td><b>W</b>\n</td>" in html


def test_auto_fields_are_the_auto_lines() -> None:
    snapshot = _prefork_sample()
    text = render_auto(snapshot, INFO)
    assert text.splitlines()[1:] == [f"{k}: {v}" for k, v in auto_fields(snapshot, INFO)]


# ---------------------------------------------------------------------------------- CPU
def _cpu(text: str) -> dict[str, str]:
    return {k: v for k, v in (line.split(": ", 1) for line in text.splitlines()[1:])
            if k.startswith("CPU")}


def test_cpu_totals_keep_one_record_per_process_as_apache() -> None:
    """Per process, mod_status keeps the last slot record with *any* field above the kept
    one (not a field-by-field maximum, not the largest sum, not the last); processes are
    summed, whatever their pid or quiescing; READY/DEAD slots that never served are left
    out; the parent's own times (ServerInfo) come on top."""
    a = WorkerSnapshot(state=SlotState.BUSY_WRITE, access_count=1, times=(0, 0.07, 0, 0))
    b = dataclasses.replace(a, times=(0.05, 0, 0, 0))  # 5 > 0 user ticks: replaces a
    c = dataclasses.replace(a, times=(0.03, 0, 0, 0.02))  # 2 > 0 cs ticks: replaces b
    d = dataclasses.replace(a, times=(0.01, 0, 0, 0))  # nothing above c: ignored
    unused = WorkerSnapshot(state=SlotState.READY, times=(9.0, 9.0, 9.0, 9.0))
    snapshot = board(
        ProcessSnapshot(0, 10, 0, False, (a, b, c, d)),  # kept: c
        ProcessSnapshot(1, 11, 0, True, (b, unused, unused, unused)),  # quiescing: counted
        ProcessSnapshot(2, 0, 0, False, (unused, unused, unused, unused)),
    )
    info = dataclasses.replace(INFO, cpu_user=1.0, cpu_system=0.0, cpu_children_user=0.5,
                               cpu_children_system=0.0, uptime=100)
    assert _cpu(render_auto(snapshot, info)) == {
        "CPUUser": "1.08", "CPUSystem": "0", "CPUChildrenUser": "0.5",
        "CPUChildrenSystem": "0.02",
        "CPULoad": "1.6",  # 160 ticks / 100 / 100 s * 100
    }
    html = render_html(snapshot, info, StatusQuery())
    assert "<dt>CPU Usage: u1.08 s0 cu0.5 cs0.02 - 1.6% CPU load</dt>" in html
    cpu_column = re.findall(r"\n</td><td>([\d.]+)</td>", html)
    assert cpu_column == ["0.07", "0.05", "0.05", "0.01", "0.05"]  # each slot's own sum


def test_cpu_below_one_tick_is_zero_and_gives_no_load() -> None:
    info = dataclasses.replace(INFO, cpu_user=0.004, cpu_system=0.0)
    text = render_auto(board(proc(0, 1, 0, "_")), info)
    assert _cpu(text) == {"CPUUser": "0", "CPUSystem": "0", "CPUChildrenUser": "0",
                          "CPUChildrenSystem": "0"}
    html = render_html(board(proc(0, 1, 0, "_")), info, StatusQuery())
    assert "<dt>CPU Usage: u0 s0 cu0 cs0</dt>\n<dt>" in html


# ---------------------------------------------------------------------------------- slot fields
def test_slot_fields_are_cut_to_the_scoreboard_buffers() -> None:
    """client64[64], request[64], vhost[32], protocol[16]: at most 63/63/31/15 characters,
    cut before escaping."""
    worker = WorkerSnapshot(access_count=1, client="c" * 70,
                            request="x" * 62 + '"' + "tail", vhost="v" * 40,
                            protocol="p" * 20)
    html = render_html(board(proc(0, 100, 0, "W", like=worker)), INFO, StatusQuery())
    assert (f"</td><td>{'c' * 63}</td><td>{'p' * 15}</td><td nowrap>{'v' * 31}</td>"
            f"<td nowrap>{'x' * 62}\\&quot;</td></tr>") in html


@pytest.mark.parametrize(
    ("last_used", "start_time", "stop_time", "ss"),
    [
        (0.0, 0.0, 0.0, 0),  # never stamped: 0, not the seconds since 1970
        (1_000_090_000.0, 0.0, 0.0, 61),
        (1_000_090_000.0, 1_000_090_040.0, 0.0, 21),  # a request started since
        (1_000_090_000.0, 1_000_090_040.0, 1_000_090_050.9, 10),  # ... and ended; truncated
    ],
)
def test_ss_counts_from_the_last_stamp(last_used: float, start_time: float, stop_time: float,
                                       ss: int) -> None:
    worker = WorkerSnapshot(access_count=1, last_used=last_used, start_time=start_time,
                            stop_time=stop_time)
    html = render_html(board(proc(0, 100, 0, "K", like=worker)), INFO, StatusQuery())
    assert f"<td><b>K</b>\n</td><td>0.00</td><td>{ss}</td>" in html


# ---------------------------------------------------------------------------------- served
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_status_page_served_with_refresh_notable_and_old_generation() -> None:
    """Through the server: Content-Type, the Refresh header, ?notable, and after a graceful
    restart the in-flight slot of generation 0 shows G while generation 1 serves."""
    async with serving(status_path="/server-status") as server, httpx.AsyncClient(
        base_url=base_url(server), timeout=30
    ) as c:
        r = await c.get("/server-status?refresh=42;fish")
        assert r.status_code == 200
        assert r.headers["refresh"] == "42"
        assert r.headers["content-type"] == "text/html; charset=ISO-8859-1"
        assert "<th>CPU\n</th><th>SS</th>" in r.text
        r = await c.get("/server-status?refresh")
        assert r.headers["refresh"] == "10"
        r = await c.get("/server-status?notable")
        assert "refresh" not in r.headers
        assert "<table" not in r.text
        assert "<hr /><h2>Server Details</h2>" in r.text
        r = await c.get("/server-status?auto")
        assert r.headers["content-type"] == "text/plain; charset=ISO-8859-1"
        assert [k for k, _ in (line.split(":", 1) for line in r.text.splitlines()[1:])][-4:] \
            == ["BusyWorkers", "GracefulWorkers", "IdleWorkers", "Scoreboard"]

        async with anyio.create_task_group() as tg:
            tg.start_soon(c.get, "/whoami?sleep=5")
            snap = await server.wait_status(lambda s: s.busy_workers == 1, timeout=10)
            (busy,) = [(p.index, p.pid) for p in snap.processes
                       if any(t.state is SlotState.BUSY_WRITE for t in p.threads)]
            assert await server.graceful_restart()
            await server.wait_status(
                lambda s: s.processes[busy[0]].threads[0].state is SlotState.GRACEFUL,
                timeout=10)
            auto = (await c.get("/server-status?auto")).text
            html = (await c.get("/server-status")).text
            fields = dict(line.split(": ", 1) for line in auto.splitlines()[1:] if ": " in line)
            assert fields["ParentServerMPMGeneration"] == "1"
            assert fields["Scoreboard"][busy[0]] == "G"
            assert (f"<tr><td><b>{busy[0]}-0</b></td><td>{busy[1]}</td><td>0/0/0</td>"
                    "<td>G\n</td>") in html
            assert int(fields["IdleWorkers"]) >= 1  # generation 1's children
