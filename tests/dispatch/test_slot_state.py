"""The slot lifecycle table, sans-IO: every legal transition, every illegal one refused, and
random event sequences that never leave the enum or hand a dead slot to a request; then the
slot handle and the dispatcher on a real socketpair, where an illegal event is logged and
gives the slot up instead of corrupting it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from asyncmpm.dispatch.dispatcher import Dispatcher
from asyncmpm.dispatch.slot import SlotHandle
from asyncmpm.dispatch.slot_state import (
    HELD,
    SLOT_TRANSITIONS,
    UNUSABLE,
    SlotEvent,
    SlotPhase,
    slot_transition,
)
from asyncmpm.lifecycle import IllegalTransition
from asyncmpm.supervisor.child_state import ChildEvent
from asyncmpm.supervisor.children import Child

P, E = SlotPhase, SlotEvent

LEGAL = [(phase, event, new) for phase, row in SLOT_TRANSITIONS.items()
         for event, new in row.items()]
ILLEGAL = [(phase, event) for phase in SlotPhase for event in SlotEvent
           if event not in SLOT_TRANSITIONS[phase]]


def test_table_covers_every_phase() -> None:
    assert set(SLOT_TRANSITIONS) == set(SlotPhase)
    assert LEGAL
    assert ILLEGAL


@pytest.mark.parametrize(("phase", "event", "new"), LEGAL,
                         ids=[f"{p.name}-{e.name}" for p, e, _ in LEGAL])
def test_legal_transition(phase: SlotPhase, event: SlotEvent, new: SlotPhase) -> None:
    assert slot_transition(phase, event) is new


@pytest.mark.parametrize(("phase", "event"), ILLEGAL,
                         ids=[f"{p.name}-{e.name}" for p, e in ILLEGAL])
def test_illegal_transition_refused(phase: SlotPhase, event: SlotEvent) -> None:
    with pytest.raises(IllegalTransition) as info:
        slot_transition(phase, event)
    assert (info.value.state, info.value.event) == (phase, event)
    assert f"can't handle event {event.name} in state {phase.name}" in str(info.value)


def test_the_lifecycle_as_the_front_drives_it() -> None:
    """A request, a request the front gave up, a hang-up mid-request, a protocol break."""
    phase = P.BOOTING
    for event, expected in [(E.READY, P.IDLE), (E.ACQUIRE, P.BUSY), (E.DONE, P.IDLE),
                            (E.ACQUIRE, P.BUSY), (E.HANGUP, P.LOST), (E.HANGUP, P.LOST),
                            (E.DONE, P.CLOSED), (E.HANGUP, P.CLOSED)]:
        phase = slot_transition(phase, event)
        assert phase is expected
    assert slot_transition(slot_transition(P.BUSY, E.BREAK), E.DISCARD) is P.CLOSED
    assert slot_transition(P.BUSY, E.DOOM) is P.LOST
    assert slot_transition(slot_transition(P.IDLE, E.STOP), E.HANGUP) is P.CLOSED


def test_only_an_idle_slot_is_handed_out() -> None:
    assert [p for p, e, _ in LEGAL if e is E.ACQUIRE] == [P.IDLE]


def test_no_way_back_from_unusable() -> None:
    for phase in UNUSABLE:
        assert set(SLOT_TRANSITIONS[phase].values()) <= UNUSABLE


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list(SlotEvent)), max_size=40))
def test_random_event_sequences(events: list[SlotEvent]) -> None:
    phase = P.BOOTING
    dead = False  # LOST, BROKEN or CLOSED once: never usable again
    for event in events:
        try:
            new = slot_transition(phase, event)
        except IllegalTransition:
            assert event not in SLOT_TRANSITIONS[phase]
            continue  # refused: the phase is unchanged
        assert isinstance(new, SlotPhase)
        if event is E.ACQUIRE:
            assert phase is P.IDLE
            assert not dead
            assert new in HELD
        if new in UNUSABLE:
            dead = True
        if dead:
            assert new in UNUSABLE
        if phase in HELD and new not in HELD:
            assert event in (E.DONE, E.DISCARD)  # only the request lets go of its slot
        phase = new


# ---------------------------------------------------------------------- on a real channel

def phase(slot: SlotHandle) -> SlotPhase:
    """The slot's phase now (a plain read would stay narrowed for mypy across calls)."""
    return slot.phase

@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def _ready_slot(ours: socket.socket, lost: list[SlotHandle] | None = None) -> SlotHandle:
    child = Child(index=0, generation=0, threads=1, thread_limit=1, pid=0)
    child.fire(ChildEvent.FORKED)
    child.fire(ChildEvent.READY)
    slot = SlotHandle(child, 0, stream=None, fd=ours.fileno(),  # type: ignore[arg-type]
                      on_illegal=None if lost is None else lost.append)
    slot.fire(E.READY)
    return slot


def test_double_release_gives_the_slot_up(pair: tuple[socket.socket, socket.socket]) -> None:
    lost: list[SlotHandle] = []
    slot = _ready_slot(pair[0], lost)
    dispatcher = Dispatcher(max_queued=10)
    dispatcher.offer(slot)
    assert dispatcher.try_acquire() is slot
    assert phase(slot) is P.BUSY
    assert slot.held
    dispatcher.release(slot)
    assert phase(slot) is P.IDLE
    assert dispatcher.try_acquire() is slot
    dispatcher.release(slot)
    with capture_logs() as logs:
        dispatcher.release(slot)  # a second release of the same request: our bug
    assert phase(slot) is P.BROKEN
    assert slot.closed
    assert slot.broken
    assert lost == [slot]  # the owner replaces its child
    [entry] = [e for e in logs if e["log_level"] == "error"]
    assert "internal error: slot: can't handle event DONE in state IDLE" in entry["event"]
    assert (entry["phase"], entry["slot_event"]) == ("IDLE", "DONE")
    # It was in the idle stack when it broke: it is skipped, never handed to a request.
    assert dispatcher.try_acquire() is None


def test_hangup_seen_before_a_request_is_handed_the_slot(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    slot = _ready_slot(pair[0])
    dispatcher = Dispatcher(max_queued=10)
    dispatcher.offer(slot)
    pair[1].close()
    assert dispatcher.try_acquire() is None
    assert phase(slot) is P.CLOSED


def test_a_broken_slot_is_never_handed_to_a_waiting_request(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    slot = _ready_slot(pair[0])
    dispatcher = Dispatcher(max_queued=10)
    got: list[SlotHandle] = []
    dispatcher.wait_for(got.append)
    dispatcher.offer(slot)
    assert got == [slot]
    error = slot.broke("garbage")
    assert "garbage" in str(error)
    assert phase(slot) is P.BROKEN
    dispatcher.wait_for(got.append)
    dispatcher.release(slot)  # the request lets go of it: closed, not offered
    assert phase(slot) is P.CLOSED
    assert got == [slot]
    assert dispatcher.queued == 1
