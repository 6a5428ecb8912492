"""The scoreboard: one entry per process slot, each with one entry per thread slot.

prefork has ``ThreadsPerChild = 1``, so both MPMs share one shape, as in httpd. The front loop
owns the live (mutable) scoreboard because it sees every request; everything else, the policy,
mod_status and embedding programs, reads an immutable :class:`ScoreboardSnapshot`.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import anyio

__all__ = [
    "ProcessScore",
    "ProcessSnapshot",
    "Scoreboard",
    "ScoreboardSnapshot",
    "SlotState",
    "WorkerScore",
    "WorkerSnapshot",
]


class SlotState(enum.Enum):
    """Apache's scoreboard states; the value is mod_status's letter."""

    DEAD = "."
    STARTING = "S"
    READY = "_"
    BUSY_READ = "R"
    BUSY_WRITE = "W"
    BUSY_KEEPALIVE = "K"
    BUSY_LOG = "L"
    BUSY_DNS = "D"
    CLOSING = "C"
    GRACEFUL = "G"
    IDLE_KILL = "I"

    @property
    def is_busy(self) -> bool:
        return self not in _NOT_BUSY


_NOT_BUSY = frozenset({SlotState.DEAD, SlotState.STARTING, SlotState.READY, SlotState.IDLE_KILL,
                       SlotState.GRACEFUL})


@dataclass(slots=True)
class WorkerScore:
    """Live per-thread-slot record (httpd's ``worker_score``). Times are ``time.time()``."""

    state: SlotState = SlotState.DEAD
    tid: int = 0
    access_count: int = 0
    bytes_served: int = 0
    my_access_count: int = 0
    my_bytes_served: int = 0
    conn_count: int = 0
    conn_bytes: int = 0
    start_time: float = 0.0
    stop_time: float = 0.0
    last_used: float = 0.0
    duration: float = 0.0
    request: str = ""
    client: str = ""
    vhost: str = ""
    protocol: str = ""
    #: CPU seconds (user, system, children's user, children's system) of the process serving
    #: this slot, taken when its last request ended: httpd's ``ws->times``, which
    #: ``ap_increment_counts`` fills with ``times()``. Zero until someone reports them.
    times: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def snapshot(self) -> WorkerSnapshot:
        return WorkerSnapshot(
            self.state, self.tid, self.access_count, self.bytes_served, self.my_access_count,
            self.my_bytes_served, self.conn_count, self.conn_bytes, self.start_time,
            self.stop_time, self.last_used, self.duration, self.request, self.client,
            self.vhost, self.protocol, self.times,
        )


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    state: SlotState = SlotState.DEAD
    tid: int = 0
    access_count: int = 0
    bytes_served: int = 0
    my_access_count: int = 0
    my_bytes_served: int = 0
    conn_count: int = 0
    conn_bytes: int = 0
    start_time: float = 0.0
    stop_time: float = 0.0
    last_used: float = 0.0
    duration: float = 0.0
    request: str = ""
    client: str = ""
    vhost: str = ""
    protocol: str = ""
    times: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass(slots=True)
class ProcessScore:
    """Live per-process-slot record (httpd's ``process_score``)."""

    threads: list[WorkerScore]
    pid: int = 0
    generation: int = 0
    quiescing: bool = False
    started_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    index: int
    pid: int
    generation: int
    quiescing: bool
    threads: tuple[WorkerSnapshot, ...]

    @property
    def states(self) -> tuple[SlotState, ...]:
        return tuple(t.state for t in self.threads)


@dataclass(frozen=True, slots=True)
class ScoreboardSnapshot:
    """A consistent copy of the scoreboard at one moment: the one input of policy and status."""

    mpm: str
    generation: int
    threads_per_child: int
    processes: tuple[ProcessSnapshot, ...]
    restart_time: float = 0.0
    taken_at: float = 0.0
    total_accesses: int = 0
    total_bytes: int = 0
    total_duration: float = 0.0
    queued_requests: int = 0

    @property
    def busy_workers(self) -> int:
        # mod_status: READY counts as idle only in a current-generation process, and as
        # neither busy nor idle in an old one.
        return sum(1 for p in self._counted() for t in p.threads if t.state.is_busy)

    @property
    def idle_workers(self) -> int:
        return sum(
            1
            for p in self._counted()
            if p.generation == self.generation
            for t in p.threads
            if t.state is SlotState.READY
        )

    @property
    def graceful_workers(self) -> int:
        return sum(
            1 for p in self._counted() for t in p.threads if t.state is SlotState.GRACEFUL
        )

    @property
    def process_count(self) -> int:
        return sum(1 for p in self.processes if p.pid)

    def _counted(self) -> list[ProcessSnapshot]:
        # mod_status counts only live, non-quiescing processes (prefork never quiesces one).
        prefork = self.mpm == "prefork"
        return [p for p in self.processes if p.pid and (prefork or not p.quiescing)]

    def letters(self) -> str:
        return "".join(t.state.value for p in self.processes for t in p.threads)


@dataclass(slots=True)
class Scoreboard:
    """The live scoreboard. Only the front loop's thread mutates it."""

    mpm: str
    server_limit: int
    threads_per_child: int
    processes: list[ProcessScore] = field(default_factory=list)
    generation: int = 0
    restart_time: float = field(default_factory=time.time)
    total_accesses: int = 0
    total_bytes: int = 0
    total_duration: float = 0.0
    queued_requests: int = 0
    _watch: anyio.Event | None = None

    def changed(self) -> None:
        """Wake whoever waits for a change (costs one attribute test when nobody does)."""
        if self._watch is not None:
            self._watch.set()
            self._watch = None

    async def wait_changed(self) -> None:
        if self._watch is None:
            self._watch = anyio.Event()
        await self._watch.wait()

    def __post_init__(self) -> None:
        if not self.processes:
            self.processes = [
                ProcessScore(threads=[WorkerScore() for _ in range(self.threads_per_child)])
                for _ in range(self.server_limit)
            ]

    def snapshot(self) -> ScoreboardSnapshot:
        return ScoreboardSnapshot(
            mpm=self.mpm,
            generation=self.generation,
            threads_per_child=self.threads_per_child,
            processes=tuple(
                ProcessSnapshot(i, p.pid, p.generation, p.quiescing,
                                tuple(t.snapshot() for t in p.threads))
                for i, p in enumerate(self.processes)
            ),
            restart_time=self.restart_time,
            taken_at=time.time(),
            total_accesses=self.total_accesses,
            total_bytes=self.total_bytes,
            total_duration=self.total_duration,
            queued_requests=self.queued_requests,
        )
