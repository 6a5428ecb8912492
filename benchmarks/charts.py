"""PNG charts of a run (matplotlib, Agg backend: no display needed). Small on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on a server
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

DPI = 80
TRANSFERS = ("stream", "upload")
COLORS = {"asyncmpm": "#1f77b4", "apache": "#d62728", "gunicorn": "#2ca02c",
          "waitress": "#9467bd", "uvicorn": "#7f7f7f", "granian": "#ff7f0e"}


def _color(server: str) -> str:
    return COLORS.get(server.split("-")[0], "#333333")


def _bars(ax: Axes, rows: list[tuple[str, float]], title: str, unit: str) -> None:
    names = [n for n, _ in rows]
    values = [v for _, v in rows]
    ax.barh(names, values, color=[_color(n) for n in names])
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.0f}" if v >= 10 else f" {v:.2f}", va="center", fontsize=6)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def throughput(results: dict[str, Any], out: Path) -> Path | None:
    """Requests/s per server for each workload (MB/s for the large transfers)."""
    workloads: dict[str, list[tuple[str, float]]] = {}
    for row in results.get("throughput", []):
        if "rps" in row:
            value = row["mb_per_s"] if row["workload"] in TRANSFERS else row["rps"]
            workloads.setdefault(row["workload"], []).append((row["server"], float(value)))
    if not workloads:
        return None
    cols = 2 if len(workloads) > 1 else 1
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 0.25 * 14 * rows + 0.6),
                             squeeze=False)
    for ax, (name, data) in zip(axes.flat, workloads.items(), strict=False):
        unit = "MB/s" if name in TRANSFERS else "requests/s"
        _bars(ax, data, name, unit)
    for ax in list(axes.flat)[len(workloads):]:
        ax.set_visible(False)
    return _save(fig, out / "throughput.png")


def latency(results: dict[str, Any], out: Path) -> Path | None:
    """p50 and p99 latency per server, hello keep-alive and blocking I/O (log scale)."""
    chosen = [w for w in ("hello-ka", "blocking", "cpu")
              if any(r["workload"] == w and "rps" in r for r in results.get("throughput", []))]
    if not chosen:
        return None
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.6 * len(chosen), 4.2), squeeze=False)
    for ax, name in zip(axes.flat, chosen, strict=True):
        rows = [r for r in results["throughput"] if r["workload"] == name and "rps" in r]
        names = [r["server"] for r in rows]
        ys = range(len(rows))
        ax.barh([y - 0.2 for y in ys], [max(r["latency_ms"]["p50"], 0.01) for r in rows],
                height=0.4, label="p50", color="#aec7e8")
        ax.barh([y + 0.2 for y in ys], [max(r["latency_ms"]["p99"], 0.01) for r in rows],
                height=0.4, label="p99", color="#1f77b4")
        ax.set_yticks(list(ys), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)", fontsize=8)
        ax.set_title(f"latency: {name}", fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, out / "latency.png")


def resources(results: dict[str, Any], out: Path) -> Path | None:
    """Peak PSS and CPU per server under hello keep-alive and blocking I/O."""
    chosen = [w for w in ("hello-ka", "blocking")
              if any(r["workload"] == w and "rps" in r for r in results.get("throughput", []))]
    if not chosen:
        return None
    fig, axes = plt.subplots(len(chosen), 2, figsize=(10, 3.6 * len(chosen)), squeeze=False)
    for (left, right), name in zip(axes, chosen, strict=True):
        rows = [r for r in results["throughput"] if r["workload"] == name and "rps" in r]
        _bars(left, [(r["server"], r["resources"]["pss_max_mb"]) for r in rows],
              f"{name}: peak PSS of the process tree", "MB")
        _bars(right, [(r["server"], r["resources"]["cpu_percent"]) for r in rows],
              f"{name}: CPU of the process tree", "% of one core")
    return _save(fig, out / "resources.png")


def memory(results: dict[str, Any], out: Path) -> Path | None:
    """Total PSS against concurrency (blocking 100 ms requests)."""
    rows = results.get("memory", [])
    if not rows:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for server in dict.fromkeys(r["server"] for r in rows):
        mine = sorted((r for r in rows if r["server"] == server), key=lambda r: r["concurrency"])
        xs = [r["concurrency"] for r in mine]
        style = "-" if server.startswith("asyncmpm") else "--"
        left.plot(xs, [r["pss_total_mb"] for r in mine], style, marker="o", label=server)
        right.plot(xs, [r["processes"] for r in mine], style, marker="o", label=server)
    left.set_title("total PSS of the tree vs concurrency", fontsize=9)
    left.set_xlabel("concurrent 100 ms requests", fontsize=8)
    left.set_ylabel("MB", fontsize=8)
    right.set_title("processes vs concurrency", fontsize=9)
    right.set_xlabel("concurrent 100 ms requests", fontsize=8)
    for ax in (left, right):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, out / "memory.png")


def spare(results: dict[str, Any], out: Path) -> Path | None:
    """Processes over a load step, and how long the status page took to answer."""
    runs = results.get("spare", [])
    if not runs:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for run in runs:
        xs = [s["t"] for s in run["samples"]]
        top.plot(xs, [s["children"] for s in run["samples"]], label=run["server"])
        ok = [p for p in run["status_probes"] if p["ms"] is not None]
        bottom.plot([p["t"] for p in ok], [p["ms"] for p in ok], ".", label=run["server"])
    plan = runs[0]["plan"]
    for ax in (top, bottom):
        ax.axvspan(plan["idle_before"], plan["idle_before"] + plan["load"], color="#ffdd88",
                   alpha=0.3, label=f"{plan['connections']} concurrent 100 ms requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    top.set_ylabel("child processes", fontsize=8)
    top.set_title("spare-server dynamics (StartServers 5, MinSpare 5, MaxSpare 10)", fontsize=9)
    bottom.set_ylabel("GET /server-status?auto, ms", fontsize=8)
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds", fontsize=8)
    return _save(fig, out / "spare.png")


def slowloris(results: dict[str, Any], out: Path) -> Path | None:
    rows = results.get("slowloris", [])
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
    _bars(ax, [(r["server"], 100 * r["share_within_1s"]) for r in rows],
          "normal requests answered within 1 s under slowloris", "%")
    ax.axvline(95, color="black", linestyle=":", linewidth=1)
    return _save(fig, out / "slowloris.png")


def draw_all(results: dict[str, Any], out: Path) -> list[Path]:
    drawn = [chart(results, out) for chart in (throughput, latency, resources, memory, spare,
                                               slowloris)]
    return [p for p in drawn if p is not None]
