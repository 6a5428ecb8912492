"""What the numbers were measured on: they mean little without the machine and the tools."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from typing import Any

import psutil

from benchmarks.load import Tools
from benchmarks.processes import run


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _tool_version(command: list[str]) -> str:
    try:
        done = run(command, timeout=10)
    except OSError:
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return next((line.strip() for line in text if line.strip()), "?")


def busy_processes(window: float = 0.5, threshold: float = 10.0) -> list[str]:
    """Other processes using over `threshold` % CPU right now: they would skew a benchmark."""
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["pid", "name"]) if p.pid != me]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(window)
    busy = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            used = proc.cpu_percent(None)
            if used > threshold:
                busy.append(f"{proc.info['name']} (pid {proc.pid}, {used:.0f} %)")
    return busy


def foreign_cpu(window: float = 1.0) -> float:
    """CPU % (100 = one core) used by processes outside this benchmark's own process tree."""
    me = psutil.Process()
    ours = {me.pid, *(p.pid for p in me.children(recursive=True))}
    procs = [p for p in psutil.process_iter() if p.pid not in ours]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(window)
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.cpu_percent(None)
    return total


def wait_quiet(limit: float = 60.0, threshold: float = 30.0) -> tuple[float, float]:
    """Wait (at most `limit` s) until other processes use under `threshold` % CPU.

    The machine may be shared (a test suite, a build): starting a measurement while something
    else holds a core would charge that core to the server under test. Returns the seconds
    waited and the foreign CPU % seen last.
    """
    started = time.monotonic()
    while True:
        used = foreign_cpu()
        waited = time.monotonic() - started
        if used < threshold or waited >= limit:
            return waited, used
        time.sleep(4)


def describe(tools: Tools) -> dict[str, Any]:
    versions = {}
    if tools.wrk:
        versions["wrk"] = _tool_version([tools.wrk, "-v"])
    if tools.h2load:
        versions["h2load"] = _tool_version([tools.h2load, "--version"])
    if tools.slowhttptest:
        versions["slowhttptest"] = _tool_version([tools.slowhttptest, "-h"])
    if tools.py_spy:
        versions["py-spy"] = _tool_version([tools.py_spy, "--version"])
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "loadavg_start": os.getloadavg(),
        "busy_processes_start": busy_processes(),
        "tools": versions,
        "load_generator": "runs on the same machine as the server (shares its cores)",
    }
