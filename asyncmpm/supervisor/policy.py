"""Apache's idle-server maintenance, as a pure function.

Theory of operation
-------------------
Once a second httpd's parent scans the scoreboard, counts idle servers (processes for
prefork, threads for worker), and either forks children, kills one, or does nothing
(``perform_idle_server_maintenance`` in ``prefork.c`` and ``worker.c``; reference §2).
Here that decision is :func:`maintain`: it reads a :class:`ScoreboardSnapshot`, the effective
:class:`MPMLimits` and the little state httpd keeps between ticks (:class:`PolicyMemo`), and
returns :mod:`actions <asyncmpm.supervisor.actions>` plus the next memo. It does no I/O and reads
no clock, so every rule is testable with generated scoreboards; the supervisor only carries
the actions out.

Rules kept exactly: starting children count as idle; the spawn rate doubles 1, 2, 4 … 32 after
each tick that spawned and falls back to 1 on any tick that did not; at most one child is
retired per tick; nothing is ever spawned beyond MaxRequestWorkers (prefork) or the process
limit (worker); ``hold_off`` (set after a graceful restart) postpones doubling for 10 ticks.
One deliberate difference: a worker child is never started in the slot of a process that is
still quiescing (httpd lets it squat there); it waits for the slot to be empty.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from asyncmpm.config.model import MPM, MPMLimits
from asyncmpm.supervisor.actions import Action, Log, Retire, Spawn
from asyncmpm.supervisor.scoreboard import ProcessSnapshot, ScoreboardSnapshot, SlotState

__all__ = [
    "CONNECTION_LIMIT_JITTER",
    "MAX_SPAWN_RATE",
    "PolicyMemo",
    "after_graceful_restart",
    "connection_limit",
    "maintain",
    "replacement",
    "startup",
]

MAX_SPAWN_RATE = 32  # httpd's MAX_SPAWN_RATE
CONNECTION_LIMIT_JITTER = 0.1  # a child's MaxConnectionsPerChild is drawn from the top 10 %
_IDLE_STATES = (SlotState.DEAD, SlotState.STARTING, SlotState.READY)
_ACTIVE_STATES = frozenset(
    {SlotState.READY, SlotState.BUSY_READ, SlotState.BUSY_WRITE, SlotState.BUSY_KEEPALIVE,
     SlotState.BUSY_LOG, SlotState.BUSY_DNS, SlotState.CLOSING}
)


@dataclass(frozen=True, slots=True)
class PolicyMemo:
    """What httpd's parent remembers between ticks."""

    spawn_rate: int = 1
    hold_off: int = 0
    max_used: int = 0
    logged_max_workers: bool = False  # AH00161 / AH00286 are logged once per server life
    logged_near_max: bool = False  # AH00287


def after_graceful_restart(memo: PolicyMemo) -> PolicyMemo:
    """httpd sets hold_off = 10 after a graceful restart (reference §2.6)."""
    return replace(memo, hold_off=10)


def startup(snapshot: ScoreboardSnapshot, limits: MPMLimits, count: int) -> Spawn | None:
    """startup_children: fork ``count`` children into the lowest-numbered empty slots."""
    free = [p.index for p in snapshot.processes[: limits.process_limit] if _empty(p)]
    chosen = tuple(free[:count])
    return Spawn(chosen) if chosen else None


def replacement(snapshot: ScoreboardSnapshot, limits: MPMLimits) -> Spawn | None:
    """A child that reached MaxConnectionsPerChild is replaced at once (its retirement is
    planned, not a failure): into the lowest empty slot within the process limit, so the pool
    never holds more than it may. None when every slot is taken; the supervisor then refills
    the retiring child's own slot as soon as it has exited, still without waiting for a tick.
    """
    return startup(snapshot, limits, 1)


def connection_limit(limit: int, draw: float) -> int:
    """One child's share of MaxConnectionsPerChild, ``draw`` uniform in [0, 1).

    Children started together get the same load, so with one limit they would all retire
    together and leave the pool empty at once. Each child gets a limit drawn from the top
    ``CONNECTION_LIMIT_JITTER`` of the configured one (gunicorn's ``max_requests_jitter``,
    but downward: a child never serves more than the directive says). 0 and negative
    values (never retire, worker's "retire at once") pass through.
    """
    if limit <= 0:
        return limit
    spread = int(limit * CONNECTION_LIMIT_JITTER)
    return limit - min(spread, int(draw * (spread + 1)))


def maintain(
    snapshot: ScoreboardSnapshot, limits: MPMLimits, memo: PolicyMemo
) -> tuple[list[Action], PolicyMemo]:
    """One tick of idle-server maintenance."""
    if limits.mpm is MPM.PREFORK:
        return _prefork(snapshot, limits, memo)
    return _worker(snapshot, limits, memo)


def _empty(p: ProcessSnapshot) -> bool:
    return p.pid == 0 and all(t.state is SlotState.DEAD for t in p.threads)


def _after_spawn(memo: PolicyMemo) -> PolicyMemo:
    if memo.hold_off:
        return replace(memo, hold_off=memo.hold_off - 1)
    if memo.spawn_rate < MAX_SPAWN_RATE:
        return replace(memo, spawn_rate=memo.spawn_rate * 2)
    return memo


def _prefork(
    snapshot: ScoreboardSnapshot, limits: MPMLimits, memo: PolicyMemo
) -> tuple[list[Action], PolicyMemo]:
    rate = memo.spawn_rate
    idle = total = 0
    last = -1
    free: list[int] = []
    retirable: list[int] = []
    for p in snapshot.processes[: limits.process_limit]:
        if p.index >= memo.max_used and len(free) == rate:
            break
        if _empty(p):
            if len(free) < rate:
                free.append(p.index)
            continue
        state = p.threads[0].state
        if state in _IDLE_STATES:  # a live slot not yet marked (just forked) is starting
            idle += 1  # a starting child counts as idle
            if (state is SlotState.READY and p.pid and not p.quiescing
                    and p.generation == snapshot.generation):
                retirable.append(p.index)
        total += 1
        last = p.index
    memo = replace(memo, max_used=last + 1)
    if idle > limits.max_spare:
        # httpd writes one byte to the pipe of death: exactly one child goes per tick. We pick
        # the highest-numbered idle child, so the spare pool collapses toward low slots.
        actions: list[Action] = [Retire(retirable[-1])] if retirable else []
        return actions, replace(memo, spawn_rate=1)
    if idle < limits.min_spare:
        if not free:
            if memo.logged_max_workers:
                return [], replace(memo, spawn_rate=1)
            return [
                Log("error", "AH00161", "server reached MaxRequestWorkers setting, consider "
                    "raising the MaxRequestWorkers setting")
            ], replace(memo, spawn_rate=1, logged_max_workers=True)
        actions = []
        if rate >= 8:
            actions.append(Log(
                "info", "AH00162",
                "server seems busy, (you may need to increase StartServers, or Min/"
                f"MaxSpareServers), spawning {len(free)} children, there are {idle} idle, "
                f"and {total} total children"))
        actions.append(Spawn(tuple(free)))
        return actions, _after_spawn(memo)
    return [], replace(memo, spawn_rate=1)


def _worker(
    snapshot: ScoreboardSnapshot, limits: MPMLimits, memo: PolicyMemo
) -> tuple[list[Action], PolicyMemo]:
    rate = memo.spawn_rate
    tpc = limits.threads_per_child
    idle = active = 0
    last = -1
    free: list[int] = []
    totally_free = 0
    candidates: list[tuple[int, int]] = []  # (idle threads, slot) of retirable children
    for p in snapshot.processes[: limits.process_limit]:
        if p.index >= memo.max_used and totally_free == rate:
            break
        any_dead = False
        all_dead = True
        busy_here = idle_here = 0
        current = p.pid and not p.quiescing and p.generation == snapshot.generation
        for t in p.threads[:tpc]:
            st = t.state
            any_dead |= st is SlotState.DEAD
            all_dead &= st in (SlotState.DEAD, SlotState.GRACEFUL)
            if p.pid:
                if st in _IDLE_STATES and current:
                    idle_here += 1
                if st in _ACTIVE_STATES:
                    busy_here += 1
        idle += idle_here
        active += busy_here
        if any_dead and totally_free < rate and len(free) < MAX_SPAWN_RATE and p.pid == 0:
            if all_dead:
                free.insert(totally_free, p.index)
                totally_free += 1
            else:
                free.append(p.index)
        if current and all(t.state is SlotState.READY for t in p.threads[:tpc]):
            candidates.append((idle_here, p.index))
        if p.pid:
            last = p.index
    memo = replace(memo, max_used=last + 1)
    if idle > limits.max_spare:
        # httpd writes '!' to the pipe of death: one child stops gracefully per tick. Only a
        # child with every thread idle is chosen, so no request is ever cut short.
        actions: list[Action] = [Retire(max(candidates)[1])] if candidates else []
        return actions, replace(memo, spawn_rate=1)
    if idle < limits.min_spare:
        if not free:
            actions = []
            if active >= limits.max_request_workers:
                if idle == 0 and not memo.logged_max_workers:
                    actions.append(Log("error", "AH00286", "server reached MaxRequestWorkers "
                                       "setting, consider raising the MaxRequestWorkers setting"))
                    memo = replace(memo, logged_max_workers=True)
                elif idle and not memo.logged_near_max:
                    actions.append(Log("error", "AH00287", "server is within MinSpareThreads "
                                       "of MaxRequestWorkers, consider raising the "
                                       "MaxRequestWorkers setting"))
                    memo = replace(memo, logged_near_max=True)
            else:
                actions.append(Log("error", "AH00288", "scoreboard is full, not at "
                                   "MaxRequestWorkers"))
            return actions, replace(memo, spawn_rate=1)
        chosen = tuple(free[:rate])
        actions = []
        if rate >= 8:
            actions.append(Log(
                "info", "AH00289",
                "server seems busy, (you may need to increase StartServers, ThreadsPerChild "
                f"or Min/MaxSpareThreads), spawning {len(chosen)} children, there are around "
                f"{idle} idle threads, and {active} total threads"))
        actions.append(Spawn(chosen))
        return actions, _after_spawn(memo)
    return [], replace(memo, spawn_rate=1)
