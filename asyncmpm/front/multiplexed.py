"""One task per HTTP/2 connection, one task per stream: each stream is a request for a slot.

The connection task reads, feeds the sans-IO :class:`HTTP2Connection` and hands events to
stream tasks; every stream is dispatched, queued, timed and logged like an HTTP/1.1 request,
so a page's 50 resources over one connection use up to 50 slots at once. Flow control is the
backpressure in both directions: a request body is acknowledged to the client only once the
child has taken it, and response data leaves only within the client's window, so a client
that stops reading holds at most a window of data here, never a response.

No slot outlives its connection: however the connection ends (the client closes it, breaks
the protocol, or stops reading for Timeout), every stream still running is treated as reset
by the client, so its child is told to ABORT and its reply drained (or, past Timeout, the
child is replaced), exactly as for one reset stream.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import h2.errors

from asyncmpm.dispatch.dispatcher import QueueFull, QueueTimeout
from asyncmpm.dispatch.slot import SlotClosed, SlotHandle
from asyncmpm.front.request_head import Peer, build_request_head
from asyncmpm.ipc.frames import (
    ABORT_FRAME,
    BODY_END_FRAME,
    BODY_GONE_FRAME,
    FrameType,
    encode,
)
from asyncmpm.ipc.messages import ResponseHead, decode_cpu_times
from asyncmpm.protocol.events import (
    Body,
    EndBody,
    Event,
    GoAway,
    Reject,
    Request,
    StreamReset,
    WindowOpened,
)
from asyncmpm.protocol.http2 import HTTP2Connection
from asyncmpm.streams import ByteStream

if TYPE_CHECKING:
    from asyncmpm.front.context import FrontContext

__all__ = ["HTTP2Front"]

_RECV = 65536
_Codes = h2.errors.ErrorCodes


@dataclass(slots=True, eq=False)
class _Stream:
    id: int
    request: Request | None  # None: refused by a limit before it became a request
    body: deque[bytes] = field(default_factory=deque)
    body_ended: bool = False
    arrived: anyio.Event = field(default_factory=anyio.Event)  # body data or its end
    window: anyio.Event = field(default_factory=anyio.Event)  # flow control opened
    reset: bool = False  # the client cancelled it, or the connection is gone
    error: tuple[int, str] | None = None  # a LimitRequest* it broke: answered instead
    status: int = 0  # what the access log and the scoreboard record
    sent: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def wake(self) -> None:
        self.arrived.set()
        self.arrived = anyio.Event()

    def wake_window(self) -> None:
        self.window.set()
        self.window = anyio.Event()


class HTTP2Front:
    """The front loop's side of one HTTP/2 connection (TLS with ALPN h2, or h2c)."""

    def __init__(self, stream: ByteStream, ctx: FrontContext, peer: Peer, *,
                 initial: bytes = b"", upgrade: tuple[bytes, Request] | None = None) -> None:
        self.stream = stream
        self.ctx = ctx
        self.remote_addr = peer.remote_addr
        self.remote_port = peer.remote_port
        self.local_addr = peer.local_addr
        self.local_port = peer.local_port
        self.proto = HTTP2Connection(ctx.http2_limits)
        self.streams: dict[int, _Stream] = {}
        self.tasks = 0  # stream tasks alive, including reset ones still draining a child
        self.started = 0  # streams ever started
        self._initial = initial
        self._upgrade = upgrade
        self._send_lock = anyio.Lock()
        self._dirty = False  # frames queued in h2 since the last write began
        self._gathering = False  # a flush is yielding so that others' frames join it
        self._read_scope: anyio.CancelScope | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._lost = False  # the client is gone or stopped reading: nothing more is sent
        self._newest = 0  # the highest stream id started

    @property
    def idle(self) -> bool:
        return self.tasks == 0

    # ------------------------------------------------------------------ connection
    async def run(self) -> None:
        """Serve until the connection ends; return once every stream has given back its slot.

        Stream tasks are never cancelled from here: a cancelled one could not tell its child
        to stop, and the slot would stay busy for good.
        """
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await self._run()
            except Exception:
                # A bug must cost this connection only, never the server.
                self.ctx.log.exception("error while serving an HTTP/2 connection",
                                       client=self.remote_addr)
            finally:
                self._lose()  # streams still running have lost their client

    def _lose(self) -> None:
        """The connection is over: every open stream ends as if the client had reset it."""
        if self._lost:
            return
        self._lost = True
        for st in self.streams.values():
            st.reset = True
            st.scope.cancel()
            st.wake()
            st.wake_window()
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def _run(self) -> None:
        proto = self.proto
        if self._upgrade is not None:
            settings, request = self._upgrade
            self._dispatch(proto.initiate_upgrade(settings, request))
        else:
            proto.initiate()
        if self._initial:
            self._dispatch(proto.receive_data(self._initial))
        await self._flush()
        ctx = self.ctx
        while not self._lost:
            if ctx.stopping and not proto.closed:
                proto.goaway()
                await self._flush()
            if proto.closed and self.idle:
                return
            deadline = (anyio.current_time() + self._idle_timeout()
                        if self.idle and not proto.closed else float("inf"))
            with anyio.CancelScope(deadline=deadline) as scope:
                self._read_scope = scope
                try:
                    data = await self.stream.receive(_RECV)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    data = b""
            self._read_scope = None
            if scope.cancelled_caught:
                if self.idle and not proto.closed:  # KeepAliveTimeout with no stream open
                    proto.goaway()
                    await self._flush()
                    return
                continue
            if not data:
                return
            self._dispatch(proto.receive_data(data))
            await self._flush()
            if proto.error is not None:
                ctx.log.info("HTTP/2 connection closed by a protocol error or limit",
                             client=self.remote_addr, error=proto.error)
                return

    def _idle_timeout(self) -> float:
        """How long a connection with no open stream may wait: for its first request as long
        as mod_reqtimeout's header stage allows, then KeepAliveTimeout (when keep-alive is
        off, an idle connection closes once its streams are done)."""
        config = self.ctx.config
        if not self.started:
            return config.request_read_timeout.header_timeout
        return config.keep_alive_timeout if config.keep_alive else 0.0

    def close_if_idle(self) -> None:
        """Server stopping: wake the reader so it sends GOAWAY; open streams finish."""
        if self._read_scope is not None:
            self._read_scope.cancel()

    def _dispatch(self, events: list[Event]) -> None:
        assert self._tg is not None
        for event in events:
            if isinstance(event, Request):
                if self.tasks >= 2 * self.ctx.http2_limits.max_concurrent_streams:
                    # Streams reset by the client while their children still run: the
                    # rapid-reset attack. It may not cost more than twice the stream limit.
                    self.proto.fail(_Codes.ENHANCE_YOUR_CALM, "rapid reset: too many "
                                    "cancelled streams still running")
                    return
                self._start_stream(_Stream(event.stream_id, event))
                continue
            if isinstance(event, Reject) and event.stream_id > self._newest:
                # A head over a LimitRequest* directive: answered by us, no slot taken.
                refused = _Stream(event.stream_id, None)
                refused.error = (event.status, event.reason)
                self._start_stream(refused)
                continue
            if isinstance(event, GoAway):
                continue  # the client leaves: streams it sent still finish, then we close
            if isinstance(event, WindowOpened) and event.stream_id == 0:
                for each in self.streams.values():
                    each.wake_window()
                continue
            st = self.streams.get(event.stream_id)
            if st is None:
                continue
            if isinstance(event, Body):
                st.body.append(event.data)
                st.wake()
            elif isinstance(event, EndBody):
                st.body_ended = True
                st.wake()
            elif isinstance(event, Reject):  # the body broke LimitRequestBody
                st.error = (event.status, event.reason)
                st.wake()
            elif isinstance(event, StreamReset):
                st.reset = True
                st.scope.cancel()
                st.wake()
                st.wake_window()
            elif isinstance(event, WindowOpened):
                st.wake_window()

    def _start_stream(self, st: _Stream) -> None:
        assert self._tg is not None
        self.ctx.metrics.h2_streams += 1
        self.started += 1
        self._newest = st.id
        self.streams[st.id] = st
        self.tasks += 1
        self._tg.start_soon(self._stream_task, st)

    async def _flush(self) -> None:
        """Send what h2 has queued; a client not reading for Timeout loses the connection.

        Streams finishing together share one write: the task that flushes first yields once
        before taking the bytes, and tasks flushing meanwhile leave theirs to it. A task that
        finds the write itself under way waits for it, which is the backpressure.
        """
        if self._lost:
            return
        self._dirty = True
        if self._gathering:
            return  # the gathering flush takes our frames with its own
        async with self._send_lock:
            if not self._dirty or self._lost:
                return  # the previous write took ours, or nobody will read them
            self._gathering = True
            try:
                await anyio.lowlevel.checkpoint()
            finally:
                self._gathering = False
            self._dirty = False
            data = self.proto.data_to_send()
            if not data:
                return
            try:
                with anyio.fail_after(self.ctx.config.timeout):
                    await self.stream.send(data)
            except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError,
                    OSError):
                self._lose()

    # ------------------------------------------------------------------ streams
    async def _stream_task(self, st: _Stream) -> None:
        try:
            if st.request is None:
                await self._answer_limit(st)
            else:
                await self._serve(st, st.request)
            if st.error is not None and not st.reset and self.proto.stream_open(st.id):
                # Answered while the client still sends a body over the limit: the rest is
                # refused without error (RFC 9113 8.1), and h2 gives its window back.
                self.proto.reset(st.id, _Codes.NO_ERROR)
                await self._flush()
        except* Exception:
            self.ctx.log.exception("error while serving an HTTP/2 stream",
                                   client=self.remote_addr, stream=st.id)
            self.proto.reset(st.id, _Codes.INTERNAL_ERROR)
            await self._flush()
        finally:
            self.tasks -= 1
            self.streams.pop(st.id, None)
            scope = self._read_scope
            if self.idle and scope is not None:
                if self.proto.closed or self.ctx.stopping:
                    scope.cancel()  # the last stream after GOAWAY: close now
                else:  # the reader waits with no deadline while streams are open
                    scope.deadline = anyio.current_time() + self._idle_timeout()

    async def _serve(self, st: _Stream, request: Request) -> None:
        ctx = self.ctx
        t0 = time.time()
        if ctx.status_path is not None and request.path == ctx.status_path:
            await self._answer_front(st, *ctx.status_page(request, self.remote_addr,
                                                          self.local_addr), t0)
            return
        if ctx.metrics_path is not None and request.path == ctx.metrics_path:
            await self._answer_front(st, *ctx.metrics_page(request, self.remote_addr), t0)
            return
        if st.error is not None:  # the body broke a limit before the stream had a slot
            await self._answer_limit(st)
            ctx.log_access(self, request, st.status, 0, t0, None)
            return
        queued = ctx.dispatcher.idle == 0
        slot: SlotHandle | None = None
        with st.scope:
            try:
                slot = await ctx.dispatcher.acquire(ctx.config.timeout)
            except (QueueFull, QueueTimeout):
                body = b"every slot is busy; try again\n"
                await self._answer_front(st, 503, [(b"content-type", b"text/plain"),
                                                   (b"retry-after", b"1")], body, t0)
                return
        if slot is None:  # reset while it waited for a slot
            return
        if queued:
            ctx.metrics.queue_wait.observe(time.time() - t0)
        ws = ctx.slot_started(slot, self, request, t0)
        reusable = False
        settled = False  # the slot's fate is known: reusable, or its child is being replaced
        try:
            head = build_request_head(ctx, self, request, self.stream.tls)
            await slot.send(encode(FrameType.REQUEST, head.encode()))
            if not request.has_body:
                reusable = await self._forward(slot, st)
            else:
                failure: SlotClosed | None = None
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, slot, st)
                    try:
                        reusable = await self._forward(slot, st)
                    except SlotClosed as exc:
                        failure = exc  # raised in here it would reach us wrapped in a group
                    tg.cancel_scope.cancel()
                if failure is not None:
                    raise failure
            settled = True
        except SlotClosed:
            reusable = False
            settled = True
            ctx.supervisor.slot_lost(slot)
            if st.status == 0 and not st.reset:
                st.status = 502
                await self._answer_error(st, 502, "The child serving this request exited.")
            elif not st.reset:
                self.proto.reset(st.id, _Codes.INTERNAL_ERROR)
                await self._flush()
        finally:
            if not settled:
                # Cancelled or broken mid-request with no word to the child, which may still
                # be running it: replace it rather than leave the slot busy for good.
                ctx.supervisor.slot_abandoned(slot)
            ctx.slot_finished(slot, ws, st.status, st.sent, t0, reusable=reusable)
            ctx.log_access(self, request, st.status, st.sent, t0, slot, st.headers)

    async def _forward(self, slot: SlotHandle, st: _Stream) -> bool:
        """Relay the child's response into the stream; True if the slot can be reused.

        Waiting on the child past Timeout is a hung child (504, or RST_STREAM once the
        response started); waiting on the client's window past Timeout gives up the stream.
        After a reset the child is told to ABORT and its reply drained, keeping the slot. A
        body that broke LimitRequestBody is answered instead of the child's reply, which is
        drained (as HTTP/1.1 does).
        """
        ctx = self.ctx
        proto = self.proto
        timeout = ctx.config.timeout
        started = gone = False
        while True:
            with anyio.CancelScope(deadline=anyio.current_time() + timeout) as wait:
                st.scope = wait  # a reset cancels the wait: the child is told at once
                if st.reset:
                    wait.cancel()
                kind, payload = await slot.recv()
            if wait.cancelled_caught and st.reset and not gone:
                gone = True
                with contextlib.suppress(SlotClosed):
                    await slot.send(ABORT_FRAME)
                continue
            if wait.cancelled_caught:
                ctx.supervisor.slot_hung(slot)
                if gone or st.reset:
                    pass
                elif not started:
                    st.status = 504
                    await self._answer_error(st, 504, "The application did not answer within "
                                             f"Timeout ({timeout:g} s).")
                    return False
                else:
                    proto.reset(st.id, _Codes.INTERNAL_ERROR)
                    await self._flush()
                st.status = st.status or 504
                return False
            if st.reset and not gone:
                gone = True
                with contextlib.suppress(SlotClosed):
                    await slot.send(ABORT_FRAME)
            if kind == FrameType.START:
                try:
                    head = ResponseHead.decode(payload)
                except ValueError as exc:
                    raise slot.broke(str(exc)) from exc
                st.status, st.headers, started = head.status, head.headers, True
                if not gone and st.error is not None:
                    gone = True  # the child's reply is dropped, ours stands in for it
                    await self._answer_limit(st)
                elif not gone:
                    proto.start_response(st.id, head.status, head.headers)
                    if not slot.has_buffered():  # else it goes out with the body, one write
                        await self._flush()
            elif kind == FrameType.DATA:
                if not gone:
                    st.sent += len(payload)
                    if not await self._send_data(st, payload, flush=not slot.has_buffered()):
                        gone = True
                        with contextlib.suppress(SlotClosed):
                            await slot.send(ABORT_FRAME)
            elif kind == FrameType.END:
                slot.cpu_times = decode_cpu_times(payload)
                if not gone:
                    proto.end_response(st.id)
                    await self._flush()
                return True
            elif kind == FrameType.FAILED:
                ctx.supervisor.log.error("response failed mid-stream", pid=slot.child.pid,
                                         slot=slot.child.index)
                if not gone:
                    proto.reset(st.id, _Codes.INTERNAL_ERROR)
                    await self._flush()
                st.status = st.status or 500
                return True
            elif kind == FrameType.CONTINUE and not gone and not started \
                    and not st.body_ended and st.error is None:
                proto.informational(st.id, 100)
                await self._flush()

    async def _send_data(self, st: _Stream, data: bytes, *, flush: bool = True) -> bool:
        """Send within the client's windows; False if the stream is gone or stalled.

        Without ``flush`` the last piece may stay queued for the caller's next flush."""
        view = memoryview(data)
        timeout = self.ctx.config.timeout
        while view:
            if st.reset:
                return False
            room = self.proto.window(st.id)
            if room < 0:
                return False
            if room == 0:
                await self._flush()
                waiter = st.window
                with anyio.move_on_after(timeout) as stall:
                    await waiter.wait()
                if stall.cancelled_caught:  # a zero-window stall: give the stream up
                    self.proto.reset(st.id, _Codes.CANCEL)
                    await self._flush()
                    return False
                continue
            chunk, view = view[:room], view[room:]
            self.proto.send_body(st.id, bytes(chunk))
            if view or flush:
                await self._flush()
        return True

    async def _pump(self, slot: SlotHandle, st: _Stream) -> None:
        """The request body to the child, acknowledged to the client as the child takes it."""
        rrt = self.ctx.config.request_read_timeout
        start = anyio.current_time()
        received = 0
        try:
            while True:
                while st.body:
                    chunk = st.body.popleft()
                    await slot.send(encode(FrameType.BODY, chunk))
                    received += len(chunk)
                    self.proto.consumed(st.id, len(chunk))
                    await self._flush()
                if st.body_ended:
                    await slot.send(BODY_END_FRAME)
                    return
                if st.reset or st.error is not None:
                    await slot.send(BODY_GONE_FRAME)
                    return
                deadline = start + rrt.body_timeout
                if rrt.body_min_rate:
                    deadline += received / rrt.body_min_rate
                waiter = st.arrived
                with anyio.CancelScope(deadline=deadline) as scope:
                    await waiter.wait()
                if scope.cancelled_caught and not st.body and not st.body_ended:
                    # mod_reqtimeout's body stage: the client is too slow; end the stream.
                    await slot.send(BODY_GONE_FRAME)
                    self.proto.reset(st.id, _Codes.CANCEL)
                    st.reset = True
                    await self._flush()
                    return
        except SlotClosed:
            return

    # ------------------------------------------------------------------ front-answered
    async def _respond(self, st: _Stream, status: int, headers: list[tuple[bytes, bytes]],
                       body: bytes) -> None:
        """A whole response the front loop writes itself (status page, 5xx)."""
        if st.reset:
            return
        proto = self.proto
        proto.start_response(st.id, status, [*headers, (b"content-length", b"%d" % len(body))],
                             end=not body)
        await self._flush()
        if body and await self._send_data(st, body):
            proto.end_response(st.id)
            await self._flush()

    async def _answer_front(self, st: _Stream, status: int, headers: list[tuple[bytes, bytes]],
                            body: bytes, t0: float) -> None:
        assert st.request is not None
        await self._respond(st, status, headers, body)
        self.ctx.log_access(self, st.request, status, len(body), t0, None)

    async def _answer_limit(self, st: _Stream) -> None:
        """The 413/414/431 of a request that broke a LimitRequest* directive."""
        assert st.error is not None
        st.status, reason = st.error
        await self._answer_error(st, st.status, reason[:1].upper() + reason[1:] + ".")

    async def _answer_error(self, st: _Stream, status: int, message: str) -> None:
        await self._respond(st, status, [(b"content-type", b"text/plain")],
                            f"{message}\n".encode())
