"""Apache's mod_status (``modules/generators/mod_status.c``, 2.4.x), rendered from one snapshot.

Pure functions: the caller takes a :class:`ScoreboardSnapshot`, gathers the process-wide
numbers into a :class:`ServerInfo` and sends what :func:`render_auto` or :func:`render_html`
return. ExtendedStatus is always on (mod_status turns it on when loaded).

Numbers follow Apache's arithmetic, including its single-precision ``(float)`` casts, so
``?auto`` parsers see the same digits; ``%g`` is C's ``printf("%g")``, which Python's ``g`` format
implements exactly. Every field is HTML-escaped (client, request, vhost and protocol come from
the network); the request goes through ``ap_escape_logitem`` first, as in Apache, so control
characters show as ``\\r``, ``\\x1b``.

CPU figures are kept as Apache keeps them, in clock ticks (``times()``): the parent's own
(:class:`ServerInfo`) plus, per process slot, one record of the times its slots last took
(``WorkerSnapshot.times``); each sum is divided by ``sysconf(_SC_CLK_TCK)`` in ``float``.
"""

from __future__ import annotations

import math
import os
import struct
import time
from dataclasses import dataclass

from asyncmpm.logs import escape_logitem
from asyncmpm.supervisor.scoreboard import (
    ProcessSnapshot,
    ScoreboardSnapshot,
    SlotState,
    WorkerSnapshot,
)

__all__ = [
    "CLK_TCK",
    "DEFAULT_REFRESH",
    "STATUS_MAXLINE",
    "TIME_FORMAT",
    "ServerInfo",
    "StatusQuery",
    "WorkerCounts",
    "auto_fields",
    "count_workers",
    "format_g",
    "format_uptime",
    "parse_query",
    "render_auto",
    "render_html",
    "scoreboard_letters",
]

STATUS_MAXLINE = 64
TIME_FORMAT = "%A, %d-%b-%Y %H:%M:%S %Z"
DEFAULT_REFRESH = 10

_KBYTE = 1024
_MBYTE = 1048576
_GBYTE = 1073741824
_LONG_MAX = 2**63 - 1
_DOCTYPE_HTML_3_2 = '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n'
_UNCOUNTED = frozenset({SlotState.DEAD, SlotState.STARTING, SlotState.IDLE_KILL})
_UNUSED = frozenset({SlotState.READY, SlotState.DEAD})

# The scoreboard's fixed buffers (scoreboard.h), NUL included: what fits is what is shown.
_CLIENT_LEN = 64 - 1  # client64[64]
_REQUEST_LEN = 64 - 1  # request[64]
_VHOST_LEN = 32 - 1  # vhost[32]
_PROTOCOL_LEN = 16 - 1  # protocol[16]


def _clk_tck() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


#: ``sysconf(_SC_CLK_TCK)``: mod_status's ``tick``, the unit of every ``times()`` figure.
CLK_TCK = _clk_tck()


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What mod_status shows besides the scoreboard. Times are epoch seconds.

    ``config_generation`` is 1 on the first start; ``mpm_generation`` is 0 then and goes up
    by one per restart. ``local_address`` is the address the status request came in on.
    ``cpu_*`` are the parent's own CPU seconds (httpd's ``global_score.times``, e.g.
    ``os.times()``); the live processes' slot times are added to them.
    ``process_limit``, when given, hides DEAD slots at or beyond it from the scoreboard
    letters, as Apache hides slots beyond MaxRequestWorkers (prefork) or the process limit.
    """

    server_name: str
    server_version: str
    mpm: str
    built: str
    config_generation: int
    mpm_generation: int
    restart_time: float
    now: float
    uptime: float
    load: tuple[float, float, float]
    cpu_user: float
    cpu_system: float
    cpu_children_user: float
    cpu_children_system: float
    local_address: str
    process_limit: int | None = None


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """The flags of a status request. ``refresh`` is the Refresh header's value, or None."""

    auto: bool = False
    notable: bool = False
    refresh: int | None = None


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    busy: int
    graceful: int
    idle: int


# ---------------------------------------------------------------------------------- helpers
def parse_query(query: str) -> StatusQuery:
    """Find the flags by substring search, as mod_status does (``?xrefresh=5auto`` counts).

    ``refresh`` takes ``=N`` read with C's ``atol``; N < 1 or missing gives 10, so
    ``refresh=42;fish`` gives 42.
    """
    refresh: int | None = None
    at = query.find("refresh")
    if at >= 0:
        rest = query[at + len("refresh"):]
        seconds = _atol(rest[1:]) if rest.startswith("=") else 0
        refresh = seconds if seconds >= 1 else DEFAULT_REFRESH
    return StatusQuery(auto="auto" in query, notable="notable" in query, refresh=refresh)


def _atol(text: str) -> int:
    """C's ``atol`` (glibc ``strtol``): whitespace, a sign, digits; clamped on overflow."""
    i, n = 0, len(text)
    while i < n and text[i] in " \t\n\v\f\r":
        i += 1
    sign = 1
    if i < n and text[i] in "+-":
        sign = -1 if text[i] == "-" else 1
        i += 1
    start = i
    while i < n and "0" <= text[i] <= "9":
        i += 1
    digits = text[start:i].lstrip("0")
    if len(digits) > len(str(_LONG_MAX)):  # also keeps int() under its digit limit
        return _LONG_MAX if sign > 0 else -_LONG_MAX - 1
    value = sign * int(digits or "0")
    return max(-_LONG_MAX - 1, min(_LONG_MAX, value))


def format_g(value: float, precision: int = 6) -> str:
    """C's ``printf("%.<precision>g", value)``: 0.5, 1e-05, 1.23457e+07, inf.

    Python's ``g`` presentation type follows C here (%e or %f by the exponent rule, trailing
    zeros dropped, at least two exponent digits), so this only pins the precision.
    """
    return f"{value:.{precision}g}"


_F32 = struct.Struct("f")


def _f32(value: float) -> float:
    """Round to C ``float``, as Apache's ``(float)`` casts do before ``%g`` sees the value."""
    try:
        return float(_F32.unpack(_F32.pack(value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def _fdiv(a: float, b: float) -> float:
    """``(float) a / (float) b`` in C, division by zero included."""
    fa, fb = _f32(a), _f32(b)
    if fb == 0:
        return math.nan if fa == 0 or math.isnan(fa) else math.copysign(math.inf, fa)
    return _f32(fa / fb)


def _msec(seconds: float) -> int:
    """``apr_time_as_msec`` of a duration kept in float seconds (whole microseconds first)."""
    return round(seconds * 1_000_000) // 1000


def format_uptime(seconds: int) -> str:
    """``1 day 2 hours 3 minutes 4 seconds``; zero parts are left out (so 0 gives '')."""
    secs = seconds % 60
    minutes = seconds // 60 % 60
    hours = seconds // 3600 % 24
    days = seconds // 86400
    parts = [
        f"{n} {unit}{'' if n == 1 else 's'}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"), (secs, "second"))
        if n
    ]
    return " ".join(parts)


def _show_time(seconds: int) -> str:
    # mod_status's show_time(): each part carries its own leading space.
    text = format_uptime(seconds)
    return f" {text}" if text else ""


def _ht_time(epoch: float) -> str:
    return time.strftime(TIME_FORMAT, time.localtime(epoch))


_HTML_ESCAPES = str.maketrans({"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;"})


def _html(text: str) -> str:
    """``ap_escape_html``."""
    return text.translate(_HTML_ESCAPES)




def _format_byte_out(nbytes: int) -> str:
    if nbytes < 5 * _KBYTE:
        return f"{nbytes} B"
    if nbytes < _MBYTE // 2:
        return f"{_fdiv(nbytes, _KBYTE):.1f} kB"
    if nbytes < _GBYTE // 2:
        return f"{_fdiv(nbytes, _MBYTE):.1f} MB"
    return f"{_fdiv(nbytes, _GBYTE):.1f} GB"


def _format_kbyte_out(kbytes: int) -> str:
    if kbytes < _KBYTE:
        return f"{kbytes} kB"
    if kbytes < _MBYTE:
        return f"{_fdiv(kbytes, _KBYTE):.1f} MB"
    return f"{_fdiv(kbytes, _MBYTE):.1f} GB"


# ---------------------------------------------------------------------------------- counting
def count_workers(snapshot: ScoreboardSnapshot) -> WorkerCounts:
    """mod_status's BusyWorkers / GracefulWorkers / IdleWorkers.

    Only live (pid != 0), non-quiescing processes count (httpd's prefork never marks one
    quiescing, so there a retiring process's slots still count). READY is idle in a
    current-generation process and not counted elsewhere; GRACEFUL is graceful; any other
    state except DEAD, STARTING and IDLE_KILL is busy.
    """
    busy = graceful = idle = 0
    skip_quiescing = snapshot.mpm != "prefork"
    for proc in snapshot.processes:
        if not proc.pid or (proc.quiescing and skip_quiescing):
            continue
        current = proc.generation == snapshot.generation
        for worker in proc.threads:
            state = worker.state
            if state is SlotState.READY:
                idle += current
            elif state is SlotState.GRACEFUL:
                graceful += 1
            elif state not in _UNCOUNTED:
                busy += 1
    return WorkerCounts(busy, graceful, idle)


def scoreboard_letters(snapshot: ScoreboardSnapshot, process_limit: int | None = None) -> str:
    """One letter per slot; DEAD slots beyond ``process_limit`` (disabled) are left out."""
    letters: list[str] = []
    tpc = snapshot.threads_per_child
    for proc in snapshot.processes:
        disabled = process_limit is not None and proc.index >= process_limit
        for j, worker in enumerate(proc.threads):
            if worker.state is SlotState.DEAD and (disabled or j >= tpc):
                continue
            letters.append(worker.state.value)
    return "".join(letters)


def _ticks(seconds: float) -> int:
    """CPU seconds back to the ``clock_t`` ticks ``times()`` counts (os.times() divides them)."""
    return max(0, round(seconds * CLK_TCK))


def _slot_ticks(worker: WorkerSnapshot) -> tuple[int, int, int, int]:
    u, s, cu, cs = worker.times
    return _ticks(u), _ticks(s), _ticks(cu), _ticks(cs)


def _used(worker: WorkerSnapshot) -> bool:
    """The slots mod_status's extended totals (and its per-slot table) take in."""
    return worker.access_count != 0 or worker.state not in _UNUSED


def _process_ticks(snapshot: ScoreboardSnapshot) -> tuple[int, int, int, int]:
    """The processes' CPU ticks, as mod_status adds them up.

    Every thread of a process records the same process-wide ``times()``, so per process
    Apache keeps one record, the last one (in slot order) with any field above the kept
    one's, rather than summing its threads; the processes' records are then summed.
    """
    total = [0, 0, 0, 0]
    for proc in snapshot.processes:
        kept = (0, 0, 0, 0)
        for worker in proc.threads:
            if not _used(worker):
                continue
            ticks = _slot_ticks(worker)
            if any(t > k for t, k in zip(ticks, kept, strict=True)):
                kept = ticks
        for i in range(4):
            total[i] += kept[i]
    return total[0], total[1], total[2], total[3]


@dataclass(frozen=True, slots=True)
class _Totals:
    accesses: int
    kbytes: int
    duration_ms: int
    uptime: int
    ticks: tuple[int, int, int, int]  # user, system, children user, children system

    @property
    def cpu(self) -> tuple[float, float, float, float]:
        """``(gu + tu) / tick`` and the like: a ``clock_t`` over a ``float``."""
        u, s, cu, cs = (_fdiv(t, CLK_TCK) for t in self.ticks)
        return u, s, cu, cs

    @property
    def cpu_ticks(self) -> int:
        return sum(self.ticks)

    def cpu_load(self) -> float:
        """``cpu / tick / up_time * 100.``: two float divisions, then a double product."""
        return _fdiv(_fdiv(self.cpu_ticks, CLK_TCK), self.uptime) * 100.0


def _totals(snapshot: ScoreboardSnapshot, info: ServerInfo) -> _Totals:
    parent = (_ticks(info.cpu_user), _ticks(info.cpu_system), _ticks(info.cpu_children_user),
              _ticks(info.cpu_children_system))
    slots = _process_ticks(snapshot)
    return _Totals(
        accesses=snapshot.total_accesses,
        kbytes=snapshot.total_bytes >> 10,
        duration_ms=_msec(snapshot.total_duration),
        uptime=max(0, int(info.uptime)),
        ticks=(parent[0] + slots[0], parent[1] + slots[1], parent[2] + slots[2],
               parent[3] + slots[3]),
    )


# ---------------------------------------------------------------------------------- ?auto
def auto_fields(snapshot: ScoreboardSnapshot, info: ServerInfo) -> list[tuple[str, str]]:
    """The ``?auto`` report as (key, value) pairs, in Apache 2.4's order (prefork, worker).

    This is what :func:`render_auto` prints after the server name, for programs that want
    mod_status's figures without parsing them.
    """
    t = _totals(snapshot, info)
    counts = count_workers(snapshot)
    cpu = t.cpu
    fields = [
        ("ServerVersion", info.server_version),
        ("ServerMPM", info.mpm),
        ("Server Built", info.built),
        ("CurrentTime", _ht_time(info.now)),
        ("RestartTime", _ht_time(info.restart_time)),
        ("ParentServerConfigGeneration", str(info.config_generation)),
        ("ParentServerMPMGeneration", str(info.mpm_generation)),
        ("ServerUptimeSeconds", str(t.uptime)),
        ("ServerUptime", format_uptime(t.uptime)),
        ("Load1", f"{info.load[0]:.2f}"),
        ("Load5", f"{info.load[1]:.2f}"),
        ("Load15", f"{info.load[2]:.2f}"),
        ("Total Accesses", str(t.accesses)),
        ("Total kBytes", str(t.kbytes)),
        ("Total Duration", str(t.duration_ms)),
        ("CPUUser", format_g(cpu[0])),
        ("CPUSystem", format_g(cpu[1])),
        ("CPUChildrenUser", format_g(cpu[2])),
        ("CPUChildrenSystem", format_g(cpu[3])),
    ]
    if t.cpu_ticks:
        fields.append(("CPULoad", format_g(t.cpu_load())))
    fields.append(("Uptime", str(t.uptime)))
    if t.uptime > 0:
        fields.append(("ReqPerSec", format_g(_fdiv(t.accesses, t.uptime))))
        fields.append(("BytesPerSec", format_g(_fdiv(_KBYTE * _f32(t.kbytes), t.uptime))))
    if t.accesses > 0:
        fields.append(("BytesPerReq", format_g(_fdiv(_KBYTE * _f32(t.kbytes), t.accesses))))
        fields.append(("DurationPerReq", format_g(_fdiv(t.duration_ms, t.accesses))))
    fields += [
        ("BusyWorkers", str(counts.busy)),
        ("GracefulWorkers", str(counts.graceful)),
        ("IdleWorkers", str(counts.idle)),
        ("Scoreboard", scoreboard_letters(snapshot, info.process_limit)),
    ]
    return fields


def render_auto(snapshot: ScoreboardSnapshot, info: ServerInfo) -> str:
    """The ``?auto`` text/plain report, line for line as Apache 2.4 writes it (not event).

    The server name comes first, alone; ``ServerUptime`` is written as ``show_time()`` writes
    it, each part with its own leading space, so zero uptime leaves ``ServerUptime:`` bare.
    """
    lines = [info.server_name]
    for key, value in auto_fields(snapshot, info):
        sep = " " if value or key != "ServerUptime" else ""
        lines.append(f"{key}:{sep}{value}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- HTML
# Apache's strings verbatim, trailing spaces included.
_LEGEND = (
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
)

# ExtendedStatus On, HAVE_TIMES (every Unix): the CPU column is there.
_TABLE_HEAD = (
    '\n\n<table border="0"><tr>'
    "<th>Srv</th><th>PID</th><th>Acc</th><th>M</th><th>CPU\n</th>"
    "<th>SS</th><th>Req</th><th>Dur</th>"
    "<th>Conn</th><th>Child</th><th>Slot</th>"
    "<th>Client</th><th>Protocol</th><th>VHost</th>"
    "<th>Request</th></tr>\n\n"
)

_TABLE_KEY = (
    "</table>\n <hr /> <table>\n"
    " <tr><th>Srv</th><td>Child Server number - generation</td></tr>\n"
    " <tr><th>PID</th><td>OS process ID</td></tr>\n"
    " <tr><th>Acc</th><td>Number of accesses this connection / this child / this slot</td></tr>\n"
    " <tr><th>M</th><td>Mode of operation</td></tr>\n"
    "<tr><th>CPU</th><td>CPU usage, number of seconds</td></tr>\n"
    "<tr><th>SS</th><td>Seconds since beginning of most recent request</td></tr>\n"
    " <tr><th>Req</th><td>Milliseconds required to process most recent request</td></tr>\n"
    " <tr><th>Dur</th><td>Sum of milliseconds required to process all requests</td></tr>\n"
    " <tr><th>Conn</th><td>Kilobytes transferred this connection</td></tr>\n"
    " <tr><th>Child</th><td>Megabytes transferred this child</td></tr>\n"
    " <tr><th>Slot</th><td>Total megabytes transferred this slot</td></tr>\n"
    " </table>\n"
)

_TABLE_MODE = {
    SlotState.READY: "_",
    SlotState.STARTING: "<b>S</b>",
    SlotState.BUSY_READ: "<b>R</b>",
    SlotState.BUSY_WRITE: "<b>W</b>",
    SlotState.BUSY_KEEPALIVE: "<b>K</b>",
    SlotState.BUSY_LOG: "<b>L</b>",
    SlotState.BUSY_DNS: "<b>D</b>",
    SlotState.CLOSING: "<b>C</b>",
    SlotState.DEAD: ".",
    SlotState.GRACEFUL: "G",
    SlotState.IDLE_KILL: "I",
}

_TEXT_MODE = {
    SlotState.READY: "Ready",
    SlotState.STARTING: "Starting",
    SlotState.BUSY_READ: "<b>Read</b>",
    SlotState.BUSY_WRITE: "<b>Write</b>",
    SlotState.BUSY_KEEPALIVE: "<b>Keepalive</b>",
    SlotState.BUSY_LOG: "<b>Logging</b>",
    SlotState.BUSY_DNS: "<b>DNS lookup</b>",
    SlotState.CLOSING: "<b>Closing</b>",
    SlotState.DEAD: "Dead",
    SlotState.GRACEFUL: "Graceful",
    SlotState.IDLE_KILL: "Dying",
}


def _wrap(letters: str) -> str:
    """The ``<pre>`` body: a newline after every 64th letter."""
    return "".join(
        letters[i:i + STATUS_MAXLINE] + ("\n" if i + STATUS_MAXLINE <= len(letters) else "")
        for i in range(0, len(letters), STATUS_MAXLINE)
    )


def _header(snapshot: ScoreboardSnapshot, info: ServerInfo) -> list[str]:
    t = _totals(snapshot, info)
    counts = count_workers(snapshot)
    cpu = t.cpu
    out = [
        _DOCTYPE_HTML_3_2,
        "<html><head>\n<title>Apache Status</title>\n</head><body>\n",
        f"<h1>Apache Server Status for {_html(info.server_name)}"
        f" (via {_html(info.local_address)})</h1>\n\n",
        f"<dl><dt>Server Version: {_html(info.server_version)}</dt>\n",
        f"<dt>Server MPM: {_html(info.mpm)}</dt>\n",
        f"<dt>Server Built: {_html(info.built)}\n</dt></dl><hr /><dl>\n",
        f"<dt>Current Time: {_html(_ht_time(info.now))}</dt>\n",
        f"<dt>Restart Time: {_html(_ht_time(info.restart_time))}</dt>\n",
        f"<dt>Parent Server Config. Generation: {info.config_generation}</dt>\n",
        f"<dt>Parent Server MPM Generation: {info.mpm_generation}</dt>\n",
        f"<dt>Server uptime: {_show_time(t.uptime)}</dt>\n",
        "<dt>Server load: {:.2f} {:.2f} {:.2f}</dt>\n".format(*info.load),
        f"<dt>Total accesses: {t.accesses} - Total Traffic: {_format_kbyte_out(t.kbytes)}"
        f" - Total Duration: {t.duration_ms}</dt>\n",
        "<dt>CPU Usage: u{} s{} cu{} cs{}".format(*(format_g(v) for v in cpu)),
        f" - {format_g(t.cpu_load(), 3)}% CPU load</dt>\n" if t.cpu_ticks else "</dt>\n",
        "<dt>",
    ]
    if t.uptime > 0:
        per_sec = int(_fdiv(_KBYTE * _f32(t.kbytes), t.uptime))
        out.append(f"{format_g(_fdiv(t.accesses, t.uptime), 3)} requests/sec - "
                   f"{_format_byte_out(per_sec)}/second")
    if t.accesses > 0:
        if t.uptime > 0:
            out.append(" - ")
        per_req = int(_fdiv(_KBYTE * _f32(t.kbytes), t.accesses))
        out.append(f"{_format_byte_out(per_req)}/request - "
                   f"{format_g(_fdiv(t.duration_ms, t.accesses))} ms/request")
    out += [
        "</dt>\n",
        f"<dt>{counts.busy} requests currently being processed, "
        f"{counts.graceful} workers gracefully restarting, {counts.idle} idle workers</dt>\n",
        "</dl>",
    ]
    return out


def _since_last_used(worker: WorkerSnapshot, now: float) -> int:
    """SS: ``apr_time_sec(now - last_used)``.

    httpd stamps ``last_used`` at every status change and at the start and end of every
    request; a request's start counts even if only ``start_time`` recorded it. A slot never
    stamped shows 0 rather than the seconds since 1970.
    """
    last = max(worker.last_used, worker.start_time, worker.stop_time)
    return int(now - last) if last else 0


def _slot_row(proc: ProcessSnapshot, worker: WorkerSnapshot, now: float, *, table: bool) -> str:
    req_ms = 0 if worker.start_time == 0 else max(0, _msec(worker.stop_time - worker.start_time))
    since = _since_last_used(worker, now)
    dur_ms = _msec(worker.duration)
    pid = "-" if worker.state is SlotState.DEAD else str(proc.pid)
    srv = f"{proc.index}-{proc.generation}"
    acc = (worker.conn_count, worker.my_access_count, worker.access_count)
    ticks = _slot_ticks(worker)
    client = _html(worker.client[:_CLIENT_LEN])
    protocol = _html(worker.protocol[:_PROTOCOL_LEN])
    vhost = _html(worker.vhost[:_VHOST_LEN])
    request = _html(escape_logitem(worker.request[:_REQUEST_LEN]))
    if not table:
        cpu = " ".join(f"{name}{format_g(_fdiv(t, CLK_TCK))}"
                       for name, t in zip(("u", "s", "cu", "cs"), ticks, strict=True))
        return (
            f"<b>Server {srv}</b> ({pid}): {acc[0]}|{acc[1]}|{acc[2]} "
            f"[{_TEXT_MODE[worker.state]}] {cpu}\n {since} {req_ms} {dur_ms}("
            f"{_format_byte_out(worker.conn_bytes)}|{_format_byte_out(worker.my_bytes_served)}|"
            f"{_format_byte_out(worker.bytes_served)})\n"
            f" <i>{client} {{{request}}}</i> <i>({protocol})</i> <b>[{vhost}]</b><br />\n\n"
        )
    cpu_total = _fdiv(sum(ticks), CLK_TCK)
    conn_kb = _fdiv(worker.conn_bytes, _KBYTE)
    child_mb = _fdiv(worker.my_bytes_served, _MBYTE)
    slot_mb = _fdiv(worker.bytes_served, _MBYTE)
    return (
        f"<tr><td><b>{srv}</b></td><td>{pid}</td><td>{acc[0]}/{acc[1]}/{acc[2]}"
        f"</td><td>{_TABLE_MODE[worker.state]}\n</td><td>{cpu_total:.2f}</td>"
        f"<td>{since}</td><td>{req_ms}</td><td>{dur_ms}"
        f"</td><td>{conn_kb:<1.1f}</td><td>{child_mb:<2.2f}</td><td>{slot_mb:<2.2f}\n"
        f"</td><td>{client}</td><td>{protocol}</td><td nowrap>{vhost}</td>"
        f"<td nowrap>{request}</td></tr>\n\n"
    )


def render_html(snapshot: ScoreboardSnapshot, info: ServerInfo, query: StatusQuery) -> str:
    """The HTML page; with ``query.notable`` the per-slot details are text, not a table."""
    out = _header(snapshot, info)
    out += [
        "<pre>",
        _wrap(scoreboard_letters(snapshot, info.process_limit)),
        "</pre>\n",
        _LEGEND,
        "<hr /><h2>Server Details</h2>\n\n" if query.notable else _TABLE_HEAD,
    ]
    out += [
        _slot_row(proc, worker, info.now, table=not query.notable)
        for proc in snapshot.processes
        for worker in proc.threads
        if _used(worker)
    ]
    if not query.notable:
        out.append(_TABLE_KEY)
    out.append("</body></html>\n")
    return "".join(out)
