"""The spare-server policy as a pure function: properties over generated scoreboards, and the
reference's load-step numbers reproduced tick by tick."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmpm.config.model import MPM, Config, MPMLimits
from asyncmpm.supervisor.actions import Log, Retire, Spawn
from asyncmpm.supervisor.policy import (
    CONNECTION_LIMIT_JITTER,
    MAX_SPAWN_RATE,
    PolicyMemo,
    after_graceful_restart,
    connection_limit,
    maintain,
    replacement,
    startup,
)
from asyncmpm.supervisor.scoreboard import (
    ProcessSnapshot,
    ScoreboardSnapshot,
    SlotState,
    WorkerSnapshot,
)

BUSY = SlotState.BUSY_WRITE


def snapshot(limits: MPMLimits, processes: list[tuple[int, int, bool, list[SlotState]]],
             generation: int = 0) -> ScoreboardSnapshot:
    procs = []
    for i in range(limits.server_limit):
        if i < len(processes):
            pid, gen, quiescing, states = processes[i]
        else:
            pid, gen, quiescing, states = 0, 0, False, [SlotState.DEAD] * limits.threads_per_child
        procs.append(ProcessSnapshot(i, pid, gen, quiescing,
                                     tuple(WorkerSnapshot(state=s) for s in states)))
    return ScoreboardSnapshot(limits.mpm.value, generation, limits.threads_per_child,
                              tuple(procs))


# ---------------------------------------------------------------- generated scoreboards
STATES = [SlotState.DEAD, SlotState.STARTING, SlotState.READY, BUSY, SlotState.BUSY_READ,
          SlotState.GRACEFUL]


@st.composite
def cases(draw: Any) -> tuple[ScoreboardSnapshot, MPMLimits, PolicyMemo]:
    mpm = draw(st.sampled_from([MPM.PREFORK, MPM.WORKER]))
    if mpm is MPM.PREFORK:
        config = Config(mpm=mpm, server_limit=draw(st.integers(1, 40)),
                        max_request_workers=draw(st.integers(1, 40)),
                        min_spare_servers=draw(st.integers(0, 12)),
                        max_spare_servers=draw(st.integers(0, 20)),
                        start_servers=draw(st.integers(0, 10)))
    else:
        config = Config(mpm=mpm, server_limit=draw(st.integers(1, 8)),
                        threads_per_child=draw(st.integers(1, 6)),
                        max_request_workers=draw(st.integers(1, 48)),
                        min_spare_threads=draw(st.integers(0, 20)),
                        max_spare_threads=draw(st.integers(0, 40)))
    limits, _ = config.limits()
    procs: list[tuple[int, int, bool, list[SlotState]]] = []
    for _ in range(draw(st.integers(0, limits.server_limit))):
        alive = draw(st.booleans())
        states = draw(st.lists(st.sampled_from(STATES), min_size=limits.threads_per_child,
                               max_size=limits.threads_per_child))
        if not alive:
            states = [SlotState.DEAD] * limits.threads_per_child
        procs.append((1000 + len(procs) if alive else 0, draw(st.integers(0, 1)),
                      alive and draw(st.booleans()), states))
    memo = PolicyMemo(spawn_rate=draw(st.sampled_from([1, 2, 4, 8, 16, 32])),
                      hold_off=draw(st.integers(0, 2)), max_used=draw(st.integers(0, 40)))
    return snapshot(limits, procs, generation=1), limits, memo


@settings(max_examples=400, deadline=None)
@given(cases())
def test_policy_invariants(case: tuple[ScoreboardSnapshot, MPMLimits, PolicyMemo]) -> None:
    snap, limits, memo = case
    actions, new = maintain(snap, limits, memo)
    spawns = [a for a in actions if isinstance(a, Spawn)]
    retires = [a for a in actions if isinstance(a, Retire)]
    assert len(spawns) <= 1
    assert len(retires) <= 1
    assert not (spawns and retires)
    for spawn in spawns:
        assert 0 < len(spawn.slots) <= memo.spawn_rate <= MAX_SPAWN_RATE
        for i in spawn.slots:
            assert i < limits.process_limit  # never beyond MaxRequestWorkers / process limit
            proc = snap.processes[i]
            assert proc.pid == 0
            assert all(t.state is SlotState.DEAD for t in proc.threads)
        # The rate doubles only after a tick that spawned (hold_off postpones it).
        if memo.hold_off:
            assert new.spawn_rate == memo.spawn_rate
            assert new.hold_off == memo.hold_off - 1
        else:
            assert new.spawn_rate == min(memo.spawn_rate * 2, MAX_SPAWN_RATE)
    if not spawns:
        assert new.spawn_rate == 1
    for retire in retires:
        proc = snap.processes[retire.slot]
        # Only a live, current, non-quiescing child with no busy thread is retired.
        assert proc.pid
        assert not proc.quiescing
        assert proc.generation == snap.generation
        assert all(t.state is SlotState.READY for t in proc.threads)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_startup_fills_the_lowest_empty_slots(
    case: tuple[ScoreboardSnapshot, MPMLimits, PolicyMemo],
) -> None:
    snap, limits, _ = case
    spawn = startup(snap, limits, limits.start_servers)
    empty = [p.index for p in snap.processes[: limits.process_limit]
             if p.pid == 0 and all(t.state is SlotState.DEAD for t in p.threads)]
    assert (spawn.slots if spawn else ()) == tuple(empty[: limits.start_servers])


@settings(max_examples=200, deadline=None)
@given(cases())
def test_a_retiring_child_is_replaced_within_the_limits(
    case: tuple[ScoreboardSnapshot, MPMLimits, PolicyMemo],
) -> None:
    snap, limits, _ = case
    spawn = replacement(snap, limits)
    empty = [p.index for p in snap.processes[: limits.process_limit]
             if p.pid == 0 and all(t.state is SlotState.DEAD for t in p.threads)]
    if not empty:
        assert spawn is None  # full: the retiring child's own slot is refilled on its exit
    else:
        assert spawn is not None
        assert spawn.slots == (empty[0],)  # one child, never beyond the process limit


@given(st.integers(-1, 100_000), st.floats(0, 1, exclude_max=True))
def test_connection_limit_is_jittered_downward_only(limit: int, draw: float) -> None:
    got = connection_limit(limit, draw)
    if limit <= 0:
        assert got == limit  # 0 = never retire; worker's negative values pass through
    else:
        assert limit - int(limit * CONNECTION_LIMIT_JITTER) <= got <= limit
        assert got >= 1


def test_connection_limits_spread_over_the_top_tenth() -> None:
    draws = [i / 100 for i in range(100)]
    assert {connection_limit(50, d) for d in draws} == set(range(45, 51))
    assert {connection_limit(5, d) for d in draws} == {5}  # too small to spread
    assert connection_limit(50, 0.0) == 50


# ---------------------------------------------------------------- load-step simulation
class Sim:
    """A model server: spawned children are ready by the next tick, retired ones are gone,
    and ``load`` long requests each hold one idle slot (reference §2.6)."""

    def __init__(self, mpm: MPM, **directives: Any) -> None:
        self.limits, _ = Config(mpm=mpm, **directives).limits()
        self.memo = PolicyMemo()
        self.alive: set[int] = set()
        self.load = 0
        first = startup(self.snapshot(), self.limits, self.limits.start_servers)
        assert first is not None
        self.alive |= set(first.slots)
        self.logs: list[str] = []

    def snapshot(self) -> ScoreboardSnapshot:
        tpc = self.limits.threads_per_child
        busy_left = self.load
        procs = []
        for i in range(self.limits.server_limit):
            if i in self.alive:
                states = []
                for _ in range(tpc):
                    states.append(BUSY if busy_left > 0 else SlotState.READY)
                    busy_left -= 1
                procs.append((100 + i, 0, False, states))
            else:
                procs.append((0, 0, False, [SlotState.DEAD] * tpc))
        return snapshot(self.limits, procs)

    def tick(self) -> int:
        actions, self.memo = maintain(self.snapshot(), self.limits, self.memo)
        for action in actions:
            if isinstance(action, Spawn):
                self.alive |= set(action.slots)
            elif isinstance(action, Retire):
                self.alive.discard(action.slot)
            elif isinstance(action, Log):
                self.logs.append(action.code)
        return len(self.alive)

    def busy_first(self) -> None:
        # Requests occupy the lowest slots, so idle children are the highest-numbered ones.
        self.alive = set(self.alive)


def test_prefork_defaults_load_step_0_50_0() -> None:
    sim = Sim(MPM.PREFORK)
    assert len(sim.alive) == 5
    sim.load = 50
    assert [sim.tick() for _ in range(6)] == [6, 8, 12, 20, 36, 68]
    assert sim.logs.count("AH00162") == 3  # ticks 4-6: rate >= 8
    # idle 18 > 10: one retirement per tick for 8 ticks, then stable at 60.
    assert [sim.tick() for _ in range(10)] == [67, 66, 65, 64, 63, 62, 61, 60, 60, 60]
    sim.load = 0
    counts = [sim.tick() for _ in range(52)]
    assert counts[:3] == [59, 58, 57]
    assert counts[49:] == [10, 10, 10]


def test_worker_defaults_load_step_0_50_0() -> None:
    sim = Sim(MPM.WORKER)
    assert len(sim.alive) == 3
    sim.load = 50
    assert [sim.tick() for _ in range(4)] == [4, 6, 6, 6]
    sim.load = 0
    assert [sim.tick() for _ in range(3)] == [6, 6, 6]


def test_worker_defaults_load_step_0_200_0() -> None:
    sim = Sim(MPM.WORKER)
    sim.load = 200
    assert [sim.tick() for _ in range(5)] == [4, 6, 10, 16, 16]
    sim.load = 0
    assert [sim.tick() for _ in range(8)] == [15, 14, 13, 12, 11, 10, 10, 10]


def test_prefork_at_max_request_workers_logs_once() -> None:
    sim = Sim(MPM.PREFORK, max_request_workers=8, server_limit=8)
    sim.load = 8
    for _ in range(10):
        sim.tick()
    assert len(sim.alive) == 8
    assert sim.logs.count("AH00161") == 1


def test_hold_off_after_graceful_restart_postpones_doubling() -> None:
    sim = Sim(MPM.PREFORK)
    sim.memo = after_graceful_restart(sim.memo)
    sim.load = 50
    assert [sim.tick() for _ in range(4)] == [6, 7, 8, 9]


@settings(max_examples=60, deadline=None)
@given(mpm=st.sampled_from([MPM.PREFORK, MPM.WORKER]), load=st.integers(0, 120))
def test_constant_load_converges_between_min_and_max_spare(mpm: MPM, load: int) -> None:
    sim = Sim(mpm)
    sim.load = min(load, sim.limits.max_request_workers)
    for _ in range(200):
        sim.tick()
    tpc = sim.limits.threads_per_child
    idle = len(sim.alive) * tpc - sim.load
    at_cap = len(sim.alive) == sim.limits.process_limit
    assert idle <= sim.limits.max_spare
    assert idle >= sim.limits.min_spare or at_cap
    before = len(sim.alive)
    assert sim.tick() == before  # settled


def test_limits_adjusted_memo_is_frozen() -> None:
    memo = PolicyMemo()
    assert replace(memo, spawn_rate=2).spawn_rate == 2
