"""The child and zygote lifecycle tables, sans-IO: every legal transition, every illegal one
refused, random event sequences; then what an illegal event does to a child, and to the
child of a slot that refuses one (it is replaced, the supervisor carries on)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from asyncmpm.config.model import Config
from asyncmpm.dispatch.dispatcher import Dispatcher
from asyncmpm.dispatch.slot import SlotHandle
from asyncmpm.dispatch.slot_state import SLOT_TRANSITIONS, SlotEvent, SlotPhase
from asyncmpm.lifecycle import IllegalTransition, render_table
from asyncmpm.supervisor.child_state import (
    CHILD_TRANSITIONS,
    DOOMED_PHASES,
    RETIRING_PHASES,
    ZYGOTE_TRANSITIONS,
    ChildEvent,
    ChildPhase,
    ZygoteEvent,
    ZygotePhase,
    child_transition,
    zygote_transition,
)
from asyncmpm.supervisor.children import Child
from asyncmpm.supervisor.scoreboard import Scoreboard
from asyncmpm.supervisor.supervisor import Supervisor

P, E = ChildPhase, ChildEvent

LEGAL = [(phase, event, new) for phase, row in CHILD_TRANSITIONS.items()
         for event, new in row.items()]
ILLEGAL = [(phase, event) for phase in ChildPhase for event in ChildEvent
           if event not in CHILD_TRANSITIONS[phase]]
GONE_FOR_GOOD = RETIRING_PHASES | DOOMED_PHASES | {P.EXITED}


def test_tables_cover_every_phase() -> None:
    assert set(CHILD_TRANSITIONS) == set(ChildPhase)
    assert set(ZYGOTE_TRANSITIONS) == set(ZygotePhase)


@pytest.mark.parametrize(("phase", "event", "new"), LEGAL,
                         ids=[f"{p.name}-{e.name}" for p, e, _ in LEGAL])
def test_legal_transition(phase: ChildPhase, event: ChildEvent, new: ChildPhase) -> None:
    assert child_transition(phase, event) is new


@pytest.mark.parametrize(("phase", "event"), ILLEGAL,
                         ids=[f"{p.name}-{e.name}" for p, e in ILLEGAL])
def test_illegal_transition_refused(phase: ChildPhase, event: ChildEvent) -> None:
    with pytest.raises(IllegalTransition) as info:
        child_transition(phase, event)
    assert (info.value.state, info.value.event) == (phase, event)
    assert info.value.lifecycle == "child"


def test_the_lifecycles_the_supervisor_drives() -> None:
    def run(*events: ChildEvent) -> ChildPhase:
        phase = P.STARTING
        for event in events:
            phase = child_transition(phase, event)
        return phase

    assert run(E.FORKED, E.READY, E.READY) is P.SERVING
    assert run(E.FORKED, E.READY, E.RETIRE, E.READY, E.EXIT) is P.EXITED
    assert run(E.RETIRE, E.FORKED, E.READY) is P.RETIRING  # retired before it was forked
    assert run(E.FORKED, E.READY, E.DOOM, E.RETIRE) is P.DOOMED_RETIRING  # hung, then stop
    assert run(E.FORKED, E.READY, E.RETIRE, E.DOOM) is P.DOOMED_RETIRING
    assert run(E.FORKED, E.READY, E.LOSE, E.READY) is P.SERVING  # a later thread's READY
    assert run(E.FORKED, E.READY, E.EXIT, E.LOSE, E.DOOM) is P.EXITED  # reports that trail


def test_zygote_table_is_total() -> None:
    for phase in ZygotePhase:
        for event in ZygoteEvent:
            assert isinstance(zygote_transition(phase, event), ZygotePhase)
    assert zygote_transition(ZygotePhase.RUNNING, ZygoteEvent.HANGUP) is ZygotePhase.GONE
    assert zygote_transition(ZygotePhase.CLOSING, ZygoteEvent.HANGUP) is ZygotePhase.CLOSED
    assert zygote_transition(ZygotePhase.GONE, ZygoteEvent.CLOSE) is ZygotePhase.CLOSED


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list(ChildEvent)), max_size=40))
def test_random_event_sequences(events: list[ChildEvent]) -> None:
    phase = P.STARTING
    for event in events:
        try:
            new = child_transition(phase, event)
        except IllegalTransition:
            assert event not in CHILD_TRANSITIONS[phase]
            continue
        assert isinstance(new, ChildPhase)
        if phase is P.EXITED:
            assert new is P.EXITED  # reaped is for good
        if phase in GONE_FOR_GOOD:
            assert new in GONE_FOR_GOOD  # told to go, it never takes work again
        if phase in DOOMED_PHASES:
            assert new in DOOMED_PHASES or new is P.EXITED  # the kill is never called off
        if event is E.RETIRE:
            assert phase not in RETIRING_PHASES
            assert phase is not P.EXITED
        if new is P.SERVING:
            assert event is E.READY
        phase = new


def test_illegal_child_event_dooms_the_child() -> None:
    child = Child(index=2, generation=0, threads=1, pid=4242)  # no pidfd: the kill is a no-op
    child.fire(E.FORKED)
    child.fire(E.READY)
    child.fire(E.RETIRE)
    with capture_logs() as logs:
        assert child.fire(E.RETIRE) is P.DOOMED  # retired twice: our bug
    assert child.doomed
    assert not child.accepting
    [entry] = logs
    assert "child: can't handle event RETIRE in state RETIRING" in entry["event"]
    assert entry["log_level"] == "error"
    assert (entry["phase"], entry["child_event"], entry["pid"]) == ("RETIRING", "RETIRE", 4242)
    assert child.fire(E.EXIT) is P.EXITED
    with capture_logs():
        assert child.fire(E.READY) is P.EXITED  # refused, and an exited child stays exited


# ---------------------------------------------------------------------- in the supervisor

def phase(slot: SlotHandle) -> SlotPhase:
    """The slot's phase now (a plain read would stay narrowed for mypy across calls)."""
    return slot.phase

@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_a_slot_done_twice_replaces_its_child(pair: tuple[socket.socket, socket.socket]) -> None:
    config = Config()
    limits, _ = config.limits()
    scoreboard = Scoreboard(config.mpm.value, limits.server_limit, limits.threads_per_child)
    dispatcher = Dispatcher(config.max_queued_requests)
    sup = Supervisor(config, limits, scoreboard, dispatcher, None)
    child = Child(index=0, generation=0, threads=1, thread_limit=limits.thread_limit, pid=77)
    sup.children[0] = child
    slot = SlotHandle(child, 0, stream=None, fd=pair[0].fileno(),  # type: ignore[arg-type]
                      on_illegal=sup.slot_corrupted)
    child.slots.append(slot)
    child.fire(E.FORKED)
    slot.fire(SlotEvent.READY)
    child.fire(E.READY)
    dispatcher.offer(slot)
    assert dispatcher.try_acquire() is slot
    child.busy += 1  # as FrontContext.slot_started counts it
    sup.slot_done(slot, reusable=True)
    assert phase(slot) is SlotPhase.IDLE
    assert dispatcher.idle == 1
    with capture_logs() as logs:
        sup.slot_done(slot, reusable=True)  # the same request, finished twice: our bug
    assert phase(slot) is SlotPhase.BROKEN
    assert child.phase is P.DOOMED
    assert child.why == "illegal slot transition"
    assert scoreboard.processes[0].quiescing
    assert dispatcher.idle == 0  # out of rotation, never handed to a request
    assert any("slot: can't handle event DONE in state IDLE" in e["event"] for e in logs)


def test_the_design_doc_shows_the_tables_the_code_applies() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs/design/lifecycles.md").read_text()
    for table, events in [(SLOT_TRANSITIONS, SlotEvent), (CHILD_TRANSITIONS, ChildEvent),
                          (ZYGOTE_TRANSITIONS, ZygoteEvent)]:
        assert render_table(table, events) in doc  # type: ignore[arg-type]
