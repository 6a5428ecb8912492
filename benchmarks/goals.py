"""The issue's goals, judged from one run's results as ratios against peers measured beside them.

Timings are never asserted anywhere (a test would only measure the machine's mood); they are
reported, with the ratio that says how far from the goal a run landed.
"""

from __future__ import annotations

from typing import Any

# Measured earlier on this kind of machine (shared/README.md), for orientation only.
ANCHORS_RPS = {"apache-worker": 11600.0, "apache-prefork": 9100.0, "gunicorn-sync": 7500.0,
               "gunicorn-gthread": 5600.0, "uvicorn-asgi": 30000.0}
ANCHOR_CHILD_PSS_MB = 4.2
LOOP_PREFERENCE = ("uvloop", "asyncio", "trio")


def primary(names: list[str], mpm: str) -> str | None:
    """The asyncmpm variant the goals speak for: asyncio+uvloop (its default), else the next."""
    for loop in LOOP_PREFERENCE:
        name = f"asyncmpm-{mpm}-{loop}"
        if name in names:
            return name
    return None


def _throughput(results: dict[str, Any], server: str | None, workload: str) -> dict[str, Any]:
    for row in results.get("throughput", []):
        if row["server"] == server and row["workload"] == workload and "rps" in row:
            return dict(row)
    return {}


def _row(goal: str, measured: str, target: str, ratio: float | None, met: bool | None,
         note: str = "") -> dict[str, Any]:
    return {"goal": goal, "measured": measured, "target": target, "ratio": ratio, "met": met,
            "note": note}


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    names = [row["server"] for row in results.get("throughput", [])]
    names += [row["server"] for row in results.get("memory", [])]
    names += [row["server"] for row in results.get("spare", [])]
    mine = {mpm: primary(names, mpm) for mpm in ("prefork", "worker")}
    rows: list[dict[str, Any]] = []

    for server in mine.values():
        ours = _throughput(results, server, "hello-ka")
        for peer in ("apache-prefork", "apache-worker"):
            theirs = _throughput(results, peer, "hello-ka")
            if ours and theirs and theirs["rps"]:
                ratio = ours["rps"] / theirs["rps"]
                rows.append(_row(f"hello keep-alive: {server} >= {peer}",
                                 f"{ours['rps']:,.0f} req/s", f">= {theirs['rps']:,.0f} req/s",
                                 ratio, ratio >= 1.0))

    for server in mine.values():
        ours = _throughput(results, server, "blocking")
        if ours:
            rows.append(_row(f"blocking I/O: {server}, responses slower than 5 s",
                             f"{ours['slow_over_5s']} of {ours['requests']:,}", "0",
                             ours["slow_over_5s"] / max(1, ours["requests"]),
                             ours["slow_over_5s"] == 0, "ratio = share of responses > 5 s"))

    for server in mine.values():
        slow = next((r for r in results.get("slowloris", []) if r["server"] == server), None)
        if slow and slow["probes"]:
            share = slow["share_within_1s"]
            rows.append(_row(f"slowloris ({slow['connections']} conns): {server}, "
                             "normal requests within 1 s", f"{share:.0%} of {slow['probes']}",
                             ">= 95%", share / 0.95, share >= 0.95))

    server = mine["prefork"]
    top = _memory_top(results, server)
    apache = _memory_top(results, "apache-prefork")
    if top:
        target = apache["child_pss_mb"] if apache else ANCHOR_CHILD_PSS_MB
        source = "Apache prefork, same run" if apache else "anchor measured earlier"
        rows.append(_row(f"prefork child PSS: {server} <= Apache prefork's",
                         f"{top['child_pss_mb']:.2f} MB", f"<= {target:.2f} MB ({source})",
                         top["child_pss_mb"] / target, top["child_pss_mb"] <= target,
                         f"mean PSS of a child at concurrency {top['concurrency']}"))

    spare = next((r for r in results.get("spare", []) if r["server"] == server), None)
    if spare and spare.get("status_ramp_max_ms") is not None:
        worst = spare["status_ramp_max_ms"]
        rows.append(_row(f"status page during a ramp: {server}, slowest GET ?auto",
                         f"{worst:.1f} ms", "< 100 ms", worst / 100, worst < 100,
                         f"{spare['status_failed']} probe(s) failed"))
    return rows


def _memory_top(results: dict[str, Any], server: str | None) -> dict[str, Any] | None:
    rows = [r for r in results.get("memory", []) if r["server"] == server and r["children"]]
    return max(rows, key=lambda r: int(r["concurrency"])) if rows else None
