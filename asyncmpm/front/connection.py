"""One task per client connection: socket <-> HTTP/1.1 protocol <-> a slot.

The connection owns the client socket for its whole life. A request borrows a slot only from
the moment its head is parsed until the child's END frame: an idle keep-alive connection holds
no slot. Every wait has a deadline: KeepAliveTimeout between requests, mod_reqtimeout's
header/body rates while reading, ``Timeout`` for the child (then 504) and for the client.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from asyncmpm.dispatch.dispatcher import QueueFull, QueueTimeout
from asyncmpm.dispatch.slot import SlotClosed, SlotHandle
from asyncmpm.front.multiplexed import HTTP2Front
from asyncmpm.front.request_head import build_request_head
from asyncmpm.ipc.frames import (
    ABORT_FRAME,
    BODY_END_FRAME,
    BODY_GONE_FRAME,
    FrameType,
    encode,
)
from asyncmpm.ipc.handoff import Handback
from asyncmpm.ipc.messages import ResponseHead, decode_cpu_times
from asyncmpm.protocol.events import (
    Body,
    ConnectionClosed,
    EndBody,
    Event,
    Reject,
    Request,
)
from asyncmpm.protocol.http1 import HTTP1Connection
from asyncmpm.protocol.http2 import PREFACE
from asyncmpm.streams import ByteStream

if TYPE_CHECKING:
    from asyncmpm.front.context import FrontContext

__all__ = ["Connection"]

_RECV = 65536
_DISCARD_LIMIT = 1024 * 1024  # unread body we still read past to keep the connection
_LINGER = 2.0  # httpd's SECONDS_TO_LINGER
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


class _Closed(Exception):
    """The connection is finished (client gone, timeout, or we decided to close)."""


@dataclass(slots=True, eq=False)
class _Exchange:
    """State shared by the response forwarder and the body pump of one request."""

    request: Request
    body_done: bool = False
    body_error: tuple[int, str] | None = None
    continue_sent: bool = False
    go_ahead: anyio.Event = field(default_factory=anyio.Event)
    client_gone: bool = False
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    status: int = 0  # of the response head written to the client, once it is


class Connection:
    def __init__(self, stream: ByteStream, ctx: FrontContext, remote: tuple[str, int],
                 local: tuple[str, int], initial: bytes = b"") -> None:
        self.stream = stream
        self._initial = initial  # bytes another front already read from this connection
        self.ctx = ctx
        self.proto = HTTP1Connection(ctx.http1_limits)
        self.pending: deque[Event] = deque()
        self.eof = False
        self.served = 0
        self.idle = True
        self.idle_scope: anyio.CancelScope | None = None
        self.h2: HTTP2Front | None = None
        self.protocol = ""  # http/1.1, h2 or h2c once known
        self.remote_addr = str(remote[0]) if isinstance(remote, tuple) else "127.0.0.1"
        self.remote_port = str(remote[1]) if isinstance(remote, tuple) else "0"
        self.local_addr = str(local[0]) if isinstance(local, tuple) else "127.0.0.1"
        self.local_port = str(local[1]) if isinstance(local, tuple) else "0"
        # Plaintext HTTP/1.1 goes to a slot with its socket once a head is read; the raw
        # bytes from that head's first byte go along (raw[0] is byte raw_base of the stream).
        self.handoff: tuple[int, int] | None = None
        self.raw = bytearray()
        self.raw_base = 0

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        metrics = self.ctx.metrics
        try:
            tls = self.stream.tls
            if tls is None and self.ctx.config.handoff:
                self.handoff = self.stream.handoff_fd()
            if tls is not None and tls.alpn == "h2":
                await self._run_http2("h2")
                return
            if tls is None and self.ctx.config.http2:
                preface = await self._sniff_preface()
                if preface is not None:
                    await self._run_http2("h2c", initial=preface)
                    return
            self.protocol = "http/1.1"
            metrics.connection_opened(self.protocol)
            while True:
                event = await self._next_head_event()
                if event is None:
                    return
                if isinstance(event, Reject):
                    await self._send_error(event.status, event.reason)
                    return
                if isinstance(event, Request):
                    start = self.proto.head_starts.popleft() if self.proto.head_starts else 0
                    settings = self._h2c_upgrade(event)
                    if settings is not None:
                        await self.stream.send(_SWITCHING)
                        await self._run_http2("h2c", upgrade=(settings, event))
                        return
                    self.idle = False
                    if self.handoff is not None and not self._front_answers(event):
                        keep = await self._hand_off(event, start)
                    else:
                        keep = await self._serve(event)
                    self.idle = True
                    self.served += 1
                    if not keep or self.ctx.stopping:
                        return
                elif isinstance(event, ConnectionClosed):
                    return
        except (_Closed, anyio.BrokenResourceError, anyio.ClosedResourceError,
                ConnectionError):
            return
        except Exception:
            # A bug must cost this connection only, never the server.
            self.ctx.log.exception("error while serving a connection", client=self.remote_addr)
            return
        finally:
            if self.protocol:
                metrics.connection_closed(self.protocol)
            await self.stream.aclose()

    def close_if_idle(self) -> None:
        """Server stopping: end an idle keep-alive wait now (HTTP/2: send GOAWAY)."""
        if self.h2 is not None:
            self.h2.close_if_idle()
        elif self.idle and self.idle_scope is not None:
            self.idle_scope.cancel()

    async def _run_http2(self, protocol: str, initial: bytes = b"",
                         upgrade: tuple[bytes, Request] | None = None) -> None:
        metrics = self.ctx.metrics
        if self.protocol:
            metrics.connection_closed(self.protocol)  # an upgrade: it was HTTP/1.1
        self.protocol = protocol
        metrics.connection_opened(protocol)
        self.h2 = HTTP2Front(self.stream, self.ctx, self, initial=initial, upgrade=upgrade)
        await self.h2.run()

    def _h2c_upgrade(self, request: Request) -> bytes | None:
        """The HTTP2-Settings of an ``Upgrade: h2c`` request we take up, else None.

        Only a request without a body and with nothing pipelined behind it is upgraded (the
        RFC leaves the choice to the server): its reply then comes as stream 1 over HTTP/2.
        """
        if not self.ctx.config.http2 or self.stream.tls is not None or request.has_body:
            return None
        upgrade = connection = b""
        settings: list[bytes] = []
        for name, value in request.headers:
            if name == b"upgrade":
                upgrade += b"," + value.lower()
            elif name == b"connection":
                connection += b"," + value.lower()
            elif name == b"http2-settings":
                settings.append(value)
        if b"h2c" not in {t.strip() for t in upgrade.split(b",")} or len(settings) != 1:
            return None
        if b"upgrade" not in {t.strip() for t in connection.split(b",")}:
            return None
        try:  # a SETTINGS payload, base64url: one we cannot read is answered on HTTP/1.1
            payload = base64.urlsafe_b64decode(settings[0] + b"=" * (-len(settings[0]) % 4))
        except ValueError:
            return None
        if len(payload) % 6:
            return None
        rest = [e for e in self.pending if not isinstance(e, EndBody)]
        if rest or self.proto.has_buffered_input():
            return None  # pipelined requests behind it: stay on HTTP/1.1
        self.pending.clear()
        return settings[0]

    async def _sniff_preface(self) -> bytes | None:
        """HTTP/2 with prior knowledge starts with the connection preface; anything else is
        HTTP/1.1, and the bytes read go to its parser (None then)."""
        data = b""
        rrt = self.ctx.config.request_read_timeout
        with anyio.move_on_after(rrt.header_max or rrt.header_timeout) as scope:
            self.idle_scope = scope  # a stopping server closes a silent connection at once
            if self.ctx.stopping:
                scope.cancel()
            while len(data) < len(PREFACE) and PREFACE.startswith(data):
                try:
                    chunk = await self._read()
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    chunk = b""
                if not chunk:
                    break
                data += chunk
        self.idle_scope = None
        if data.startswith(PREFACE):
            return data
        if data:
            if self.handoff is not None:
                self.raw += data
            self.pending.extend(self.proto.receive_data(data))
        else:
            self.eof = True
        return None

    async def _read(self) -> bytes:
        if self._initial:
            data, self._initial = self._initial, b""
            return data
        return await self.stream.receive(_RECV)

    async def _receive(self) -> None:
        """Read once from the client and feed the protocol."""
        try:
            data = await self._read()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            self.pending.extend(self.proto.receive_data(b""))
            self.pending.append(ConnectionClosed())
            return
        if self.handoff is not None:
            self.raw += data
        self.pending.extend(self.proto.receive_data(data))

    async def _next_head_event(self) -> Event | None:
        """The next event while no request is active, under keep-alive/header deadlines."""
        if self.pending:
            return self.pending.popleft()
        if self.eof:
            return None
        ctx = self.ctx
        rrt = ctx.config.request_read_timeout
        start = anyio.current_time()
        if self.served and self.proto.between_requests:
            # KeepAliveTimeout until the first byte of the next request.
            with anyio.CancelScope(deadline=start + ctx.config.keep_alive_timeout) as scope:
                self.idle_scope = scope
                if ctx.stopping:
                    scope.cancel()
                await self._receive()
            self.idle_scope = None
            if scope.cancelled_caught:
                return None
            if self.pending:
                return self.pending.popleft()
            start = anyio.current_time()
        # mod_reqtimeout header stage: Timeout, extended by MinRate, up to the max.
        limit = start + (rrt.header_max or rrt.header_timeout)
        deadline = start + rrt.header_timeout
        received = 0
        while not self.pending:
            with anyio.CancelScope(deadline=min(deadline, limit)) as scope:
                if self.served == 0 and self.proto.between_requests:
                    self.idle_scope = scope
                    if ctx.stopping:
                        scope.cancel()
                before = self.proto_bytes()
                await self._receive()
                received += self.proto_bytes() - before
            self.idle_scope = None
            if scope.cancelled_caught:
                if self.proto.between_requests or ctx.stopping:
                    return None  # nothing of a request arrived: just close, as httpd does
                await self._send_error(408, "Server timeout waiting for the HTTP request "
                                       "from the client.")
                return None
            if rrt.header_min_rate:
                deadline = start + rrt.header_timeout + received / rrt.header_min_rate
        return self.pending.popleft()

    def proto_bytes(self) -> int:
        return self.proto.bytes_received

    # ------------------------------------------------------------------ handoff
    def _front_answers(self, request: Request) -> bool:
        ctx = self.ctx
        return (ctx.status_path is not None and request.path == ctx.status_path) or (
            ctx.metrics_path is not None and request.path == ctx.metrics_path)

    async def _hand_off(self, request: Request, start: int) -> bool:
        """Hand the connection to a slot, which serves this request and any that follow
        while they keep coming, then gives it back; True if the connection stays open.

        The front keeps its copy of the socket throughout: if the slot's process dies, it
        answers 502 (no response byte written yet, as the slot's shared record says) or
        closes; a request past Timeout is a hung slot (504, or closed if the response had
        started) and the slot is replaced.
        """
        ctx = self.ctx
        assert self.handoff is not None
        t0 = time.time()
        slot = await self._acquire(request, t0)
        if slot is None:
            return self.proto.keep_alive and not request.has_body
        fd, family = self.handoff
        raw = self.raw
        del raw[: start - self.raw_base]
        self.raw_base = start
        data = bytes(raw) + self.stream.suspend()
        handoff = ctx.handoff(self, family, self.proto.keepalives, data)
        ws = ctx.slot_started(slot, self, request, t0)
        ctx.handoff_began(slot)
        records = ctx.supervisor.records
        baseline = records.requests(slot.record)
        back: Handback | None = None
        outcome = 0  # what the front had to do itself: 502, 504, or 0
        try:
            await slot.hand_off(handoff.encode(), fd)
            back = await self._await_handback(slot)
            if back is None:
                outcome = 504
        except SlotClosed:
            outcome = 502
        except BaseException:
            # Cancelled (GracefulShutdownTimeout passed): the slot is abandoned, and its child
            # is stopped with the others; the client is cut off.
            ctx.slot_handed_back(slot, ws, None, t0, reusable=False)
            self._cut_off()
            raise
        unanswered = back is None and records.unanswered(slot.record, baseline)
        if back is None:
            records.idle(slot.record)
        if outcome == 502:  # before the slot is done: it decides the child's fate
            ctx.supervisor.slot_lost(slot)
        ctx.slot_handed_back(slot, ws, back, t0, reusable=back is not None)
        if back is None:
            # Our copy is the connection's last reliable one: answer if nothing was written.
            if unanswered:
                reason = ("The child serving this request exited." if outcome == 502 else
                          "The application did not answer within Timeout "
                          f"({ctx.config.timeout:g} s).")
                await self._send_error(outcome, reason)
            ctx.log_access(self, request, outcome, 0, t0, slot)
            self._cut_off()
            return False
        self.served += max(0, len(back.served) - 1)
        if not back.keep:
            await self._linger()
            return False
        self.stream.resume()
        self.proto = HTTP1Connection(ctx.http1_limits, keepalives=back.keepalives)
        self.pending.clear()
        self.raw = bytearray()
        self.raw_base = 0
        if back.leftover:
            self.raw += back.leftover
            self.pending.extend(self.proto.receive_data(back.leftover))
        return True

    async def _await_handback(self, slot: SlotHandle) -> Handback | None:
        """The slot's HANDBACK; None if a request it runs exceeded Timeout (it is hung)."""
        ctx = self.ctx
        records = ctx.supervisor.records
        timeout = ctx.config.timeout
        while True:
            wait = records.time_left(slot.record, timeout, time.time())
            if wait <= 0:
                ctx.supervisor.slot_hung(slot)
                return None
            with anyio.move_on_after(wait):
                kind, payload = await slot.recv()
                if kind == FrameType.HANDBACK:
                    return Handback.decode(payload)

    def _cut_off(self) -> None:
        """End the connection for every holder of it (a hung slot may still have it)."""
        if self.handoff is not None:
            sock = socket.socket(self.handoff[1], socket.SOCK_STREAM, 0, self.handoff[0])
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.detach()

    async def _linger(self) -> None:
        """httpd's lingering close: the slot has shut our side down; read what the client
        still sends (for at most 2 s) so that closing does not reset the connection before
        it has read the response."""
        self.stream.resume()
        with anyio.move_on_after(_LINGER):
            try:
                while await self.stream.receive(_RECV):
                    pass
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                pass

    async def _acquire(self, request: Request, t0: float) -> SlotHandle | None:
        """A free slot, waiting in the FIFO queue; None after answering 503."""
        ctx = self.ctx
        queued = ctx.dispatcher.idle == 0
        try:
            slot = await ctx.dispatcher.acquire(ctx.config.timeout)
            if queued:
                ctx.metrics.queue_wait.observe(time.time() - t0)
            return slot
        except (QueueFull, QueueTimeout):
            await self._send_error(
                503, "The server is temporarily unable to service your request: every "
                "slot is busy.", extra=[(b"Retry-After", b"1")], close=request.has_body)
            ctx.log_access(self, request, 503, 0, t0, None)
            return None

    # ------------------------------------------------------------------ one request
    async def _serve(self, request: Request) -> bool:
        """Serve one request; True if the connection may carry another."""
        ctx = self.ctx
        if ctx.status_path is not None and request.path == ctx.status_path:
            return await self._serve_status(request)
        if ctx.metrics_path is not None and request.path == ctx.metrics_path:
            return await self._serve_status(request, metrics=True)
        t0 = time.time()
        slot = await self._acquire(request, t0)
        if slot is None:
            return self.proto.keep_alive and not request.has_body
        exchange = _Exchange(request)
        ws = ctx.slot_started(slot, self, request, t0)
        reusable = False
        status = 0
        sent_body = 0
        try:
            head_frame = encode(FrameType.REQUEST,
                                build_request_head(ctx, self, request, self.stream.tls).encode())
            if not request.has_body:
                exchange.body_done = True
                await slot.send(head_frame)
                status, sent_body, reusable = await self._forward(slot, exchange, ws)
            else:
                chunks = [head_frame]
                while self.pending and isinstance(self.pending[0], Body | EndBody):
                    ev = self.pending.popleft()
                    if isinstance(ev, Body):
                        chunks.append(encode(FrameType.BODY, ev.data))
                    else:
                        chunks.append(BODY_END_FRAME)
                        exchange.body_done = True
                        break
                await slot.send(b"".join(chunks))
                if exchange.body_done:
                    status, sent_body, reusable = await self._forward(slot, exchange, ws)
                else:
                    failure: Exception | None = None
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._pump, slot, exchange)
                        try:
                            status, sent_body, reusable = await self._forward(
                                slot, exchange, ws)
                        except (SlotClosed, _Closed) as exc:
                            failure = exc  # raised here it would reach us as a group
                        tg.cancel_scope.cancel()
                    if failure is not None:
                        raise failure
                    if not exchange.body_done and reusable:
                        await slot.send(BODY_END_FRAME)  # the child is draining: let it finish
                        exchange.body_done = True
        except SlotClosed:
            reusable = False
            ctx.supervisor.slot_lost(slot)
            if exchange.status:
                # The head is out: a 502 now would land inside the body. Only closing the
                # connection tells the client the response is cut short.
                status = status or exchange.status
                self.proto.keep_alive = False
            elif status == 0:
                status = 502
                await self._send_error(502, "The child serving this request exited.")
        finally:
            ctx.slot_finished(slot, ws, status, sent_body, t0, reusable=reusable)
        ctx.log_access(self, request, status, sent_body, t0, slot, exchange.response_headers)
        if exchange.client_gone or not self.proto.keep_alive:
            return False
        if exchange.body_error is not None:
            return False
        return await self._finish_body(exchange)

    async def _forward(
        self, slot: SlotHandle, exchange: _Exchange, ws: object
    ) -> tuple[int, int, bool]:
        """Relay the child's response to the client; returns (status, body bytes, reusable).

        One cancel scope per request, re-armed only before a wait that can block: waiting on
        the child past Timeout is a hung child (504); waiting on the client past Timeout is a
        client that stopped reading (the child is told to ABORT and its reply is drained).
        """
        ctx = self.ctx
        timeout = ctx.config.timeout
        proto = self.proto
        status = 0
        body_bytes = 0
        out: list[bytes] = []
        head_sent = False
        replaced = False  # our error answer stands in for the child's reply
        while True:  # re-entered only after the client stopped reading
            waiting_on_child = True
            with anyio.CancelScope() as scope:
                while True:
                    if not slot.has_buffered():
                        scope.deadline = anyio.current_time() + timeout
                        waiting_on_child = True
                    kind, payload = await slot.recv()
                    if kind == FrameType.DATA:
                        if not replaced:
                            body_bytes += len(payload)
                            out.append(proto.body(payload))
                    elif kind == FrameType.START:
                        try:
                            head = ResponseHead.decode(payload)
                        except ValueError as exc:
                            raise slot.broke(str(exc)) from exc
                        status = head.status
                        exchange.response_headers = head.headers
                        head_sent = True
                        if exchange.body_error is not None and not exchange.client_gone:
                            # The body broke (limit, timeout, bad framing): answer that
                            # instead, and drop the child's reply.
                            err_status, reason = exchange.body_error
                            out.append(proto.error_response(err_status, reason))
                            status = err_status
                            replaced = True
                        else:
                            # A body the client is still holding back for a 100 we never
                            # sent: the connection cannot be reused (RFC 9110 10.1.1).
                            force_close = (not exchange.body_done
                                           and exchange.request.expect_continue
                                           and not exchange.continue_sent)
                            out.append(proto.start_response(
                                head.status, head.headers, head.reason,
                                stopping=ctx.stopping, force_close=force_close))
                        exchange.status = status
                    elif kind == FrameType.END:
                        slot.cpu_times = decode_cpu_times(payload)
                        if not replaced:
                            out.append(proto.end_response())
                    elif kind == FrameType.FAILED:
                        ctx.supervisor.log.error("response failed mid-stream",
                                                 pid=slot.child.pid, slot=slot.child.index)
                        proto.keep_alive = False
                        status = status or 500
                    elif kind == FrameType.CONTINUE:
                        if not exchange.body_done and not exchange.continue_sent \
                                and not head_sent:
                            exchange.continue_sent = True
                            out.append(proto.informational(100))
                        exchange.go_ahead.set()
                    done = kind == FrameType.END or kind == FrameType.FAILED
                    if out and (done or not slot.has_buffered()):
                        data = b"".join(out)
                        out.clear()
                        if data and not exchange.client_gone:
                            scope.deadline = anyio.current_time() + timeout
                            waiting_on_child = False
                            try:
                                await self.stream.send(data)
                            except (anyio.BrokenResourceError, anyio.ClosedResourceError,
                                    ConnectionError):
                                await self._client_left(slot, exchange)
                    if kind == FrameType.FAILED:
                        exchange.client_gone = True
                        return status, body_bytes, True
                    if done:
                        return status, body_bytes, True
            if waiting_on_child:
                ctx.supervisor.slot_hung(slot)
                if not head_sent and not exchange.client_gone:
                    await self._send_error(504, "The application did not answer within "
                                           f"Timeout ({timeout:g} s).")
                    return 504, 0, False
                raise _Closed
            await self._client_left(slot, exchange)  # it stopped reading: drain the child

    async def _client_left(self, slot: SlotHandle, exchange: _Exchange) -> None:
        """The client stopped reading or left: tell the child to stop, keep the slot."""
        exchange.client_gone = True
        self.proto.keep_alive = False
        with contextlib.suppress(SlotClosed):
            await slot.send(ABORT_FRAME)

    async def _pump(self, slot: SlotHandle, exchange: _Exchange) -> None:
        """Stream the rest of the request body to the child as the client sends it."""
        ctx = self.ctx
        rrt = ctx.config.request_read_timeout
        request = exchange.request
        if request.expect_continue:
            await exchange.go_ahead.wait()
        start = anyio.current_time()
        received = 0
        limit = start + rrt.body_max if rrt.body_max else float("inf")
        try:
            while True:
                while not self.pending:
                    if self.eof:
                        raise _Closed
                    deadline = start + rrt.body_timeout
                    if rrt.body_min_rate:
                        deadline += received / rrt.body_min_rate
                    with anyio.CancelScope(deadline=min(deadline, limit)) as scope:
                        before = self.proto_bytes()
                        await self._receive()
                        received += self.proto_bytes() - before
                    if scope.cancelled_caught:
                        exchange.body_error = (408, "Timed out reading the request body.")
                        await slot.send(BODY_GONE_FRAME)
                        exchange.body_done = True
                        return
                event = self.pending.popleft()
                if isinstance(event, Body):
                    await slot.send(encode(FrameType.BODY, event.data))
                elif isinstance(event, EndBody):
                    await slot.send(BODY_END_FRAME)
                    exchange.body_done = True
                    return
                elif isinstance(event, Reject):
                    exchange.body_error = (event.status, event.reason)
                    await slot.send(BODY_GONE_FRAME)
                    exchange.body_done = True
                    return
                elif isinstance(event, ConnectionClosed):
                    raise _Closed
        except _Closed:
            exchange.client_gone = True
            exchange.body_done = True
            with contextlib.suppress(SlotClosed):
                await slot.send(BODY_GONE_FRAME)
        except SlotClosed:
            return

    async def _finish_body(self, exchange: _Exchange) -> bool:
        """Read past an unread request body (bounded) so the connection can be kept."""
        if exchange.body_done and not self._body_in_flight():
            return True
        if exchange.request.expect_continue and not exchange.continue_sent:
            return False  # the client may never send it: close (RFC 9110 10.1.1)
        discarded = 0
        with anyio.move_on_after(min(self.ctx.config.timeout, 5.0)):
            while True:
                if not self.pending:
                    if self.eof:
                        return False
                    await self._receive()
                    continue
                event = self.pending[0]
                if isinstance(event, Body):
                    self.pending.popleft()
                    discarded += len(event.data)
                    if discarded > _DISCARD_LIMIT:
                        return False
                elif isinstance(event, EndBody):
                    self.pending.popleft()
                    return True
                else:
                    return not isinstance(event, Reject | ConnectionClosed)
        return False

    def _body_in_flight(self) -> bool:
        return bool(self.pending) and isinstance(self.pending[0], Body | EndBody)

    # ------------------------------------------------------------------ front-answered
    async def _serve_status(self, request: Request, *, metrics: bool = False) -> bool:
        t0 = time.time()
        if metrics:
            status, headers, body = self.ctx.metrics_page(request, self.remote_addr)
        else:
            status, headers, body = self.ctx.status_page(request, self.remote_addr,
                                                         self.local_addr)
        head = self.proto.start_response(status, headers, stopping=self.ctx.stopping)
        await self.stream.send(head + self.proto.body(body) + self.proto.end_response())
        self.ctx.log_access(self, request, status, len(body), t0, None)
        if request.has_body:
            return await self._finish_body(_Exchange(request))
        return self.proto.keep_alive

    async def _send_error(
        self,
        status: int,
        message: str,
        *,
        extra: list[tuple[bytes, bytes]] | None = None,
        close: bool = True,
    ) -> None:
        data = self.proto.error_response(status, message, extra=extra, close=close)
        with anyio.move_on_after(self.ctx.config.timeout), contextlib.suppress(
            anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError
        ):
            await self.stream.send(data)
