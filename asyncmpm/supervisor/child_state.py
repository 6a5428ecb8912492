"""The lifecycles of a child process and of the zygote, as tables.

Theory of operation
-------------------
A child is STARTING from the moment the supervisor asks the zygote to fork it, BOOTING once
its pid is known (FORKED), and SERVING when its first slot says READY: only then are its slots
handed requests. It leaves SERVING one way or another, and never comes back, except from LOST:

- RETIRE (idle spare server, MaxConnectionsPerChild, graceful restart, shutdown): RETIRING.
  It takes no new work, its idle slots are told to STOP, and it exits by itself once its
  in-flight requests are done (httpd's ``G``).
- DOOM (a request hung past Timeout or was abandoned, a slot broke the protocol, an illegal
  slot transition): DOOMED. No new work; it is SIGKILLed once its in-flight requests are done.
  A doomed child can still be retired (shutdown, restart: its handed-off connections are told
  to wind down), and a retiring one doomed: both lead to DOOMED_RETIRING, where the kill wins.
- LOSE (one of its slots hung up mid-request): LOST, presumed dying, given no new work until
  its exit report arrives. A thread of a worker child that boots later still takes it back to
  SERVING (READY), as it always did.
- EXIT (reaped, whatever the phase): EXITED, for good. Reports that trail the exit (a slot the
  front finds dead, a doom) change nothing then.

The zygote is RUNNING until its control socket hangs up (GONE: it cannot fork any more) or it
is asked to exit (CLOSING); both together are CLOSED. A hang-up of a CLOSING zygote is no
surprise; one of a RUNNING zygote is (a new one is started).
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from asyncmpm.lifecycle import advance

__all__ = ["CHILD_TRANSITIONS", "ZYGOTE_TRANSITIONS", "ChildEvent", "ChildPhase", "ZygoteEvent",
           "ZygotePhase", "child_transition", "zygote_transition"]


class ChildPhase(Enum):
    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    STARTING = "starting"  # the zygote was asked to fork it; no pid yet
    BOOTING = "booting"  # forked; no slot has said READY yet
    SERVING = "serving"  # its ready slots take requests
    LOST = "lost"  # a slot hung up mid-request: presumed dying, no new work
    RETIRING = "retiring"  # graceful: no new work, exits once its requests are done
    DOOMED = "doomed"  # no new work, SIGKILLed once its requests are done
    DOOMED_RETIRING = "doomed+retiring"  # both (the kill wins)
    EXITED = "exited"  # reaped


class ChildEvent(Enum):
    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    FORKED = "forked"  # the zygote reported its pid
    READY = "ready"  # one of its slots said READY
    LOSE = "lose"  # one of its slots hung up mid-request
    RETIRE = "retire"  # stop giving it work; it exits by itself
    DOOM = "doom"  # stop giving it work; kill it once its requests are done
    EXIT = "exit"  # reaped


_P, _E = ChildPhase, ChildEvent

CHILD_TRANSITIONS: Final[dict[ChildPhase, dict[ChildEvent, ChildPhase]]] = {
    _P.STARTING: {_E.FORKED: _P.BOOTING, _E.RETIRE: _P.RETIRING},
    _P.BOOTING: {_E.READY: _P.SERVING, _E.RETIRE: _P.RETIRING, _E.DOOM: _P.DOOMED,
                 _E.EXIT: _P.EXITED},
    _P.SERVING: {_E.READY: _P.SERVING, _E.LOSE: _P.LOST, _E.RETIRE: _P.RETIRING,
                 _E.DOOM: _P.DOOMED, _E.EXIT: _P.EXITED},
    _P.LOST: {_E.READY: _P.SERVING, _E.LOSE: _P.LOST, _E.RETIRE: _P.RETIRING,
              _E.DOOM: _P.DOOMED, _E.EXIT: _P.EXITED},
    _P.RETIRING: {_E.FORKED: _P.RETIRING, _E.READY: _P.RETIRING, _E.LOSE: _P.RETIRING,
                  _E.DOOM: _P.DOOMED_RETIRING, _E.EXIT: _P.EXITED},
    _P.DOOMED: {_E.READY: _P.DOOMED, _E.LOSE: _P.DOOMED, _E.RETIRE: _P.DOOMED_RETIRING,
                _E.DOOM: _P.DOOMED, _E.EXIT: _P.EXITED},
    _P.DOOMED_RETIRING: {_E.READY: _P.DOOMED_RETIRING, _E.LOSE: _P.DOOMED_RETIRING,
                         _E.DOOM: _P.DOOMED_RETIRING, _E.EXIT: _P.EXITED},
    _P.EXITED: {_E.LOSE: _P.EXITED, _E.DOOM: _P.EXITED},
}

RETIRING_PHASES: Final = frozenset({ChildPhase.RETIRING, ChildPhase.DOOMED_RETIRING})
DOOMED_PHASES: Final = frozenset({ChildPhase.DOOMED, ChildPhase.DOOMED_RETIRING})


def child_transition(phase: ChildPhase, event: ChildEvent) -> ChildPhase:
    """The phase ``event`` leads to; raises ``IllegalTransition`` if the table refuses it."""
    return advance("child", CHILD_TRANSITIONS, phase, event)


class ZygotePhase(Enum):
    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    RUNNING = "running"  # started (or starting): it forks children
    CLOSING = "closing"  # asked to exit: its hang-up will be no surprise
    GONE = "gone"  # its control socket hung up unasked: it cannot fork any more
    CLOSED = "closed"  # asked to exit and hung up


class ZygoteEvent(Enum):
    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    CLOSE = "close"  # asked to stop its children and exit
    HANGUP = "hangup"  # its control socket hung up (or was closed here)


ZYGOTE_TRANSITIONS: Final[dict[ZygotePhase, dict[ZygoteEvent, ZygotePhase]]] = {
    ZygotePhase.RUNNING: {ZygoteEvent.CLOSE: ZygotePhase.CLOSING,
                          ZygoteEvent.HANGUP: ZygotePhase.GONE},
    ZygotePhase.CLOSING: {ZygoteEvent.CLOSE: ZygotePhase.CLOSING,
                          ZygoteEvent.HANGUP: ZygotePhase.CLOSED},
    ZygotePhase.GONE: {ZygoteEvent.CLOSE: ZygotePhase.CLOSED,
                       ZygoteEvent.HANGUP: ZygotePhase.GONE},
    ZygotePhase.CLOSED: {ZygoteEvent.CLOSE: ZygotePhase.CLOSED,
                         ZygoteEvent.HANGUP: ZygotePhase.CLOSED},
}


def zygote_transition(phase: ZygotePhase, event: ZygoteEvent) -> ZygotePhase:
    """The phase ``event`` leads to (every pair is legal: hang-ups and closes race)."""
    return advance("zygote", ZYGOTE_TRANSITIONS, phase, event)
