"""What a server's process tree costs while it runs: PSS, processes, threads, CPU time.

Sampled from a thread every 0.5 s. PSS comes from /proc/PID/smaps_rollup (one cheap read per
process; psutil's memory_full_info parses the whole smaps and would steal CPU from the server
under test), with psutil as the fallback. PSS, unlike RSS, splits shared copy-on-write pages
between the processes that share them, so the sum over a tree is what the tree really costs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psutil


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with contextlib.suppress(psutil.Error, AttributeError):
        return int(psutil.Process(pid).memory_full_info().pss)
    return 0


@dataclass
class ProcessInfo:
    pid: int
    ppid: int
    name: str
    pss: int
    threads: int
    leaf: bool


@dataclass
class Sample:
    t: float
    pss: int
    processes: int
    threads: int
    children: int  # leaf processes: the ones that serve requests (not main, zygote, arbiter)
    tree: list[ProcessInfo] = field(default_factory=list)


def snapshot(root_pid: int, cpu: dict[int, float] | None = None) -> list[ProcessInfo]:
    """The tree under `root_pid` (root included); fills `cpu` with each pid's CPU seconds."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    parents = set()
    rows: list[ProcessInfo] = []
    for proc in procs:
        try:
            with proc.oneshot():
                ppid = proc.ppid()
                threads = proc.num_threads()
                title = " ".join(proc.cmdline()[:3]) or proc.name()
                if cpu is not None:
                    times = proc.cpu_times()
                    cpu[proc.pid] = times.user + times.system
        except psutil.Error:
            continue
        parents.add(ppid)
        rows.append(ProcessInfo(proc.pid, ppid, title, pss_bytes(proc.pid), threads, False))
    for row in rows:
        row.leaf = row.pid not in parents and row.pid != root_pid
    return rows


@dataclass
class ResourceSummary:
    pss_max_mb: float = 0.0
    pss_mean_mb: float = 0.0
    processes_max: int = 0
    processes_mean: float = 0.0
    threads_max: int = 0
    threads_mean: float = 0.0
    cpu_s: float = 0.0
    cpu_percent: float = 0.0
    samples: int = 0


class ResourceSampler:
    """Samples a process tree from a background thread between start() and stop()."""

    def __init__(self, root_pid: int, interval: float = 0.5, keep_tree: bool = False) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.keep_tree = keep_tree
        self.samples: list[Sample] = []
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._t0 = 0.0
        self._elapsed = 0.0

    def start(self) -> ResourceSampler:
        snapshot(self.root_pid, self._cpu_start)
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    @property
    def t0(self) -> float:
        """time.monotonic() at start(); sample times are relative to it."""
        return self._t0

    def _take(self) -> None:
        tree = snapshot(self.root_pid, self._cpu_last)
        if tree:
            self.samples.append(Sample(time.monotonic() - self._t0, sum(p.pss for p in tree),
                                       len(tree), sum(p.threads for p in tree),
                                       sum(1 for p in tree if p.leaf),
                                       tree if self.keep_tree else []))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.interval)

    def stop(self) -> ResourceSummary:
        self._stop.set()
        self._thread.join()
        self._elapsed = time.monotonic() - self._t0
        self._take()
        return self.summary()

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()

    def cpu_seconds(self) -> float:
        """CPU used by the tree since start(): processes born later count from zero."""
        return sum(v - self._cpu_start.get(pid, 0.0) for pid, v in self._cpu_last.items())

    def summary(self) -> ResourceSummary:
        if not self.samples:
            return ResourceSummary()
        n = len(self.samples)
        cpu = self.cpu_seconds()
        return ResourceSummary(
            pss_max_mb=max(s.pss for s in self.samples) / 2**20,
            pss_mean_mb=sum(s.pss for s in self.samples) / n / 2**20,
            processes_max=max(s.processes for s in self.samples),
            processes_mean=sum(s.processes for s in self.samples) / n,
            threads_max=max(s.threads for s in self.samples),
            threads_mean=sum(s.threads for s in self.samples) / n,
            cpu_s=cpu,
            cpu_percent=100 * cpu / self._elapsed if self._elapsed else 0.0,
            samples=n,
        )
