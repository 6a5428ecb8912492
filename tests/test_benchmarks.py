"""`python -m benchmarks --quick` runs end to end on asyncmpm prefork and worker (hello).

Only correctness is asserted (requests answered, no errors, files written, nothing left
running); timings are the report's business, never a test's.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

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
         "--workloads", "hello-ka", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    rows = {row["server"]: row for row in results["throughput"]}
    assert set(rows) == set(SERVERS), rows
    for server, row in rows.items():
        assert row["workload"] == "hello-ka"
        assert row["requests"] > 0, (server, row)
        assert row["errors_total"] == 0, (server, row["errors"])
        assert row["resources"]["pss_max_mb"] > 0, (server, row["resources"])
        assert row["resources"]["processes_max"] >= 3, (server, row["resources"])
    assert results["failures"] == []

    report = (out / "report.md").read_text()
    assert "## Goals" in report
    assert all(server in report for server in SERVERS)
    for chart in ("throughput.png", "latency.png", "resources.png"):
        png = out / chart
        assert png.stat().st_size > 1000, chart
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
    assert _benchmark_processes() <= before, "a server or load tool outlived the run"
