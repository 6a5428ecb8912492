"""The callback-driven front for plaintext HTTP/1.1 on asyncio: hold, read, hand off.

This is the event MPM's listener, with processes. Every plaintext connection sits in one
private epoll set (``EPOLLONESHOT``: armed only while the front wants its bytes), registered
with the event loop once. The front reads a request head under mod_reqtimeout's header
deadlines, then hands the connection (socket and bytes read) to a free slot and forgets about
it until the slot's HANDBACK arrives, on a callback from the slot's channel. No task, no cancel
scope and no future is created per request or per connection: a cycle is a ``recv``, a head
parse, a ``sendmsg`` with the descriptor, and an ``epoll_ctl`` to re-arm.

What the front answers itself stays here (400/408/414/431 for bad heads, 503 when the queue is
full or Timeout passes in it, 502/504 for a slot that died or hung before its response
started). Anything else that needs a conversation (the status and metrics pages, HTTP/2 by
prior knowledge or Upgrade) goes to the task-driven :class:`~asyncmpm.front.connection.
Connection` with the bytes already read.

Deadlines live in one heap with lazy deletion and one loop timer armed at the earliest.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import heapq
import select
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from asyncmpm.dispatch.dispatcher import QueueFull
from asyncmpm.dispatch.slot import SlotClosed
from asyncmpm.ipc.frames import FrameType, encode
from asyncmpm.ipc.handoff import Handback
from asyncmpm.protocol.events import Event, Reject, Request
from asyncmpm.protocol.http1 import HTTP1Connection
from asyncmpm.protocol.http2 import PREFACE

if TYPE_CHECKING:
    import asyncio

    from asyncmpm.dispatch.dispatcher import _Waiter
    from asyncmpm.dispatch.slot import SlotHandle
    from asyncmpm.front.context import FrontContext
    from asyncmpm.supervisor.scoreboard import WorkerScore

__all__ = ["HandoffFront"]

_RECV = 65536  # never 128 KiB or more: CPython would malloc via mmap on every call
_ARM = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT
_LINGER = 2.0  # httpd's SECONDS_TO_LINGER
_LINGER_BYTES = 1024 * 1024
_ACCEPT_BATCH = 64  # connections taken per wake-up of a listener, then other callbacks run
_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_BACKOFF = 0.1  # seconds between accept attempts while out of resources
_WILDCARD = {"0.0.0.0", "::"}
_TICK = 0.005  # the deadline timer fires at most this often (deadlines are seconds long)


class _State(enum.Enum):
    HEAD = "reading a head"  # waiting for (the rest of) a request head
    QUEUED = "waiting for a slot"
    HANDED = "in a slot"
    LINGER = "lingering close"
    CLOSED = "closed"


class _Conn:
    """One plaintext connection held by the front (its :class:`Peer` for logs and status)."""

    __slots__ = (
        "baseline",
        "epoch",
        "family",
        "fd",
        "header_deadline",
        "header_limit",
        "header_start",
        "local_addr",
        "local_port",
        "proto",
        "protocol",
        "raw",
        "raw_base",
        "received",
        "registered",
        "remote_addr",
        "remote_port",
        "request",
        "served",
        "shared",
        "slot",
        "sock",
        "state",
        "t0",
        "waiter",
        "ws",
    )

    def __init__(self, sock: socket.socket, family: int, remote: tuple[Any, ...],
                 local: tuple[Any, ...], proto: HTTP1Connection) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.family = family
        self.remote_addr = str(remote[0])
        self.remote_port = str(remote[1])
        self.local_addr = str(local[0])
        self.local_port = str(local[1])
        self.proto = proto
        self.protocol = "http/1.1"
        self.raw = bytearray()
        self.raw_base = 0
        self.state = _State.HEAD
        self.epoch = 0  # bumped on every state change: stale heap entries are skipped
        self.served = 0
        self.received = 0
        self.header_start = 0.0
        self.header_deadline = 0.0
        self.header_limit = 0.0
        self.request: Request | None = None
        self.slot: SlotHandle | None = None
        self.waiter: _Waiter | None = None
        self.ws: WorkerScore | None = None
        self.t0 = 0.0
        self.baseline = 0  # the slot record's request count when it got this connection
        self.registered = False  # in the front's epoll set (only once it had to wait)
        self.shared = False  # a hung slot may still hold the connection's file


class HandoffFront:
    """Holds plaintext HTTP/1.1 connections between requests and hands them to slots.

    On asyncio the private epoll set is one reader of the event loop and deadlines are one
    loop timer; on trio, which has no reader callbacks, :meth:`drive` (one task) waits on
    the same set and the next deadline, and the slots' channels join the set while they
    serve a connection (trio streams cannot call back). Everything else is the same code.
    """

    def __init__(
        self,
        ctx: FrontContext,
        loop: asyncio.AbstractEventLoop | None,
        to_task: Callable[[socket.socket, tuple[Any, ...], tuple[Any, ...], bytes], None],
        on_empty: Callable[[], None],
        spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], object],
    ) -> None:
        self.ctx = ctx
        self.loop = loop  # None on trio: see drive()
        self.to_task = to_task  # hand a connection to the task-driven front, with bytes read
        self.on_empty = on_empty  # stopping and the last connection is gone
        self.spawn = spawn  # run a rare write that must wait, in the server's task group
        self.conns: dict[int, _Conn] = {}
        self.ep = select.epoll()
        self.now: Callable[[], float] = loop.time if loop is not None else anyio.current_time
        # Deadlines: one FIFO per delay (set in order, they come due in order), a heap for
        # the few that are not "now + a fixed delay".
        self._lanes: dict[float, deque[tuple[float, int, _Conn]]] = {}
        self._heap: list[tuple[float, int, int, _Conn]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._wait: anyio.CancelScope | None = None  # trio: drive()'s wait, to move its deadline
        self._closed = False
        self._backing_off_since: float | None = None
        # Listening descriptors (in the epoll set, level-triggered): (socket, family, local).
        self._listeners: dict[int, tuple[socket.socket, int, tuple[Any, ...] | None]] = {}
        self._resume_at: dict[int, float] = {}  # listeners resting after EMFILE and kin
        # trio: the channels of slots that have a connection, by descriptor and by slot, and
        # those that closed meanwhile (acted on from drive()).
        self._channels: dict[int, tuple[_Conn, SlotHandle]] = {}
        self._watched: dict[SlotHandle, int] = {}
        self._hangups: list[tuple[_Conn, SlotHandle]] = []
        if loop is not None:
            loop.add_reader(self.ep.fileno(), self._on_ready)

    async def drive(self) -> None:
        """trio: wait on the epoll set and the next deadline, act, again (until closed)."""
        fd = self.ep.fileno()
        while not self._closed:
            with anyio.CancelScope(deadline=self._timer_at) as scope:
                self._wait = scope
                try:
                    await anyio.wait_readable(fd)
                except anyio.ClosedResourceError:
                    return
            self._wait = None
            if self._closed:
                return
            if self.now() >= self._timer_at:
                self._expire()
            self._on_ready()

    # ------------------------------------------------------------------ lifecycle
    def __len__(self) -> int:
        return len(self.conns)

    def listen(self, listener: socket.socket) -> None:
        """Accept plaintext connections from this listening socket, a batch per wake-up."""
        bound = listener.getsockname()
        # A listener bound to one address gives every connection that local address; only
        # a wildcard one needs a getsockname per connection.
        local = None if bound[0] in _WILDCARD else bound
        fd = listener.fileno()
        self._listeners[fd] = (listener, int(listener.family), local)
        self.ep.register(fd, select.EPOLLIN)

    def unlisten(self, listener: socket.socket) -> None:
        """Stop accepting from this listener (before it closes)."""
        fd = listener.fileno()
        if self._listeners.pop(fd, None) is not None and self._resume_at.pop(fd, None) is None:
            with contextlib.suppress(OSError):
                self.ep.unregister(fd)

    def stop_accepting(self) -> None:
        """Stop accepting from every listener (the server stops)."""
        for _, (listener, _, _) in list(self._listeners.items()):
            self.unlisten(listener)

    def _accept(self, fd: int) -> None:
        """Take every connection that is ready (up to a batch) and read each one's first
        head at once: a client sends it right after connecting, so it has nearly always
        arrived (measured: 33 EAGAIN in 9,915 reads under wrk; TCP_DEFER_ACCEPT saved
        nothing more, and would hide silent connections from the front)."""
        listener, family, local = self._listeners[fd]
        accept = listener._accept  # type: ignore[attr-defined]  # the descriptor, no wrapper
        for _ in range(_ACCEPT_BATCH):
            try:
                new, remote = accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY:
                    self._accept_backoff(fd, exc)
                    return
                self.ctx.log.warning("accept failed", error=str(exc))
                continue
            sock = socket.socket(family, socket.SOCK_STREAM, 0, new)
            try:
                here = local if local is not None else sock.getsockname()
            except OSError:
                sock.close()
                continue
            self.add(sock, family, remote, here)
        if self._backing_off_since is not None:
            self.ctx.log.info("accepting connections again",
                              after=f"{time.monotonic() - self._backing_off_since:.1f}s")
            self._backing_off_since = None

    def _accept_backoff(self, fd: int, exc: OSError) -> None:
        """Out of descriptors or memory: stop watching the listener for a while instead of
        spinning (connections wait in the kernel backlog meanwhile). Logged once per
        episode, not ten times a second."""
        if self._backing_off_since is None:
            self._backing_off_since = time.monotonic()
            self.ctx.log.error("AH00050: accept failed, backing off and retrying",
                               error=str(exc), errno=errno.errorcode.get(exc.errno or 0))
        with contextlib.suppress(OSError):
            self.ep.unregister(fd)
        when = self.now() + _ACCEPT_BACKOFF
        self._resume_at[fd] = when
        if when < self._timer_at:
            self._arm(when)

    def _resume_accepting(self, now: float) -> float:
        """Listeners whose rest is over watch again; returns the next rest's end."""
        nearest = float("inf")
        for fd, when in list(self._resume_at.items()):
            if when <= now:
                del self._resume_at[fd]
                with contextlib.suppress(OSError):
                    self.ep.register(fd, select.EPOLLIN)
            else:
                nearest = min(nearest, when)
        return nearest

    def add(self, sock: socket.socket, family: int, remote: tuple[Any, ...],
            local: tuple[Any, ...]) -> None:
        """A new plaintext connection: its first head is read here, at once if it came
        with the connection, else when epoll says so."""
        conn = _Conn(sock, family, remote, local, HTTP1Connection(self.ctx.http1_limits))
        self.conns[conn.fd] = conn
        self.ctx.metrics.connection_opened("http/1.1")
        self._start_head(conn, first=True)
        try:
            self._read_head(conn)
        except Exception:
            self.ctx.log.exception("error while serving a connection", client=conn.remote_addr)
            self._close(conn, cut=True)

    def close(self) -> None:
        """The server is done: every connection here is closed (in-flight ones were drained
        or their time is up)."""
        if self._closed:
            return
        for conn in list(self.conns.values()):
            slot = conn.slot
            if conn.state is _State.HANDED and slot is not None and conn.ws is not None:
                # Given up mid-request (GracefulShutdownTimeout): the slot is abandoned, and
                # its child is stopped with the others.
                self._unwatch(slot)
                conn.slot = None
                self.ctx.slot_handed_back(slot, conn.ws, None, conn.t0, reusable=False)
            self._close(conn, cut=True)
        self.stop_accepting()
        self._closed = True
        if self.loop is not None:
            self.loop.remove_reader(self.ep.fileno())
        else:
            anyio.notify_closing(self.ep.fileno())  # wakes drive(), which returns
        self.ep.close()
        if self._timer is not None:
            self._timer.cancel()

    def stop_idle(self) -> None:
        """Graceful stop: close connections waiting between requests (the slots close
        theirs after the current request: the supervisor asked them to wind down)."""
        for conn in list(self.conns.values()):
            if conn.state is _State.HEAD and conn.proto.between_requests and not conn.raw:
                self._close(conn)
        self._maybe_empty()

    def _maybe_empty(self) -> None:
        if self.ctx.stopping and not self.conns:
            self.on_empty()

    # ------------------------------------------------------------------ reading heads
    def _start_head(self, conn: _Conn, *, first: bool = False) -> None:
        """Wait for a request head: KeepAliveTimeout after a response (until the first
        byte), mod_reqtimeout's header stage once bytes come."""
        conn.state = _State.HEAD
        conn.epoch += 1
        now = self.now()
        rrt = self.ctx.config.request_read_timeout
        conn.header_start = now
        conn.received = 0
        if not first and conn.proto.between_requests and not conn.raw:
            delay = self.ctx.config.keep_alive_timeout
            conn.header_deadline = conn.header_limit = now + delay
        else:
            conn.header_deadline = now + rrt.header_timeout
            conn.header_limit = now + (rrt.header_max or rrt.header_timeout)
            delay = min(rrt.header_timeout, rrt.header_max or rrt.header_timeout)
        self._after(delay, conn)

    def _on_ready(self) -> None:
        try:
            ready = self.ep.poll(0, 256)
        except OSError:
            return
        conns = self.conns
        for fd, _events in ready:
            conn = conns.get(fd)
            if conn is None:
                if fd in self._listeners:
                    self._accept(fd)
                elif fd in self._channels:
                    self._channel_ready(fd)
                continue
            try:
                if conn.state is _State.LINGER:
                    self._linger_read(conn)
                elif conn.state is _State.HEAD:
                    self._read_head(conn)
            except Exception:
                self.ctx.log.exception("error while serving a connection",
                                       client=conn.remote_addr)
                self._close(conn, cut=True)

    def _recv(self, conn: _Conn) -> bytes | None:
        """What the client sent (b"" at its end or on an error), or None after re-arming
        the descriptor when nothing is there yet."""
        try:
            return conn.sock.recv(_RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            self._rearm(conn)
            return None
        except OSError:
            return b""

    def _read_head(self, conn: _Conn) -> None:
        data = self._recv(conn)
        if data is None:
            return
        if not data:
            self._close(conn)
            return
        was_idle = conn.proto.between_requests and not conn.raw
        if not conn.served and not conn.raw and self.ctx.config.http2 and (
                PREFACE.startswith(data[: len(PREFACE)])):
            self._to_task(conn, data)  # HTTP/2 with prior knowledge (or the start of it)
            return
        conn.raw += data
        conn.received += len(data)
        events = conn.proto.receive_data(data)
        if was_idle and conn.served:
            self._start_head(conn)  # the next request began: the header stage starts now
        if self._take_head(conn, events):
            return
        rrt = self.ctx.config.request_read_timeout
        if rrt.header_min_rate and not (conn.proto.between_requests and not conn.raw):
            # Only ever later: the deadline already set finds this one when it comes.
            conn.header_deadline = (conn.header_start + rrt.header_timeout
                                    + conn.received / rrt.header_min_rate)
        self._rearm(conn)

    def _take_head(self, conn: _Conn, events: list[Event]) -> bool:
        """Act on a complete head (or a refused one); False while it is incomplete."""
        for event in events:
            if isinstance(event, Reject):
                self._answer(conn, event.status, event.reason, close=True)
                return True
            if isinstance(event, Request):
                self._got_request(conn, event)
                return True
        return False

    def _got_request(self, conn: _Conn, request: Request) -> None:
        ctx = self.ctx
        start = conn.proto.head_starts.popleft() if conn.proto.head_starts else conn.raw_base
        del conn.raw[: start - conn.raw_base]
        conn.raw_base = start
        if self._needs_task(request):
            self._to_task(conn, bytes(conn.raw))
            return
        conn.request = request
        conn.t0 = time.time()
        slot = ctx.dispatcher.try_acquire()
        if slot is not None:
            self._hand_off(conn, slot)
            return
        conn.state = _State.QUEUED
        conn.epoch += 1
        try:
            conn.waiter = ctx.dispatcher.wait_for(lambda slot: self._slot_free(conn, slot))
        except QueueFull:
            self._busy(conn)
            return
        self._after(ctx.config.timeout, conn)

    def _needs_task(self, request: Request) -> bool:
        ctx = self.ctx
        if (ctx.status_path is not None and request.path == ctx.status_path) or (
                ctx.metrics_path is not None and request.path == ctx.metrics_path):
            return True
        if not ctx.config.http2:
            return False
        return any(name == b"upgrade" and b"h2c" in value.lower()
                   for name, value in request.headers)

    def _slot_free(self, conn: _Conn, slot: SlotHandle) -> None:
        conn.waiter = None
        if conn.state is not _State.QUEUED:
            self.ctx.dispatcher.release(slot)  # gone meanwhile: pass the slot on
            return
        if conn.t0:
            self.ctx.metrics.queue_wait.observe(time.time() - conn.t0)
        self._hand_off(conn, slot)

    def _busy(self, conn: _Conn) -> None:
        request = conn.request
        assert request is not None
        self._answer(conn, 503, "The server is temporarily unable to service your request: "
                     "every slot is busy.", extra=[(b"Retry-After", b"1")],
                     close=request.has_body)
        self.ctx.log_access(conn, request, 503, 0, conn.t0, None)

    # ------------------------------------------------------------------ handing off
    def _hand_off(self, conn: _Conn, slot: SlotHandle) -> None:
        ctx = self.ctx
        request = conn.request
        assert request is not None
        handoff = ctx.handoff(conn, conn.family, conn.proto.keepalives, bytes(conn.raw))
        conn.state = _State.HANDED
        conn.epoch += 1
        conn.slot = slot
        conn.ws = ctx.slot_started(slot, conn, request, conn.t0)
        ctx.handoff_began(slot)
        conn.baseline = ctx.supervisor.records.requests(slot.record)
        frame = encode(FrameType.HANDOFF, handoff.encode())
        try:
            sent = slot.send_handoff(frame, conn.fd)
        except SlotClosed:
            self._slot_failed(conn, slot, 502)
            return
        self._watch(conn, slot)
        if sent == 0:  # the channel is full (it never is when idle): wait in a task
            payload = handoff.encode()
            self._spawn(lambda: slot.hand_off(payload, conn.fd))
        elif sent < len(frame):
            rest = frame[sent:]
            self._spawn(lambda: slot.send(rest))
        self._after(ctx.config.timeout, conn)

    def _watch(self, conn: _Conn, slot: SlotHandle) -> None:
        """Take the slot's frames (its HANDBACK) from now on: by callback from an asyncio
        stream, else through the epoll set."""
        if self.loop is not None:
            if not slot.watch(lambda kind, payload: self._slot_frame(conn, slot, kind, payload)):
                raise RuntimeError("the callback front needs asyncio slot channels on asyncio")
            return
        slot.watch(lambda _kind, _payload: self._channel_closing(conn, slot))
        fd = slot.channel_fd()
        self._channels[fd] = (conn, slot)
        self._watched[slot] = fd
        try:
            self.ep.register(fd, _ARM)
        except FileExistsError:
            self.ep.modify(fd, _ARM)

    def _unwatch(self, slot: SlotHandle) -> None:
        slot.watch(None)
        if self.loop is None:
            fd = self._watched.pop(slot, None)
            if fd is not None:
                self._channels.pop(fd, None)
                with contextlib.suppress(OSError):
                    self.ep.unregister(fd)

    def _channel_ready(self, fd: int) -> None:
        conn, slot = self._channels[fd]
        for kind, payload in slot.read_frames():
            self._slot_frame(conn, slot, kind, payload)
        if self._watched.get(slot) == fd:  # nothing final yet: wait again
            try:
                self.ep.modify(fd, _ARM)
            except OSError:
                self._slot_frame(conn, slot, 0, b"")

    def _channel_closing(self, conn: _Conn, slot: SlotHandle) -> None:
        """trio: the supervisor closes the channel of a slot that has a connection (its child
        exited). Its descriptor leaves the epoll set now, before it closes (the number could
        come back as a client's); the hangup is acted on from drive(), as asyncio would call
        back later, not inside the supervisor's call."""
        self._unwatch(slot)
        self._hangups.append((conn, slot))
        self._arm(min(self._timer_at, self.now()))

    def _slot_frame(self, conn: _Conn, slot: SlotHandle, kind: int, payload: bytes) -> None:
        if conn.slot is not slot or conn.state is not _State.HANDED:
            return
        try:
            if kind == FrameType.HANDBACK:
                self._handed_back(conn, slot, Handback.decode(payload))
            elif kind == 0:
                self._slot_failed(conn, slot, 502)
        except Exception:
            self.ctx.log.exception("error while taking a connection back",
                                   client=conn.remote_addr)
            self._close(conn, cut=True)

    def _handed_back(self, conn: _Conn, slot: SlotHandle, back: Handback) -> None:
        ctx = self.ctx
        self._unwatch(slot)
        conn.slot = None
        assert conn.ws is not None
        ctx.slot_handed_back(slot, conn.ws, back, conn.t0, reusable=True)
        conn.served += len(back.served)
        if not back.keep or ctx.stopping:
            self._linger(conn) if not back.keep else self._close(conn, cut=True)
            return
        conn.proto = HTTP1Connection(ctx.http1_limits, keepalives=back.keepalives)
        conn.raw = bytearray()
        conn.raw_base = 0
        self._start_head(conn)
        if back.leftover:
            conn.raw += back.leftover
            conn.received = len(back.leftover)
            if self._take_head(conn, conn.proto.receive_data(back.leftover)):
                return
        self._rearm(conn)

    def _slot_failed(self, conn: _Conn, slot: SlotHandle, status: int) -> None:
        """The slot died (502) or hung (504) while it had the connection."""
        ctx = self.ctx
        records = ctx.supervisor.records
        unanswered = records.unanswered(slot.record, conn.baseline)
        records.idle(slot.record)
        self._unwatch(slot)
        conn.slot = None
        conn.shared = status != 502  # a dead process closed its copy, a hung one did not
        assert conn.ws is not None
        # First what went wrong (it decides the child's fate), then the slot is done.
        if status == 502:
            ctx.supervisor.slot_lost(slot)
        else:
            ctx.supervisor.slot_hung(slot)
        ctx.slot_handed_back(slot, conn.ws, None, conn.t0, reusable=False)
        request = conn.request
        if unanswered:
            reason = ("The child serving this request exited." if status == 502 else
                      f"The application did not answer within Timeout "
                      f"({ctx.config.timeout:g} s).")
            self._answer(conn, status, reason, close=True)
        else:
            self._close(conn, cut=True)
        if request is not None:
            ctx.log_access(conn, request, status, 0, conn.t0, slot)

    def _check_slot(self, conn: _Conn) -> None:
        """A handed-off connection's periodic look: a request past Timeout is a hung slot."""
        slot = conn.slot
        if slot is None:
            return
        left = self.ctx.supervisor.records.time_left(slot.record, self.ctx.config.timeout,
                                                     time.time())
        if left > 0:
            self._schedule(self.now() + left, conn)
            return
        self._slot_failed(conn, slot, 504)

    # ------------------------------------------------------------------ timers
    def _after(self, delay: float, conn: _Conn) -> None:
        """A deadline ``delay`` seconds from now for the connection's current state."""
        when = self.now() + delay
        lane = self._lanes.get(delay)
        if lane is None:
            lane = self._lanes[delay] = deque()
        lane.append((when, conn.epoch, conn))
        if when < self._timer_at:
            self._arm(when)

    def _schedule(self, when: float, conn: _Conn) -> None:
        """A deadline at ``when`` (loop time) for the connection's current state."""
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, conn.epoch, conn))
        if when < self._timer_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        self._timer_at = when
        if self.loop is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(when, self._expire)
        elif self._wait is not None:
            self._wait.deadline = when  # drive() wakes then

    def _expire(self) -> None:
        """Act on every deadline that has come (entries of a past state are skipped), then
        sleep until the next one, but at least a tick: deadlines are coalesced."""
        self._timer = None
        self._timer_at = float("inf")
        hangups, self._hangups = self._hangups, []
        for conn, slot in hangups:
            self._slot_frame(conn, slot, 0, b"")
        now = self.now()
        due: list[tuple[int, _Conn]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, epoch, conn = heapq.heappop(heap)
            due.append((epoch, conn))
        nearest = heap[0][0] if heap else float("inf")
        if self._resume_at:
            nearest = min(nearest, self._resume_accepting(now))
        for delay, lane in list(self._lanes.items()):
            while lane and lane[0][0] <= now:
                _, epoch, conn = lane.popleft()
                due.append((epoch, conn))
            if lane:
                nearest = min(nearest, lane[0][0])
            else:
                del self._lanes[delay]
        for epoch, conn in due:
            if epoch != conn.epoch or conn.state is _State.CLOSED:
                continue
            try:
                self._deadline(conn, now)
            except Exception:
                self.ctx.log.exception("error at a connection deadline",
                                       client=conn.remote_addr)
                self._close(conn, cut=True)
        if nearest < self._timer_at:
            self._arm(max(nearest, now + _TICK))

    def _deadline(self, conn: _Conn, now: float) -> None:
        state = conn.state
        if state is _State.HEAD:
            if min(conn.header_deadline, conn.header_limit) > now:
                self._schedule(min(conn.header_deadline, conn.header_limit), conn)
                return
            if conn.proto.between_requests and not conn.raw:
                self._close(conn)  # nothing of a request arrived: just close, as httpd does
            else:
                self._answer(conn, 408, "Server timeout waiting for the HTTP request from the "
                             "client.", close=True)
        elif state is _State.QUEUED:
            if conn.waiter is not None:
                self.ctx.dispatcher.abandon(conn.waiter)
                conn.waiter = None
            self._busy(conn)
        elif state is _State.HANDED:
            self._check_slot(conn)
        elif state is _State.LINGER:
            self._close(conn)

    # ------------------------------------------------------------------ answers and closing
    def _answer(self, conn: _Conn, status: int, reason: str, *,
                extra: list[tuple[bytes, bytes]] | None = None, close: bool) -> None:
        """A small error page the front writes itself (the socket is idle: it fits)."""
        data = conn.proto.error_response(status, reason, extra=extra, close=close)
        try:
            sent = conn.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError:
            sent = -1
        if not close and sent == len(data) and conn.proto.keep_alive:
            self._start_head(conn)
            self._rearm(conn)
            return
        if sent < 0:
            self._close(conn)
            return
        self._shutdown_write(conn)
        self._linger(conn)

    def _shutdown_write(self, conn: _Conn) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _linger(self, conn: _Conn) -> None:
        """httpd's lingering close: our side is shut; read what the client still sends (at
        most 2 s) so closing does not reset the connection before it read the response."""
        conn.state = _State.LINGER
        conn.epoch += 1
        conn.received = 0
        if self._linger_read(conn):  # the client's FIN has usually come already
            self._after(_LINGER, conn)

    def _linger_read(self, conn: _Conn) -> bool:
        """Read what is there; True while the client has not closed (epoll is armed)."""
        while True:
            data = self._recv(conn)
            if data is None:
                return conn.state is _State.LINGER
            conn.received += len(data)
            if not data or conn.received > _LINGER_BYTES:
                self._close(conn)
                return False

    def _rearm(self, conn: _Conn) -> None:
        """Wake once when the client sends (it joins the epoll set the first time it must
        be waited for: a head that came with the connection never needs it)."""
        try:
            if conn.registered:
                self.ep.modify(conn.fd, _ARM)
            else:
                self.ep.register(conn.fd, _ARM)
                conn.registered = True
        except OSError:
            self._close(conn)

    def _to_task(self, conn: _Conn, data: bytes) -> None:
        """This connection needs the task-driven front (status page, HTTP/2): pass it on."""
        self._forget(conn)
        self.to_task(conn.sock, (conn.remote_addr, int(conn.remote_port)),
                     (conn.local_addr, int(conn.local_port)), data)

    def _forget(self, conn: _Conn, *, last: bool = False) -> None:
        """Stop holding the connection. ``last``: our copy is about to close and no slot has
        one, so closing it takes it out of the epoll set (no epoll_ctl needed)."""
        conn.state = _State.CLOSED
        conn.epoch += 1
        if self.conns.pop(conn.fd, None) is not None:
            self.ctx.metrics.connection_closed(conn.protocol)
            if conn.registered and not last:
                try:
                    self.ep.unregister(conn.fd)
                except OSError:
                    pass

    def _close(self, conn: _Conn, *, cut: bool = False) -> None:
        """Close our copy; ``cut`` also shuts the connection down for a slot that may still
        hold it (hung, or killed mid-request)."""
        if conn.state is _State.CLOSED:
            return
        if conn.waiter is not None:
            self.ctx.dispatcher.abandon(conn.waiter)
            conn.waiter = None
        # A slot that still has the connection (hung, or abandoned at shutdown) keeps the
        # open file alive, and with it our epoll interest: only then must it be removed.
        self._forget(conn, last=not (cut or conn.shared or conn.state is _State.HANDED))
        if cut:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        conn.sock.close()
        self._maybe_empty()

    def _spawn(self, write: Callable[[], Awaitable[None]]) -> None:
        """A rare write that must wait: its failure shows up as the slot's EOF."""

        async def run() -> None:
            try:
                await write()
            except Exception as exc:
                self.ctx.log.warning("handoff write failed", error=repr(exc))

        self.spawn(run)
