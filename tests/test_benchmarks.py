"""`python -m benchmarks --quick` runs end to end on asyncmpm prefork and worker (hello, and
hello over TLS); CPU accounting by role counts a process that exits inside the window; goals
give a verdict from same-run ratios.

Only correctness is asserted (requests answered, no errors, files written, nothing left
running); timings are the report's business, never a test's.
"""

from __future__ import annotations

import importlib.util
import json
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from benchmarks import goals
from benchmarks.cpu import CpuAccount

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("asyncmpm-prefork-asyncio", "asyncmpm-worker-asyncio")


def _benchmark_processes() -> set[int]:
    """Servers and load tools a benchmark run starts (by command line, any parent)."""
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "benchmarks/app.py" in cmdline or "bench-wrk-" in cmdline:
            found.add(proc.pid)
    return found


def test_quick_run_writes_results_report_and_charts(tmp_path: Path) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (bash benchmarks/install.sh)")
    before = _benchmark_processes()
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--servers", ",".join(SERVERS),
         "--workloads", "hello-ka,hello-tls", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    rows = {(row["server"], row["workload"]): row for row in results["throughput"]}
    assert set(rows) == {(s, w) for s in SERVERS for w in ("hello-ka", "hello-tls")}, rows
    for (server, workload), row in rows.items():
        assert row["requests"] > 0, (server, workload, row)
        assert row["errors_total"] == 0, (server, workload, row["errors"])
        assert row["resources"]["pss_max_mb"] > 0, (server, row["resources"])
        assert row["resources"]["processes_max"] >= 3, (server, row["resources"])
        us = row["cpu_by_role"]["per_request_us"]
        assert min(us["front"], us["children"], us["loadgen"]) > 0, (server, us)
    for server in SERVERS:
        assert rows[(server, "hello-tls")]["tls"].startswith("TLS"), rows[(server, "hello-tls")]
        assert "--certfile" in results["servers"][server]["tls_command"]
    assert results["failures"] == []

    report = (out / "report.md").read_text()
    assert "## Goals" in report
    assert "### hello-tls" in report
    assert report.count("| server | req/s | front µs/req | children µs/req | loadgen µs/req") == 2
    assert all(server in report for server in SERVERS)
    for chart in ("throughput.png", "latency.png", "resources.png"):
        png = out / chart
        assert png.stat().st_size > 1000, chart
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
    assert _benchmark_processes() <= before, "a server or load tool outlived the run"


# A parent whose child burns 0.2 s of CPU, says "ready", waits for a line, burns 0.3 s more and
# exits; the parent reaps it, says "reaped" and waits for a line before exiting itself.
_FORKER = textwrap.dedent("""
    import os, sys, time

    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    pid = os.fork()
    if pid == 0:
        burn(0.2)
        print("ready", flush=True)
        sys.stdin.readline()
        burn(0.3)
        os._exit(0)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
    sys.stdin.readline()
""")


def _expect(stream: IO[str], line: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
    assert ready, f"no {line!r} within {timeout} s"
    assert stream.readline().strip() == line


def test_cpu_by_role_counts_a_child_that_exits_inside_the_window() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _FORKER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin
    assert proc.stdout
    try:
        _expect(proc.stdout, "ready")
        account = CpuAccount(proc.pid).start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        _expect(proc.stdout, "reaped")
        cpu = account.stop().per_request(10)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert cpu.processes_exited == 1
    assert 0.25 <= cpu.children_s <= 0.45, cpu  # the 0.3 s inside the window, not the 0.2 before
    assert cpu.front_s < 0.1, cpu
    assert cpu.per_request_us["children"] == pytest.approx(1e5 * cpu.children_s)


def _row(server: str, workload: str, rps: float, slow: int = 0) -> dict[str, Any]:
    return {"server": server, "workload": workload, "rps": rps, "mb_per_s": rps * 10,
            "requests": int(rps * 4), "slow_over_5s": slow}


def test_goals_judge_same_run_ratios() -> None:
    results = {"throughput": [
        _row("asyncmpm-prefork-uvloop", "hello-ka", 20000),
        _row("apache-prefork", "hello-ka", 9000),
        _row("asyncmpm-worker-uvloop", "hello-ka", 20000),
        _row("apache-worker", "hello-ka", 11000),
        _row("granian", "hello-ka", 30000),
        _row("asyncmpm-prefork-uvloop", "blocking", 2950, slow=1),
        _row("asyncmpm-worker-asyncio", "stream", 100), _row("asyncmpm-worker-trio", "stream", 90),
        _row("asyncmpm-worker-asyncio", "upload", 100), _row("asyncmpm-worker-trio", "upload", 70),
    ]}
    verdicts = {g["goal"]: g["met"] for g in goals.evaluate(results)}
    assert verdicts["hello keep-alive: asyncmpm-prefork-uvloop vs apache-prefork"] is True
    assert verdicts["hello keep-alive: asyncmpm-worker-uvloop vs apache-worker"] is False
    assert verdicts["hello keep-alive: asyncmpm-worker-uvloop vs granian"] is True
    blocking = [v for g, v in verdicts.items() if g.startswith("blocking I/O: asyncmpm-prefork")]
    assert blocking == [False]  # fast enough, but one response took over 5 s
    assert verdicts["trio vs asyncio (no uvloop), worker, every workload both ran"] is False
