"""Where asyncmpm spends its time under the hello load: py-spy on the front loop and a child.

py-spy samples from outside the process (`--nonblocking`: the target is never paused), so the
profile costs the server nothing but the sampler's own CPU. `record --format raw` writes
collapsed stacks (`frame;frame;... count`); they are summed here into self time (the innermost
frame) and inclusive time (every frame on the stack) per function.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.load import Tools
from benchmarks.processes import run
from benchmarks.scenarios import background_load
from benchmarks.servers import RunningServer

_LINE = re.compile(r":\d+\)$")
# Frames every stack passes through on its way in (interpreter, event-loop and thread start-up):
# left out of the inclusive table, where they would always come first and say nothing.
_BOOTSTRAP = re.compile(r"\((<frozen runpy>|asyncio/runners\.py|anyio/_core/_eventloop\.py|"
                        r"threading\.py|asyncmpm/(__main__|cli)\.py|asyncmpm/front/runner\.py|"
                        r"asyncmpm/child/zygote\.py)\)$|^AsyncIOBackend\.run ")
_SITE = re.compile(r"^.*?(site-packages/|lib/python3\.\d+/|/work/main/)")


def _function(frame: str) -> str:
    """'name (path/file.py:12)' -> 'name (file path without line)'."""
    name, _, where = frame.partition(" (")
    where = _SITE.sub("", _LINE.sub(")", f"({where}" if where else ""))
    return f"{name} {where}".strip()


def aggregate(lines: Iterable[str], top: int = 12) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not _BOOTSTRAP.search(frame):
                inclusive[frame] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "samples": n, "share": n / total if total else 0.0}
                for f, n in counter.most_common(top)]

    return {"samples": total, "self": table(own), "inclusive": table(inclusive)}


def _busiest_child(root_pid: int, window: float = 1.0) -> int | None:
    """The leaf process that used the most CPU over `window` seconds (a busy child)."""
    with contextlib.suppress(psutil.Error):
        procs = psutil.Process(root_pid).children(recursive=True)
        leaves = [p for p in procs if not p.children()]
        before = {p.pid: sum(p.cpu_times()[:2]) for p in leaves}
        time.sleep(window)
        used = {}
        for proc in leaves:
            with contextlib.suppress(psutil.Error):
                used[proc.pid] = sum(proc.cpu_times()[:2]) - before[proc.pid]
        if used:
            return int(max(used, key=lambda pid: used[pid]))
    return None


def profile(server: RunningServer, tools: Tools, seconds: float, out_dir: Path,
            rate: int = 100) -> dict[str, Any]:
    """py-spy the front loop and the busiest child at once under hello keep-alive load."""
    if not tools.py_spy:
        return {"server": server.spec.name, "skipped": "py-spy is not installed"}
    results: dict[str, Any] = {"server": server.spec.name, "seconds": seconds, "rate": rate}
    with background_load(server, tools, "/hello", 64, seconds + 4, out_dir):
        time.sleep(1)
        child = _busiest_child(server.proc.pid)
        targets = {"front": server.proc.pid, "child": child}
        procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for role, pid in targets.items():
            if pid is None:
                continue
            raw = out_dir / f"pyspy-{server.spec.name}-{role}.txt"
            command = [tools.py_spy, "record", "--pid", str(pid), "--duration",
                       str(max(1, round(seconds))), "--rate", str(rate), "--format", "raw",
                       "--nonblocking", "--output", str(raw)]
            procs[role] = (subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL,
                                            start_new_session=True), raw)
        for role, (proc, raw) in procs.items():
            try:
                proc.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if raw.exists():
                summary = aggregate(raw.read_text().splitlines())
                possible = rate * seconds
                summary["pid"] = targets[role]
                summary["active_share"] = summary["samples"] / possible if possible else 0.0
                results[role] = summary
            else:
                results[role] = {"skipped": f"py-spy wrote nothing (exit {proc.returncode})"}
    results["py_spy_version"] = run([tools.py_spy, "--version"], timeout=10).stdout.strip()
    return results
