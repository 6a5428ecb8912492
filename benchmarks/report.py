"""report.md from results.json: the goals first, then every table the charts are drawn from.

`python -m benchmarks.report RESULTS_DIR` rebuilds the report (and charts) of an earlier run.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from benchmarks.goals import ANCHORS_RPS, evaluate, primary
from benchmarks.workloads import WORKLOADS


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _img(results: dict[str, Any], chart: str) -> list[str]:
    return [f"![{chart}]({chart}.png)", ""] if chart in results.get("charts", []) else []


def _errors(row: dict[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in row["errors"].items() if v]
    return ", ".join(parts) if parts else "0"


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["meta"]["machine"]
    meta = results["meta"]
    lines = [
        f"- **Machine**: {m['cores']} cores, {m['cpu_model']}, {m['memory_gb']:.0f} GB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}.",
        f"- **The load generator shares the machine** with the server under test (same "
        f"{m['cores']} cores): absolute numbers are low and noisy; compare servers within this "
        "run, as ratios.",
        f"- **Run**: {'quick' if meta['quick'] else 'full'}, started {meta['started']}, took "
        f"{meta['elapsed_s'] / 60:.1f} min; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_start'])}.",
        f"- **Tools**: {'; '.join(f'{k}: {v}' for k, v in m['tools'].items()) or 'built-in only'}.",
    ]
    if m["busy_processes_start"]:
        lines.append(f"- **Other busy processes at start** (they skew results): "
                     f"{', '.join(m['busy_processes_start'])}.")
    return [*lines, ""]


def _goals(results: dict[str, Any]) -> list[str]:
    rows = []
    for g in results.get("goals", []):
        verdict = {True: "met", False: "**NOT met**", None: "reported"}[g["met"]]
        ratio = "-" if g["ratio"] is None else f"{g['ratio']:.3f}"
        rows.append([g["goal"], g["measured"], g["target"], ratio, verdict, g["note"]])
    if not rows:
        return ["No goal could be evaluated (the servers or workloads it needs were not run).",
                ""]
    return _table(["goal", "measured", "target", "ratio", "verdict", "note"], rows)


def _workload(results: dict[str, Any], name: str, title: str) -> list[str]:
    rows = [r for r in results.get("throughput", []) if r["workload"] == name]
    if not rows:
        return []
    out = [f"### {name}: {title}", ""]
    measured = [r for r in rows if "rps" in r]
    table = []
    for r in measured:
        lat, res = r["latency_ms"], r["resources"]
        rate = f"{r['rps']:,.0f}" + (f" ({r['mb_per_s']:,.0f} MB/s)" if r["mb_per_s"] > 1 else "")
        table.append([r["server"], rate, _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]),
                      _ms(lat["max"]), _errors(r), str(r["slow_over_5s"]),
                      f"{res['pss_max_mb']:.0f} / {res['pss_mean_mb']:.0f}",
                      f"{res['processes_max']} / {res['threads_max']}",
                      f"{res['cpu_s']:.1f} ({res['cpu_percent']:.0f} %)", r["tool"],
                      f"{r['loadavg_before']:.1f}"])
    if table:
        out += _table(["server", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors",
                       "> 5 s", "PSS max/mean MB", "procs/threads max", "CPU s (%)", "tool",
                       "load1"], table)
    for r in rows:
        if "skipped" in r:
            out.append(f"- {r['server']}: skipped: {r['skipped']}")
        elif "error" in r:
            out.append(f"- {r['server']}: failed: {r['error']}")
        elif r.get("note"):
            out.append(f"- {r['server']}: {r['note']}")
        if r.get("tls"):
            out.append(f"- {r['server']}: negotiated {r['tls']} (a default Python client)")
    if any("skipped" in r or "error" in r or r.get("note") or r.get("tls") for r in rows):
        out.append("")
    out += _cpu(measured, name)
    out += _ratios(measured, name)
    return out


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _cpu(rows: list[dict[str, Any]], name: str) -> list[str]:
    """CPU time per request by role (front process, other server processes, load generator)."""
    table = []
    for r in rows:
        cpu = r.get("cpu_by_role") or {}
        us = cpu.get("per_request_us") or {}
        if not us:
            continue
        churn = (f"{cpu['processes_born']} / {cpu['processes_exited']}"
                 if cpu.get("processes_born") or cpu.get("processes_exited") else "")
        table.append([r["server"], f"{r['rps']:,.0f}", _us(us.get("front")),
                      _us(us.get("children")), _us(us.get("loadgen")),
                      _us(sum(us.values())), churn])
    if not table:
        return []
    return [f"CPU per request for {name} (µs of CPU time, user + system):", "",
            *_table(["server", "req/s", "front µs/req", "children µs/req", "loadgen µs/req",
                     "total µs/req", "procs born / exited"], table)]


def _ratios(rows: list[dict[str, Any]], name: str) -> list[str]:
    mine = [r for r in rows if r["server"].startswith("asyncmpm")]
    peers = [r for r in rows if not r["server"].startswith("asyncmpm") and r["rps"]]
    if not mine or not peers:
        return []
    header = ["asyncmpm ÷ peer (req/s)", *(p["server"] for p in peers)]
    table = [[m["server"], *(f"{m['rps'] / p['rps']:.2f}" for p in peers)] for m in mine]
    return [f"Ratios for {name} (above 1: asyncmpm faster):", "", *_table(header, table)]


def _anchors(results: dict[str, Any]) -> list[str]:
    rows = []
    for server, anchor in ANCHORS_RPS.items():
        row = next((r for r in results.get("throughput", [])
                    if r["server"] == server and r["workload"] == "hello-ka" and "rps" in r),
                   None)
        if row:
            rows.append([server, f"{anchor:,.0f}", f"{row['rps']:,.0f}",
                         f"{row['rps'] / anchor:.2f}"])
    if not rows:
        return []
    return ["### Against the anchors measured earlier (hello keep-alive)", "",
            "How this run's machine compares with the earlier measurement: a ratio far from 1 "
            "means the machine (or its neighbours) differed, which is why goals use same-run "
            "ratios.", "", *_table(["server", "anchor req/s", "this run", "ratio"], rows)]


def _memory(results: dict[str, Any]) -> list[str]:
    rows = results.get("memory", [])
    if not rows:
        return []
    table = [[r["server"], str(r["concurrency"]), f"{r['pss_total_mb']:.1f}",
              f"{r['processes']:.0f}", f"{r['threads']:.0f}", f"{r['children']:.0f}",
              f"{r['child_pss_mb']:.2f}"] for r in rows]
    return ["## Memory vs concurrency", "",
            "Blocking 100 ms requests at each concurrency (so every request really holds a "
            "slot); the tree is sampled after the spare-server policy had "
            f"{results['meta']['plan']['memory']['settle']:.0f} s to settle. PSS splits shared "
            "pages between the processes sharing them, so the total is the tree's real cost. "
            "*child PSS* is the mean over leaf processes (prefork children, worker children, "
            "Apache children).", "", *_img(results, "memory"),
            *_table(["server", "concurrency", "total PSS MB", "processes", "threads",
                     "children", "child PSS MB"], table)]


def _spare(results: dict[str, Any]) -> list[str]:
    runs = results.get("spare", [])
    if not runs:
        return []
    plan = runs[0]["plan"]
    table = []
    for r in runs:
        procs = [s["children"] for s in r["samples"]]
        table.append([r["server"], str(procs[0] if procs else "-"), str(max(procs or [0])),
                      str(procs[-1] if procs else "-"), _ms(r["status_ramp_max_ms"]),
                      _ms(r["status_load_p50_ms"]), _ms(r["status_load_max_ms"]),
                      str(r["status_failed"])])
    return ["## Spare-server dynamics", "",
            f"Idle {plan['idle_before']:.0f} s, then {plan['connections']} concurrent 100 ms "
            f"requests for {plan['load']:.0f} s, then idle {plan['idle_after']:.0f} s; the tree "
            "is sampled every 0.5 s (*children*: the processes that serve requests, not asyncmpm's "
            "main and zygote nor Apache's parent) and `GET /server-status?auto` (a new connection "
            "each time) is "
            "timed every 0.5 s. Same directives for both: StartServers 5, MinSpareServers 5, "
            "MaxSpareServers 10, MaxRequestWorkers 150. *ramp* = the first 5 s of load.", "",
            *_img(results, "spare"),
            *_table(["server", "children at start", "children max", "children at end",
                     "status ramp max ms", "status p50 ms (load)", "status max ms (load)",
                     "status failed"], table)]


def _slowloris(results: dict[str, Any]) -> list[str]:
    rows = results.get("slowloris", [])
    if not rows:
        return []
    r0 = rows[0]
    table = [[r["server"], f"{r['share_within_1s']:.0%}", f"{r['within_1s']}/{r['probes']}",
              str(r["failed"]), _ms(r["latency_p50_ms"]), _ms(r["latency_max_ms"])]
             for r in rows]
    return ["## Slow clients (slowloris)", "",
            f"{r0['connections']} slowloris connections ({r0['attacker']}: each sends one more "
            "header line every 5 s and never finishes its request) while a normal client opens "
            "a new connection for GET /hello every 0.5 s (3 s timeout). Each server's own "
            "header-timeout defaults apply (asyncmpm and Apache: "
            "`RequestReadTimeout header=20-40,MinRate=500`).", "", *_img(results, "slowloris"),
            *_table(["server", "within 1 s", "ok/probes", "failed", "p50 ms", "max ms"],
                        table)]


def _profiles(results: dict[str, Any]) -> list[str]:
    profiles = results.get("profiles", [])
    if not profiles:
        return []
    out = ["## Profiles (py-spy, hello keep-alive, 64 connections)", "",
           "Sampled with `py-spy record --nonblocking --format raw`; *self* is the innermost "
           "frame, *inclusive* counts every frame on the stack. *active* is the share of "
           "samples in which the process was running Python (not idle). Self time in `Runner.run` "
           "is time inside the event loop's native code (uvloop or the selector, and their "
           "system calls), which py-spy charges to the last Python frame; start-up frames "
           "every stack passes through are left out of the inclusive table.", ""]
    for prof in profiles:
        if "skipped" in prof:
            out += [f"- {prof['server']}: skipped: {prof['skipped']}", ""]
            continue
        for role in ("front", "child"):
            data = prof.get(role)
            if not data or "skipped" in data:
                continue
            out += [f"### {prof['server']} — {role} (pid {data['pid']}): {data['samples']} "
                    f"samples, active {data['active_share']:.0%}", ""]
            selfs = [[f"`{r['function']}`", f"{r['share']:.1%}"] for r in data["self"][:10]]
            incl = [[f"`{r['function']}`", f"{r['share']:.1%}"] for r in data["inclusive"][:10]]
            out += _table(["self: function", "share"], selfs)
            out += _table(["inclusive: function", "share"], incl)
    return out


def _servers(results: dict[str, Any]) -> list[str]:
    rows, configs, skipped = [], [], []
    for name, info in results["servers"].items():
        if info.get("skip"):
            skipped.append(f"- {name}: **skipped**: {info['skip']}")
            continue
        rows.append([name, info.get("version", "?"), info["capacity"]])
        if info.get("command"):
            configs += [f"**{name}**", "", "```sh", shlex.join(info["command"]), "```", ""]
        if info.get("config"):
            configs += ["```apache", info["config"].rstrip(), "```", ""]
        if info.get("tls_command"):
            configs += [f"**{name}** over TLS (`hello-tls`; certificate: "
                        f"{info.get('tls_cert', '?')})", "", "```sh",
                        shlex.join(info["tls_command"]), "```", ""]
        if info.get("tls_config"):
            configs += ["```apache", info["tls_config"].rstrip(), "```", ""]
        if info.get("error"):
            configs += [f"Error: {info['error']}", ""]
    out = ["## Servers", "", *_table(["server", "version", "capacity (150 at once)"], rows)]
    if skipped:
        out += [*skipped, ""]
    return [*out, "### Exact configurations", "",
            "Ports are random free ports on 127.0.0.1. No access logs anywhere.", "", *configs]


METHOD = """## How it is measured

- Every server runs `benchmarks/app.py` (asyncmpm, Apache/mod_wsgi, gunicorn, waitress, granian on
  the workloads it takes part in: hello, TLS hello, stream, upload, blocking); uvicorn
  runs its raw ASGI `asgi_hello`, a ceiling for a Python event loop, on the hello workloads only.
- One server at a time; each workload is warmed up with the same load (so spare-server policies
  have grown the tree), then measured. Servers are started once per server for all throughput
  workloads and fresh for the memory, spare-server and profile scenarios.
- HTTP/1.1 load: wrk (2 threads, `--timeout 30s`), its results read from a Lua `done()` hook.
  Errors are wrk's kinds: connect, read, write, timeout, status (= HTTP status >= 400).
- Responses slower than 5 s: wrk leaves nothing out of its histogram below `--timeout` (30 s), so
  the Lua hook counts histogram entries above 5 s and adds wrk's timeouts; wrk cannot see
  requests still in flight when it stops, so the blocking-I/O workload uses the built-in asyncio
  generator, which records every latency (connect included when it reconnects) and counts a
  request still waiting at the end as slow once it has waited 5 s. Like a browser, it retries a
  GET once on a new connection when the server closed an idle keep-alive connection before
  answering (Apache event does so when its workers are busy); such retries are counted in a note,
  their latency includes the failed attempt. wrk does not retry: it counts them as read errors.
- HTTP/2: h2load with prior knowledge (`-c 10 -m 10`), only where the server answers the h2c
  preface with a SETTINGS frame; latency percentiles come from h2load's per-request log.
- Before each server and scenario the run waits (up to 60 s) until other processes use under
  30 % CPU; *load1* is the 1-minute load average just before each measurement (the run's own
  previous load included), a hint for rows measured on a busy machine.
- Resources: the server's whole process tree every 0.5 s; PSS from `/proc/PID/smaps_rollup`,
  processes, threads; CPU seconds summed over every process seen (newcomers count from zero).
- CPU per request by role, from process CPU times (user + system) read at the start and the end
  of the measured window, divided by the requests of that window (for h2load, whose window
  includes its 1 s warm-up, estimated as its measured req/s times the window). *front*: the
  root of the server's tree (asyncmpm's main process, Apache's parent, gunicorn's arbiter,
  granian's supervisor; a single-process server, waitress or uvicorn, is all front).
  *children*: every other process of the tree; processes born in the window count from zero,
  those that exit in it through their parent's `children_user + children_system` growth (less
  what they had used before the window). *loadgen*: wrk or h2load (RUSAGE_CHILDREN of the
  harness, which reaps it) or the built-in generator (the CPU time of the harness thread that
  runs it).
- TLS (`hello-tls`): each TLS-capable server is started a second time, serving HTTPS only with a
  self-signed P-256 certificate made in its temp directory; wrk does not verify it. The
  negotiated protocol and cipher are noted per row.
"""


def render(results: dict[str, Any]) -> str:
    out = ["# asyncmpm benchmarks", "", *_machine(results), "## Goals", "", *_goals(results)]
    names = [r["server"] for r in results.get("throughput", [])]
    mine = [primary(names, "prefork"), primary(names, "worker")]
    if any(mine):
        out += [f"Goals speak for {' and '.join(n for n in mine if n)} (asyncmpm's default "
                "loop when installed); the tables below show every variant.", ""]
    charts = [c for c in ("throughput", "latency", "resources") if c in results["charts"]]
    out += ["## Throughput", "", *(f"![{c}]({c}.png)" for c in charts), ""]
    for w in WORKLOADS:
        out += _workload(results, w.name, w.title)
    out += _anchors(results)
    out += _memory(results) + _spare(results) + _slowloris(results) + _profiles(results)
    out += [*_servers(results), METHOD]
    if results["meta"].get("notes"):
        out += ["## Notes", "", *(f"- {n}" for n in results["meta"]["notes"]), ""]
    return "\n".join(out).rstrip() + "\n"


def write(results: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "report.md"
    path.write_text(render(results))
    return path


def main(argv: list[str]) -> int:
    from benchmarks import charts

    out_dir = Path(argv[0]) if argv else Path(__file__).parent / "results" / "latest"
    results = json.loads((out_dir / "results.json").read_text())
    results["goals"] = evaluate(results)
    results["charts"] = [p.stem for p in charts.draw_all(results, out_dir)]
    print(write(results, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
