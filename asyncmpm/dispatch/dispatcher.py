"""Hand each request a free slot; when none is free, queue it in FIFO order, never in a child.

Idle slots are kept LIFO: the most recently used slot serves next, so spare children really
stay idle and the spare-server policy can retire them (and warm caches stay warm).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from asyncmpm.dispatch.slot import SlotHandle
from asyncmpm.dispatch.slot_state import SlotEvent, SlotPhase

__all__ = ["Dispatcher", "QueueFull", "QueueTimeout"]

# Per request: an enum member read costs a descriptor call on Python 3.11, a global does not.
_ACQUIRE, _DONE, _IDLE = SlotEvent.ACQUIRE, SlotEvent.DONE, SlotPhase.IDLE


class QueueFull(Exception):
    """More requests are waiting than MaxQueuedRequests allows (answered with 503)."""


class QueueTimeout(Exception):
    """No slot became free within Timeout (answered with 503)."""


@dataclass(slots=True, eq=False)
class _Waiter:
    event: anyio.Event | None = field(default_factory=anyio.Event)
    slot: SlotHandle | None = None
    gone: bool = False
    # A callback waiter (the callback-driven front): called with the slot instead of an event.
    callback: Callable[[SlotHandle], None] | None = None

    def cancel(self) -> None:
        """A callback waiter gives up (its client left or Timeout passed)."""
        self.gone = True


class Dispatcher:
    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        self._idle: list[SlotHandle] = []
        self._waiters: deque[_Waiter] = deque()
        self._queued = 0
        self.total_wait = 0.0

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def idle(self) -> int:
        return len(self._idle)

    def try_acquire(self) -> SlotHandle | None:
        """A free slot now, or None (then :meth:`wait_for` queues the caller)."""
        while self._idle and not self._queued:
            idle = self._idle.pop()
            if idle.peer_alive():
                idle.fire(_ACQUIRE)
                return idle
        return None

    def wait_for(self, callback: Callable[[SlotHandle], None]) -> _Waiter:
        """Queue a callback for the next free slot (FIFO with the waiting tasks); raises
        QueueFull. The caller keeps the waiter to :meth:`abandon` it."""
        if self._queued >= self.max_queued:
            raise QueueFull
        waiter = _Waiter(event=None, callback=callback)
        self._waiters.append(waiter)
        self._queued += 1
        return waiter

    def abandon(self, waiter: _Waiter) -> None:
        if not waiter.gone and waiter.slot is None:
            waiter.gone = True
            self._queued -= 1

    async def acquire(self, timeout: float) -> SlotHandle:
        while self._idle and not self._queued:
            idle = self._idle.pop()
            if idle.peer_alive():
                idle.fire(_ACQUIRE)
                return idle
        if self._queued >= self.max_queued:
            raise QueueFull
        waiter = _Waiter()
        self._waiters.append(waiter)
        self._queued += 1
        assert waiter.event is not None
        try:
            with anyio.move_on_after(timeout):
                await waiter.event.wait()
        except BaseException:
            if waiter.slot is not None:
                self.release(waiter.slot)  # handed over as we were cancelled: pass it on
            else:
                waiter.gone = True
                self._queued -= 1
            raise
        slot = waiter.slot
        if slot is None:
            waiter.gone = True
            self._queued -= 1
            raise QueueTimeout
        return slot

    def release(self, slot: SlotHandle) -> None:
        """A request lets go of its slot, unused or with its work done: it is offered again
        (unless it was lost meanwhile, or its child takes no more work)."""
        if slot.fire(_DONE) is _IDLE:
            self.offer(slot)

    def offer(self, slot: SlotHandle) -> None:
        """Make an IDLE slot available: to the longest-waiting request, else to the idle
        stack."""
        if not slot.child.accepting or not slot.peer_alive():
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if waiter.gone:
                continue
            waiter.slot = slot
            slot.fire(_ACQUIRE)
            self._queued -= 1
            if waiter.callback is not None:
                waiter.callback(slot)
            else:
                assert waiter.event is not None
                waiter.event.set()
            return
        self._idle.append(slot)

    def discard_child(self, child: object) -> list[SlotHandle]:
        """Take a child's idle slots out of rotation (it is retiring or gone)."""
        taken = [s for s in self._idle if s.child is child]
        if taken:
            self._idle = [s for s in self._idle if s.child is not child]
        return taken

    def idle_slots(self) -> list[SlotHandle]:
        return list(self._idle)
