"""What every connection shares: config, dispatcher, supervisor, scoreboard, logs, status."""

from __future__ import annotations

import ipaddress
import os
import platform
import socket
import time
from typing import TYPE_CHECKING

import structlog

from asyncmpm._version import SERVER_HEADER, VERSION
from asyncmpm.config.model import Config, MPMLimits
from asyncmpm.dispatch.dispatcher import Dispatcher
from asyncmpm.dispatch.slot import SlotHandle
from asyncmpm.ipc.handoff import Handback, Handoff
from asyncmpm.logs import AccessEntry, AccessLog
from asyncmpm.protocol.events import Request
from asyncmpm.protocol.http2 import HTTP2Limits
from asyncmpm.status.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from asyncmpm.status.metrics import RequestMetrics
from asyncmpm.status.metrics import render as render_metrics
from asyncmpm.status.mod_status import ServerInfo, parse_query, render_auto, render_html
from asyncmpm.supervisor.scoreboard import Scoreboard, SlotState, WorkerScore
from asyncmpm.supervisor.supervisor import Supervisor, http1_limits

if TYPE_CHECKING:
    from asyncmpm.front.request_head import Peer

__all__ = ["VERSION", "FrontContext"]

_SERVER_HEADER = SERVER_HEADER.encode()
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class FrontContext:
    def __init__(
        self,
        config: Config,
        limits: MPMLimits,
        scoreboard: Scoreboard,
        dispatcher: Dispatcher,
        supervisor: Supervisor,
        backend: str,
    ) -> None:
        self.config = config
        self.limits = limits
        self.scoreboard = scoreboard
        self.dispatcher = dispatcher
        self.supervisor = supervisor
        self.backend = backend
        self.stopping = False
        self.busy = 0
        self._request_id = 0
        self._pid = os.getpid()
        self.started = time.time()
        self.metrics = RequestMetrics()
        self.access_log: AccessLog | None = None
        self.handed: set[SlotHandle] = set()  # slots serving a handed-off connection now
        self.log = structlog.get_logger("asyncmpm.front")
        self.apply(config, limits)

    def apply(self, config: Config, limits: MPMLimits) -> None:
        """Take a (re-read) configuration; connections pick it up with their next request."""
        self.config = config
        self.limits = limits
        self.http1_limits = http1_limits(config)
        self.http2_limits = HTTP2Limits(
            max_concurrent_streams=config.h2_max_session_streams,
            initial_window_size=config.h2_window_size,
            max_header_list_size=config.h2_max_header_list_size,
            connection_window=max(config.h2_window_size * 16, 1024 * 1024),
            server_header=_SERVER_HEADER,
            request=self.http1_limits,  # LimitRequest*: one set for both protocols
        )
        self.status_path = config.status_path.encode() if config.status_path else None
        self.metrics_path = config.metrics_path.encode() if config.metrics_path else None
        self.status_allow = _LOOPBACK + tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in config.status_allow
        )
        if self.access_log is not None:
            self.access_log.close()
        self.access_log = (
            AccessLog(config.access_log, fmt="json" if config.log_format == "json" else "combined",
                      log_format=config.access_log_format)
            if config.access_log
            else None
        )

    def next_request_id(self) -> bytes:
        self._request_id += 1
        return b"%d-%d" % (self._pid, self._request_id)

    def handoff(self, peer: Peer, family: int, keepalives: int, data: bytes) -> Handoff:
        """What goes with a connection handed to a slot (the same from both fronts)."""
        return Handoff(
            family=family,
            remote_addr=peer.remote_addr.encode(),
            remote_port=peer.remote_port.encode(),
            local_addr=peer.local_addr.encode(),
            local_port=peer.local_port.encode(),
            server_name=(self.config.server_name or peer.local_addr).encode(),
            keepalives=keepalives,
            request_id=self.next_request_id(),
            stats=self.stats(),
            data=data,
        )

    def stats(self) -> bytes:
        return b"%d,%d,%d" % (self.busy, self.dispatcher.idle, len(self.supervisor.children))

    # ------------------------------------------------------------------ scoreboard
    def slot_started(
        self, slot: SlotHandle, conn: Peer, request: Request, t0: float
    ) -> WorkerScore:
        child = slot.child
        child.busy += 1
        self.busy += 1
        ws = self.scoreboard.processes[child.index].threads[slot.thread]
        ws.state = SlotState.BUSY_WRITE if not request.has_body else SlotState.BUSY_READ
        ws.start_time = ws.last_used = t0
        ws.request = request.request_line[:63]  # httpd's request[64], NUL included
        ws.client = conn.remote_addr
        ws.vhost = f"{self.config.server_name or conn.local_addr}:{conn.local_port}"
        # The connection's protocol, as httpd's Protocol column shows it (http/1.1, h2, h2c).
        ws.protocol = "h2" if request.http_version == "2.0" else "http/1.1"
        self.scoreboard.changed()
        return ws

    def slot_finished(
        self,
        slot: SlotHandle,
        ws: WorkerScore,
        status: int,
        body_bytes: int,
        t0: float,
        *,
        reusable: bool,
    ) -> None:
        now = time.time()
        duration = now - t0
        if slot.cpu_times is not None:
            ws.times = slot.cpu_times
        ws.access_count += 1
        ws.my_access_count += 1
        ws.bytes_served += body_bytes
        ws.my_bytes_served += body_bytes
        ws.duration += duration
        ws.last_used = ws.stop_time = now
        sb = self.scoreboard
        sb.total_accesses += 1
        sb.total_bytes += body_bytes
        sb.total_duration += duration
        self.busy -= 1
        self.supervisor.slot_done(slot, reusable=reusable)
        sb.changed()

    def handoff_began(self, slot: SlotHandle) -> None:
        """A slot got a connection: from now on its requests are counted from its shared
        record (what it had done before is already counted)."""
        slot.seen = self.supervisor.records.done(slot.record)
        self.handed.add(slot)

    def sync_handoffs(self) -> None:
        """Count what slots serving handed-off connections have done so far, so the status
        page and metrics are current while a connection is still in a slot."""
        for slot in self.handed:
            self._fold(slot)

    def _fold(self, slot: SlotHandle) -> None:
        done, sent = self.supervisor.records.done(slot.record)
        n = done - slot.seen[0]
        body_bytes = sent - slot.seen[1]
        if n <= 0 and body_bytes <= 0:
            return
        slot.seen = (done, sent)
        ws = self.scoreboard.processes[slot.child.index].threads[slot.thread]
        ws.times = slot.cpu_times = self.supervisor.records.cpu_times(slot.record)
        ws.access_count += n
        ws.my_access_count += n
        ws.bytes_served += body_bytes
        ws.my_bytes_served += body_bytes
        sb = self.scoreboard
        sb.total_accesses += n
        sb.total_bytes += body_bytes

    def slot_handed_back(
        self,
        slot: SlotHandle,
        ws: WorkerScore,
        back: Handback | None,
        t0: float,
        *,
        reusable: bool,
    ) -> None:
        """A handed-off connection came back (or its slot failed): count what the slot
        served on it, as :meth:`slot_finished` counts one proxied request."""
        now = time.time()
        self.handed.discard(slot)
        self._fold(slot)
        served = back.served if back is not None else ()
        duration = (sum(s.duration_us for s in served) / 1e6) if served else now - t0
        if back is not None:
            slot.cpu_times = back.cpu_times
            ws.times = back.cpu_times
            if back.last_request:
                ws.request = back.last_request[:63].decode("latin-1")
        ws.conn_count += 1
        ws.duration += duration
        ws.last_used = ws.stop_time = now
        sb = self.scoreboard
        sb.total_duration += duration
        observe = self.metrics.observe
        for record in served:
            observe(record.status, record.body_bytes, record.duration_us / 1e6)
        self.busy -= 1
        self.supervisor.slot_done(slot, reusable=reusable)
        sb.changed()

    def log_access(
        self,
        conn: Peer,
        request: Request,
        status: int,
        body_bytes: int,
        t0: float,
        slot: SlotHandle | None,
        response_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.metrics.observe(status, body_bytes, time.time() - t0)
        if self.access_log is None:
            return
        referer = user_agent = ""
        for name, value in request.headers:
            if name == b"referer":
                referer = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        now = time.time()
        self.access_log.log(
            AccessEntry(
                remote_addr=conn.remote_addr,
                time=t0,
                request_line=request.request_line,
                status=status,
                bytes_sent=body_bytes,
                referer=referer,
                user_agent=user_agent,
                duration_us=int((now - t0) * 1e6),
                pid=slot.child.pid if slot is not None else os.getpid(),
                slot=slot.child.index if slot is not None else -1,
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
                query=request.query.decode("latin-1"),
                protocol=f"HTTP/{request.http_version}",
                server_name=self.config.server_name or conn.local_addr,
                local_port=int(conn.local_port),
                tid=(self.scoreboard.processes[slot.child.index].threads[slot.thread].tid
                     if slot is not None else 0),
                request_headers=request.headers,
                response_headers=response_headers or (),
            )
        )

    # ------------------------------------------------------------------ status page
    def server_info(self, local_addr: str) -> ServerInfo:
        now = time.time()
        times = os.times()
        try:
            load = os.getloadavg()
        except OSError:
            load = (0.0, 0.0, 0.0)
        return ServerInfo(
            server_name=self.config.server_name or socket.gethostname(),
            server_version=(
                f"asyncmpm/{VERSION} (Python {platform.python_version()}; anyio {self.backend})"
            ),
            mpm=self.config.mpm.value,
            built=f"asyncmpm {VERSION}",
            config_generation=self.supervisor.generation + 1,
            mpm_generation=self.supervisor.generation,
            restart_time=self.scoreboard.restart_time,
            now=now,
            uptime=now - self.scoreboard.restart_time,
            load=(load[0], load[1], load[2]),
            cpu_user=times.user,
            cpu_system=times.system,
            cpu_children_user=times.children_user,
            cpu_children_system=times.children_system,
            local_address=local_addr,
            process_limit=self.limits.process_limit,
        )

    def status_page(
        self, request: Request, remote_addr: str, local_addr: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """mod_status, answered by the front loop so it works when every slot is busy."""
        if not self._status_allowed(remote_addr):
            body = b"Forbidden\n"
            return 403, [(b"Content-Type", b"text/plain"),
                         (b"Content-Length", b"%d" % len(body))], body
        if request.method not in (b"GET", b"HEAD"):
            body = b"Method Not Allowed\n"
            return 405, [(b"Allow", b"GET, HEAD"), (b"Content-Type", b"text/plain"),
                         (b"Content-Length", b"%d" % len(body))], body
        self.scoreboard.queued_requests = self.dispatcher.queued
        self.sync_handoffs()
        query = parse_query(request.query.decode("latin-1"))
        info = self.server_info(local_addr)
        snapshot = self.scoreboard.snapshot()
        headers: list[tuple[bytes, bytes]] = []
        if query.auto:
            text = render_auto(snapshot, info)
            ctype = b"text/plain; charset=ISO-8859-1"
        else:
            text = render_html(snapshot, info, query)
            ctype = b"text/html; charset=ISO-8859-1"
        if query.refresh is not None:
            headers.append((b"Refresh", b"%d" % query.refresh))
        body = text.encode("latin-1", "replace")
        headers += [(b"Content-Type", ctype), (b"Content-Length", b"%d" % len(body)),
                    (b"Cache-Control", b"no-cache")]
        return 200, headers, body

    def metrics_page(
        self, request: Request, remote_addr: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Prometheus exposition, answered by the front loop like the status page."""
        if not self._status_allowed(remote_addr):
            body = b"Forbidden\n"
            return 403, [(b"Content-Type", b"text/plain"),
                         (b"Content-Length", b"%d" % len(body))], body
        self.scoreboard.queued_requests = self.dispatcher.queued
        self.sync_handoffs()
        body = render_metrics(self.scoreboard.snapshot(), self.metrics, self.supervisor)
        return 200, [(b"Content-Type", METRICS_CONTENT_TYPE),
                     (b"Content-Length", b"%d" % len(body))], body

    def _status_allowed(self, remote_addr: str) -> bool:
        try:
            addr = ipaddress.ip_address(remote_addr)
        except ValueError:
            return False
        return any(addr in net for net in self.status_allow)
