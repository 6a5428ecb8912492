"""The front loop's handle on one slot: a prefork child, or one thread of a worker child."""

from __future__ import annotations

import array
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import structlog

from asyncmpm.dispatch.slot_state import (
    HELD,
    SLOT_TRANSITIONS,
    UNUSABLE,
    SlotEvent,
    SlotPhase,
)
from asyncmpm.ipc.frames import FrameDecoder, FrameType, encode
from asyncmpm.lifecycle import IllegalTransition
from asyncmpm.streams import AsyncioStream, ByteStream

if TYPE_CHECKING:
    from asyncmpm.supervisor.children import Child

__all__ = ["SlotBroken", "SlotClosed", "SlotHandle"]

_RECV = 256 * 1024
_RECV_NOW = 64 * 1024  # below 128 KiB: CPython would malloc a larger buffer via mmap
_HANGUP = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
_log = structlog.get_logger("asyncmpm.dispatch")


class SlotClosed(Exception):
    """The slot's process is gone (crashed, killed, or exited)."""


class SlotBroken(SlotClosed):
    """The child sent what is not the slot protocol (a frame the decoder refuses, a malformed
    response head). Its channel cannot be resynchronised: the slot is lost as if the child had
    died, and the child, still alive but untrusted, is killed (see ``Supervisor.slot_lost``).
    """


class SlotHandle:
    """Frames to and from one slot over its own socketpair.

    Every slot has its own channel, so backpressure is per slot (a slow client stalls only its
    own child thread) and a prefork child and a worker thread look the same from here.
    Its lifecycle is :mod:`asyncmpm.dispatch.slot_state`: every change goes through
    :meth:`fire`.
    """

    __slots__ = (
        "_decoder", "_fd", "_frames", "_hangup", "_raw", "_whole_writes", "child", "cpu_times",
        "index", "on_illegal", "phase", "record", "seen", "stream", "thread",
    )

    def __init__(
        self,
        child: Child,
        thread: int,
        stream: ByteStream,
        fd: int,
        on_illegal: Callable[[SlotHandle], None] | None = None,
    ) -> None:
        self.child = child
        self.thread = thread
        self.index = child.index * child.threads + thread  # flat scoreboard position
        self.record = child.index * child.thread_limit + thread  # in the shared slot records
        self.seen = (0, 0)  # its record's (requests done, bytes) already counted by the front
        self.stream = stream
        self._decoder = FrameDecoder()
        self._frames: deque[tuple[int, bytes]] = deque()
        self.phase = SlotPhase.BOOTING
        # Called after an illegal transition (the slot is BROKEN by then): its child is
        # replaced, as when it breaks the protocol.
        self.on_illegal = on_illegal
        self._fd = fd
        self._raw: socket.socket | None = None  # for sendmsg: created on the first handoff
        self._hangup: Callable[[int, bytes], None] | None = None  # see watch()
        self._whole_writes = isinstance(stream, AsyncioStream)
        # The child's CPU times as its last END frame reported them (for mod_status).
        self.cpu_times: tuple[float, float, float, float] | None = None

    def fire(self, event: SlotEvent) -> SlotPhase:
        """Apply ``event`` (see the table in :mod:`~asyncmpm.dispatch.slot_state`); the new
        phase. An illegal one is our bug: it is logged, and the slot is given up as BROKEN
        (never handed out again, its child replaced); the caller carries on."""
        try:
            new = SLOT_TRANSITIONS[self.phase][event]  # slot_transition, inlined: per request
        except KeyError:
            return self._refuse(event)
        self.phase = new
        return new

    def _refuse(self, event: SlotEvent) -> SlotPhase:
        refused = IllegalTransition("slot", self.phase, event)
        _log.error(f"internal error: {refused}; giving up the slot",
                   slot=self.child.index, thread=self.thread, pid=self.child.pid,
                   phase=self.phase.name, slot_event=event.name)
        self.phase = SlotPhase.BROKEN
        if self.on_illegal is not None:
            self.on_illegal(self)
        return self.phase

    @property
    def closed(self) -> bool:
        """Never to carry a frame again (hung up, hung, abandoned, broken, closed)."""
        return self.phase in UNUSABLE

    @property
    def held(self) -> bool:
        """A request holds it (and has yet to let go of it)."""
        return self.phase in HELD

    @property
    def broken(self) -> bool:
        """Its child broke the slot protocol: kill the child, do not just forget the slot."""
        return self.phase is SlotPhase.BROKEN

    def peer_alive(self) -> bool:
        """Cheap check that the child end is still open (a dead child hangs up at once, before
        the zygote reports its exit), so a request is never sent to a corpse."""
        if self.phase in UNUSABLE:
            return False
        poller = select.poll()
        poller.register(self._fd, _HANGUP)
        if poller.poll(0):
            self.fire(SlotEvent.HANGUP)
            return False
        return True

    async def send(self, data: bytes) -> None:
        """Write frames, never half of one: an asyncio transport takes the whole buffer at
        once (a cancel can only end the wait for drain after it); other streams are shielded.
        """
        try:
            if self._whole_writes:
                await self.stream.send(data)
            else:
                with anyio.CancelScope(shield=True):
                    await self.stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self.fire(SlotEvent.HANGUP)
            raise SlotClosed(str(exc)) from exc

    def send_handoff(self, frame: bytes, fd: int) -> int:
        """Send a HANDOFF frame with a client socket attached (SCM_RIGHTS) without waiting;
        returns the bytes the kernel took (0: none, the descriptor did not go either).

        asyncio's transports cannot carry descriptors, so the frame goes out through the raw
        channel socket. The slot is idle, so nothing of ours is queued ahead of it; the rest
        of a frame the kernel did not take must follow through :meth:`send` (the descriptor
        rides on the first byte)."""
        sock = self._raw_channel()
        try:
            return sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                           array.array("i", [fd]).tobytes())])
        except BlockingIOError:
            return 0
        except OSError as exc:
            self.fire(SlotEvent.HANGUP)
            raise SlotClosed(str(exc)) from exc

    def _raw_channel(self) -> socket.socket:
        sock = self._raw
        if sock is None:
            # A duplicate of the channel's descriptor (same socket), kept for the slot's life:
            # wrapping the stream's own one per call would cost a getsockname each time.
            sock = self._raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0,
                                             os.dup(self._fd))
        return sock

    def channel_fd(self) -> int:
        """The descriptor :meth:`read_frames` reads (for a front that polls it itself)."""
        return self._raw_channel().fileno()

    def read_frames(self) -> list[tuple[int, bytes]]:
        """The frames the channel holds now, read without waiting, kind 0 when it hung up
        (for a front that polls the channel itself: trio streams cannot call back, see
        :meth:`watch`). Only while nobody awaits :meth:`recv`."""
        try:
            data = self._raw_channel().recv(_RECV_NOW, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            self.fire(SlotEvent.HANGUP)
            return [(0, b"")]
        try:
            return self._decoder.feed(data)
        except ValueError as exc:
            self.broke(str(exc))
            return [(0, b"")]

    async def hand_off(self, payload: bytes, fd: int) -> None:
        """Send a HANDOFF frame with the client socket, waiting for room if need be."""
        frame = encode(FrameType.HANDOFF, payload)
        while True:
            sent = self.send_handoff(frame, fd)
            if sent:
                break
            await anyio.wait_writable(self._fd)
        if sent < len(frame):
            await self.send(frame[sent:])

    async def recv(self) -> tuple[int, bytes]:
        frames = self._frames
        while not frames:
            try:
                data = await self.stream.receive(_RECV)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                self.fire(SlotEvent.HANGUP)
                raise SlotClosed("the child closed its channel") from exc
            if not data:
                self.fire(SlotEvent.HANGUP)
                raise SlotClosed("the child closed its channel")
            try:
                frames.extend(self._decoder.feed(data))
            except ValueError as exc:
                raise self.broke(str(exc)) from exc
        return frames.popleft()

    def broke(self, why: str) -> SlotBroken:
        """Mark the slot unusable because its child broke the protocol; returns the error
        to raise (the front's SlotClosed path answers 502 and calls ``slot_lost``)."""
        self.fire(SlotEvent.BREAK)
        return SlotBroken(f"the child broke the slot protocol: {why}")

    def watch(self, callback: Callable[[int, bytes], None] | None) -> bool:
        """Deliver this slot's frames to ``callback`` as they arrive (kind 0 when the channel
        hangs up), instead of to :meth:`recv`; ``None`` stops that. False if the channel
        cannot call back (not an asyncio stream): the caller then awaits :meth:`recv`."""
        stream = self.stream
        if not isinstance(stream, AsyncioStream):
            # The caller polls the channel itself (read_frames); the callback only hears of
            # aclose(), while the descriptor is still open (kind 0).
            self._hangup = callback
            return False
        if callback is None:
            stream.on_data = None
            return True

        def on_data(data: bytes) -> None:
            if not data:
                self.fire(SlotEvent.HANGUP)
                callback(0, b"")
                return
            try:
                frames = self._decoder.feed(data)
            except ValueError as exc:
                self.broke(str(exc))
                callback(0, b"")
                return
            for kind, payload in frames:
                callback(kind, payload)

        frames, self._frames = list(self._frames), deque()
        stream.on_data = on_data
        for kind, payload in frames:
            callback(kind, payload)
        pending = stream.take_buffered()
        if pending:
            on_data(pending)
        elif self.closed or stream.at_eof:
            callback(0, b"")
        return True

    def has_buffered(self) -> bool:
        """Frames already received: the caller can coalesce its client writes."""
        return bool(self._frames)

    async def aclose(self) -> None:
        self.fire(SlotEvent.HANGUP)
        hangup, self._hangup = self._hangup, None
        if hangup is not None:
            hangup(0, b"")
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        await self.stream.aclose()

    def __repr__(self) -> str:
        return f"<slot {self.child.index}.{self.thread} pid={self.child.pid}>"
