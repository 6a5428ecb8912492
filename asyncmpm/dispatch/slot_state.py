"""The lifecycle of one slot (a prefork child, or one thread of a worker child), as a table.

Theory of operation
-------------------
A slot is BOOTING until its child says READY; then it is IDLE, and the dispatcher may hand it
to one request (BUSY: a proxied request or a handed-off connection). When the request is over
it is IDLE again (DONE), or given up for good (DISCARD: the front could not tell what state
the child is in). An IDLE slot of a retiring child is told to STOP (STOPPING) and waits for its
child to exit.

Three things end a slot. Its channel hangs up, or is closed here (HANGUP). Its request hangs
past Timeout or is abandoned mid-flight (DOOM: the child is replaced). Its child sends what is
not the slot protocol (BREAK: the child is killed). A slot held by a request when that
happens is LOST or BROKEN until the request lets go of it; then, as every slot that is no
longer held, it is CLOSED for good. Hang-ups are seen more than once (a closed stream raises
again, the exit report closes every channel), so HANGUP is legal everywhere and changes
nothing once the slot is unusable.

What the table guarantees: only an IDLE slot is handed to a request (ACQUIRE), so a slot that
is LOST, BROKEN or CLOSED never serves again; and no state leads back from those three.

This is not the scoreboard's ``SlotState`` (the mod_status letter, which says what the slot's
request is doing); this says whether the front may use the slot at all.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from asyncmpm.lifecycle import advance

__all__ = ["HELD", "SLOT_TRANSITIONS", "UNUSABLE", "SlotEvent", "SlotPhase", "slot_transition"]


class SlotPhase(Enum):
    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    BOOTING = "booting"  # channel open, READY not received yet
    IDLE = "idle"  # ready; held by no request (in the idle stack if its child takes work)
    BUSY = "busy"  # held by one request
    STOPPING = "stopping"  # STOP sent (its child retires): it ends when the child exits
    LOST = "lost"  # held by a request, never to be used again (hung up, hung, abandoned)
    BROKEN = "broken"  # its child broke the slot protocol: the child is killed
    CLOSED = "closed"  # unusable and held by nothing: terminal


class SlotEvent(Enum):
    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    READY = "ready"  # the child said READY
    ACQUIRE = "acquire"  # the dispatcher hands it to a request
    DONE = "done"  # the request is over; the slot may serve again
    DISCARD = "discard"  # the request is over; the slot may not serve again
    STOP = "stop"  # STOP sent: its child retires
    DOOM = "doom"  # its request hung or was abandoned: the child is replaced
    HANGUP = "hangup"  # its channel hung up, or was closed here
    BREAK = "break"  # the child sent what is not the slot protocol


_P, _E = SlotPhase, SlotEvent

SLOT_TRANSITIONS: Final[dict[SlotPhase, dict[SlotEvent, SlotPhase]]] = {
    _P.BOOTING: {_E.READY: _P.IDLE, _E.HANGUP: _P.CLOSED, _E.BREAK: _P.BROKEN},
    _P.IDLE: {_E.ACQUIRE: _P.BUSY, _E.STOP: _P.STOPPING, _E.HANGUP: _P.CLOSED},
    _P.BUSY: {_E.DONE: _P.IDLE, _E.DISCARD: _P.CLOSED, _E.DOOM: _P.LOST,
              _E.HANGUP: _P.LOST, _E.BREAK: _P.BROKEN},
    _P.STOPPING: {_E.HANGUP: _P.CLOSED},
    _P.LOST: {_E.DONE: _P.CLOSED, _E.DISCARD: _P.CLOSED, _E.DOOM: _P.LOST,
              _E.HANGUP: _P.LOST, _E.BREAK: _P.BROKEN},
    _P.BROKEN: {_E.DONE: _P.CLOSED, _E.DISCARD: _P.CLOSED, _E.DOOM: _P.BROKEN,
                _E.HANGUP: _P.BROKEN, _E.BREAK: _P.BROKEN},
    _P.CLOSED: {_E.HANGUP: _P.CLOSED},
}

# Held by a request (the request still has to let go of it).
HELD: Final = frozenset({SlotPhase.BUSY, SlotPhase.LOST, SlotPhase.BROKEN})
# Never to carry a frame again (the old ``closed`` flag).
UNUSABLE: Final = frozenset({SlotPhase.LOST, SlotPhase.BROKEN, SlotPhase.CLOSED})


def slot_transition(phase: SlotPhase, event: SlotEvent) -> SlotPhase:
    """The phase ``event`` leads to; raises ``IllegalTransition`` if the table refuses it."""
    return advance("slot", SLOT_TRANSITIONS, phase, event)
