"""CPU time per request by role: the server's front process, its other processes, the client.

The front is the root of the server's process tree (asyncmpm's main process, Apache's parent,
gunicorn's arbiter, granian's supervisor; for a single-process server it is the whole server).
The children are every other process of the tree. The load generator is wrk or h2load (a child
of this process, reaped when it ends: its CPU shows in RUSAGE_CHILDREN) or the built-in
generator (the calling thread of this process: its thread CPU time).

The tree is read at the start and the end of the measured window. A process born during the
window counts from zero. A process that exits during the window is gone at the end, but its
parent, once it reaps it, adds the child's whole lifetime CPU to its own children_user and
children_system: the growth of those over the window, minus what the departed processes had
already used at the start, is the CPU they used within it. A process that exits without being
reaped by a member of the tree (re-parented to init) is lost; the servers here reap their own.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class _Times:
    own: float  # user + system of the process itself (all its threads)
    reaped: float  # children_user + children_system: descendants it has waited for


def _tree(root_pid: int) -> dict[int, _Times]:
    """CPU seconds of every process under `root_pid` (root included), by pid."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    out: dict[int, _Times] = {}
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = _Times(t.user + t.system, t.children_user + t.children_system)
    return out


def _own_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuByRole:
    """CPU seconds used within a window, by role, and per request."""

    front_s: float = 0.0
    children_s: float = 0.0
    loadgen_s: float = 0.0
    window_s: float = 0.0
    processes_exited: int = 0
    processes_born: int = 0
    per_request_us: dict[str, float] = field(default_factory=dict)

    def per_request(self, requests: int) -> CpuByRole:
        """Fill `per_request_us` for `requests` requests served within the window."""
        if requests > 0:
            self.per_request_us = {role: 1e6 * seconds / requests for role, seconds in
                                   (("front", self.front_s), ("children", self.children_s),
                                    ("loadgen", self.loadgen_s))}
        return self


class CpuAccount:
    """Reads CPU times at start() and stop(); call both from the thread that runs the load."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._start: dict[int, _Times] = {}
        self._thread0 = 0.0
        self._reaped0 = 0.0
        self._t0 = 0.0

    def start(self) -> CpuAccount:
        self._start = _tree(self.root_pid)
        self._thread0 = time.thread_time()
        self._reaped0 = _own_children_cpu()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> CpuByRole:
        window = time.monotonic() - self._t0
        loadgen = (time.thread_time() - self._thread0) + (_own_children_cpu() - self._reaped0)
        end = _tree(self.root_pid)
        zero = _Times(0.0, 0.0)
        front = children = 0.0
        for pid, now in end.items():
            then = self._start.get(pid, zero)
            used = now.own - then.own
            if pid == self.root_pid:
                front += used
            else:
                children += used
            children += now.reaped - then.reaped  # whatever it reaped is never the front
        gone = [t for pid, t in self._start.items() if pid not in end]
        children -= sum(t.own + t.reaped for t in gone)  # used before the window
        born = sum(1 for pid in end if pid not in self._start)
        return CpuByRole(front_s=max(0.0, front), children_s=max(0.0, children),
                         loadgen_s=max(0.0, loadgen), window_s=window,
                         processes_exited=len(gone), processes_born=born)
