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


BLOCKING_IDEAL_RPS = 150 / 0.050  # 150 slots, each busy 50 ms per request
MPM_PEER = {"prefork": "apache-prefork", "worker": "apache-worker"}


def _ratio_goal(rows: list[dict[str, Any]], results: dict[str, Any], server: str | None,
                peer: str, workload: str, label: str, target: float | None,
                note: str = "", key: str = "rps") -> None:
    """Append `server` ÷ `peer` on `workload` as a goal (target None: reported only)."""
    ours, theirs = _throughput(results, server, workload), _throughput(results, peer, workload)
    if not (ours and theirs and theirs[key]):
        return
    ratio = ours[key] / theirs[key]
    unit = "MB/s" if key == "mb_per_s" else "req/s"
    want = f">= {target:.2f}x {peer}" if target is not None else f"reported (vs {peer})"
    rows.append(_row(f"{label}: {server} vs {peer}",
                     f"{ours[key]:,.0f} vs {theirs[key]:,.0f} {unit}", want, ratio,
                     None if target is None else ratio >= target, note))


def _loops(results: dict[str, Any], mpm: str) -> dict[str, tuple[float, float]]:
    """trio and asyncio req/s of one MPM on every workload both ran."""
    out = {}
    for row in results.get("throughput", []):
        if row["server"] == f"asyncmpm-{mpm}-trio" and "rps" in row:
            base = _throughput(results, f"asyncmpm-{mpm}-asyncio", row["workload"])
            if base and base["rps"]:
                out[row["workload"]] = (float(row["rps"]), float(base["rps"]))
    return out


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    names = [row["server"] for row in results.get("throughput", [])]
    names += [row["server"] for row in results.get("memory", [])]
    names += [row["server"] for row in results.get("spare", [])]
    mine = {mpm: primary(names, mpm) for mpm in ("prefork", "worker")}
    rows: list[dict[str, Any]] = []

    for mpm, server in mine.items():
        _ratio_goal(rows, results, server, MPM_PEER[mpm], "hello-ka", "hello keep-alive", 2.0)
    for server in mine.values():
        _ratio_goal(rows, results, server, "granian", "hello-ka", "hello keep-alive", 0.5,
                    "reported; 0.5x is the goal beyond")
    for server in mine.values():
        _ratio_goal(rows, results, server, "apache-worker", "hello-close",
                    "hello without keep-alive", 1.5)
    for workload, label in (("stream", "10 MB streamed response"), ("upload", "10 MB upload")):
        for server in mine.values():
            _ratio_goal(rows, results, server, "apache-worker", workload, label, 1.0,
                        key="mb_per_s")

    server = mine["prefork"]
    ours = _throughput(results, server, "blocking")
    if ours:
        ratio = ours["rps"] / BLOCKING_IDEAL_RPS
        rows.append(_row(f"blocking I/O: {server} vs the {BLOCKING_IDEAL_RPS:,.0f} req/s ideal, "
                         "no response over 5 s",
                         f"{ours['rps']:,.0f} req/s; {ours['slow_over_5s']} of "
                         f"{ours['requests']:,} over 5 s",
                         f">= 0.97x ({0.97 * BLOCKING_IDEAL_RPS:,.0f} req/s) and 0 over 5 s",
                         ratio, ratio >= 0.97 and ours["slow_over_5s"] == 0,
                         "ideal = 150 slots / 50 ms"))
    ours = _throughput(results, mine["worker"], "blocking")
    if ours:
        rows.append(_row(f"blocking I/O: {mine['worker']}, responses slower than 5 s",
                         f"{ours['slow_over_5s']} of {ours['requests']:,} "
                         f"({ours['rps']:,.0f} req/s)", "0",
                         ours["slow_over_5s"] / max(1, ours["requests"]),
                         ours["slow_over_5s"] == 0, "ratio = share of responses > 5 s"))

    for server in mine.values():
        _ratio_goal(rows, results, server, "apache-worker", "h2", "HTTP/2 h2c -c10 -m10", 1.0)
    for server in mine.values():
        _ratio_goal(rows, results, server, "apache-worker", "hello-tls", "TLS hello keep-alive",
                    None)
    for server in mine.values():
        _ratio_goal(rows, results, server, "granian", "hello-tls", "TLS hello keep-alive", None)

    for mpm in ("prefork", "worker"):
        pairs = _loops(results, mpm)
        if pairs:
            ratios = {w: trio / base for w, (trio, base) in pairs.items()}
            worst = min(ratios, key=lambda w: ratios[w])
            rows.append(_row(f"trio vs asyncio (no uvloop), {mpm}, every workload both ran",
                             ", ".join(f"{w} {r:.2f}" for w, r in ratios.items()),
                             ">= 0.80x on each", ratios[worst], ratios[worst] >= 0.8,
                             f"ratio = the worst workload ({worst})"))

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
