"""Runs servers x workloads one server at a time and writes results.json, report.md and charts.

results.json is rewritten after every server, so an interrupted run still leaves its data.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import goals, machine, report
from benchmarks.load import Tools
from benchmarks.profiles import profile
from benchmarks.scenarios import (
    MemoryPlan,
    SlowPlan,
    SparePlan,
    memory_curve,
    slow_clients,
    spare_dynamics,
)
from benchmarks.servers import RunningServer, ServerSpec, by_name, serve, version_of
from benchmarks.workloads import WORKLOADS, Timing, Workload, measure, plan_skip

SCENARIOS = ("memory", "spare", "slowloris")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    quick: bool
    servers: tuple[ServerSpec, ...]
    workloads: tuple[str, ...]
    timing: Timing
    memory: MemoryPlan
    spare: SparePlan
    slow: SlowPlan
    profile: bool
    profile_seconds: float
    tools: Tools

    @classmethod
    def make(cls, *, quick: bool, servers: tuple[ServerSpec, ...], workloads: tuple[str, ...],
             profile: bool, tools: Tools) -> Plan:
        if quick:
            return cls(quick, servers, workloads, Timing(0.5, 2.0),
                       MemoryPlan((1, 10, 50), settle=2.0, sample=1.0), SparePlan(1.0, 4.0, 2.0),
                       SlowPlan(400, ramp=2.0, probe=3.0), profile, 3.0, tools)
        return cls(quick, servers, workloads, Timing(1.5, 4.0),
                   MemoryPlan((1, 10, 50, 100, 150), settle=6.0, sample=2.0),
                   SparePlan(3.0, 15.0, 10.0), SlowPlan(400, ramp=3.0, probe=10.0), profile,
                   8.0, tools)


@dataclass
class Run:
    plan: Plan
    out: Path
    results: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = time.monotonic() - self.started
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))

    def note(self, text: str) -> None:
        print(f"[benchmarks] {text}", flush=True)

    def describe(self, server: RunningServer) -> None:
        info = self.results["servers"][server.spec.name]
        if server.tls:
            info.update(tls_command=server.command, tls_config=server.config,
                        tls_cert=server.tls.made_by)
        else:
            info.update(command=server.command, config=server.config, start_s=server.started_s)

    def quiet(self, what: str) -> None:
        """Wait for other processes to leave the CPU alone; note it when they would not."""
        waited, used = machine.wait_quiet()
        if waited > 2 or used >= 30:
            text = (f"before {what}: waited {waited:.0f} s for other processes to go quiet; "
                    f"they still used {used:.0f} % CPU" if used >= 30 else
                    f"before {what}: waited {waited:.0f} s for other processes to go quiet")
            self.results["meta"]["notes"].append(text)
            self.note(text)

    def guarded(self, what: str, action: Callable[[], None]) -> None:
        """Run one step; a failure is recorded and the run goes on with the next step."""
        try:
            action()
        except Exception as exc:
            self.note(f"{what} failed: {exc}")
            self.results["failures"].append({"what": what, "error": repr(exc),
                                             "traceback": traceback.format_exc()})


def _primary_specs(plan: Plan, families: tuple[str, ...]) -> list[ServerSpec]:
    """One asyncmpm variant per MPM (uvloop first) plus the named Apache servers, if chosen."""
    chosen = [s.name for s in plan.servers if s.skip_reason() is None]
    names = [goals.primary(chosen, "prefork"), goals.primary(chosen, "worker")]
    names += [n for n in families if n in chosen]
    return [by_name(n) for n in names if n]


def _measure_all(run: Run, server: RunningServer, workloads: list[Workload]) -> None:
    spec = server.spec
    for workload in workloads:
        run.note(f"{spec.name}: {workload.name}")

        def one(w: Workload = workload) -> None:
            row = measure(server, w, run.plan.tools, run.plan.timing)
            run.results["throughput"].append(row)
            if "rps" in row:
                us = row["cpu_by_role"]["per_request_us"]
                cpu = (f", CPU/request front {us['front']:.0f} us, children "
                       f"{us['children']:.0f} us, loadgen {us['loadgen']:.0f} us" if us else "")
                run.note(f"  {row['rps']:,.0f} req/s, p99 {row['latency_ms']['p99']:.1f} ms,"
                         f" errors {row['errors_total']}, >5 s {row['slow_over_5s']}{cpu}")
            else:
                run.note(f"  skipped: {row['skipped']}")

        run.guarded(f"{spec.name} {workload.name}", one)
        if server.proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited (status {server.proc.returncode})")


def _throughput_session(run: Run, spec: ServerSpec) -> None:
    """The plain-HTTP workloads on one server, then the TLS ones on a second one with a
    certificate (so the plain runs are configured exactly as without TLS)."""
    plan = run.plan
    chosen = [w for w in WORKLOADS if w.name in plan.workloads]
    plain = [w for w in chosen if not w.tls]
    secure = []
    for workload in (w for w in chosen if w.tls):
        reason = plan_skip(spec, workload, plan.tools)
        if reason:
            run.results["throughput"].append({"server": spec.name, "workload": workload.name,
                                              "skipped": reason})
            run.note(f"{spec.name}: {workload.name} skipped: {reason}")
        else:
            secure.append(workload)
    if plain or "slowloris" in plan.workloads:
        with serve(spec, run.logs) as server:
            run.describe(server)
            _measure_all(run, server, plain)
            if "slowloris" in plan.workloads:
                run.note(f"{spec.name}: slowloris")

                def attack() -> None:
                    row = slow_clients(server, plan.tools, plan.slow, run.logs)
                    run.results["slowloris"].append(row)
                    run.note(f"  {row['share_within_1s']:.0%} of {row['probes']} normal "
                             "requests within 1 s")

                run.guarded(f"{spec.name} slowloris", attack)
    if secure:
        with serve(spec, run.logs, tls=True) as server:
            run.describe(server)
            _measure_all(run, server, secure)


def execute(plan: Plan, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    run = Run(plan, out)
    run.results = {
        "meta": {"started": dt.datetime.now().isoformat(timespec="seconds"), "quick": plan.quick,
                 "machine": machine.describe(plan.tools), "elapsed_s": 0.0, "notes": [],
                 "plan": {"timing": asdict(plan.timing), "memory": asdict(plan.memory),
                          "spare": asdict(plan.spare), "slow": asdict(plan.slow),
                          "workloads": list(plan.workloads)}},
        "servers": {}, "throughput": [], "memory": [], "spare": [], "slowloris": [],
        "profiles": [], "failures": [], "goals": [], "charts": [],
    }
    notes = run.results["meta"]["notes"]
    if not plan.tools.wrk:
        notes.append("wrk is not installed: the built-in asyncio generator measured everything "
                     "(it is much slower than wrk and takes more of the CPU).")
    if not plan.tools.slowhttptest and "slowloris" in plan.workloads:
        notes.append("slowhttptest is not installed: the built-in slowloris was used.")
    for spec in plan.servers:
        reason = spec.skip_reason()
        run.results["servers"][spec.name] = {"family": spec.family, "mpm": spec.mpm,
                                             "loop": spec.loop, "capacity": spec.capacity,
                                             "skip": reason}
        if reason:
            run.note(f"{spec.name}: skipped ({reason})")
            continue
        run.results["servers"][spec.name]["version"] = version_of(spec)
        run.quiet(spec.name)
        run.guarded(spec.name, lambda s=spec: _throughput_session(run, s))  # type: ignore[misc]
        run.save()

    if "memory" in plan.workloads:
        for spec in _primary_specs(plan, ("apache-prefork", "apache-worker")):
            run.note(f"{spec.name}: memory vs concurrency")
            run.quiet(f"{spec.name} memory vs concurrency")

            def curve(s: ServerSpec = spec) -> None:
                with serve(s, run.logs) as server:
                    run.describe(server)
                    run.results["memory"] += memory_curve(server, plan.tools, plan.memory,
                                                          run.logs)

            run.guarded(f"{spec.name} memory", curve)
        run.save()

    if "spare" in plan.workloads:
        specs = [s for s in _primary_specs(plan, ("apache-prefork",)) if s.mpm == "prefork"]
        for spec in specs:
            run.note(f"{spec.name}: spare-server dynamics")
            run.quiet(f"{spec.name} spare-server dynamics")

            def step(s: ServerSpec = spec) -> None:
                with serve(s, run.logs) as server:
                    run.results["spare"].append(spare_dynamics(server, plan.tools, plan.spare,
                                                               run.logs))

            run.guarded(f"{spec.name} spare", step)
        run.save()

    if plan.profile:
        for spec in _primary_specs(plan, ()):
            run.note(f"{spec.name}: py-spy profile")
            run.quiet(f"{spec.name} py-spy profile")

            def prof(s: ServerSpec = spec) -> None:
                with serve(s, run.logs) as server:
                    run.results["profiles"].append(profile(server, plan.tools,
                                                           plan.profile_seconds, run.logs))

            run.guarded(f"{spec.name} profile", prof)

    run.results["goals"] = goals.evaluate(run.results)
    try:
        from benchmarks import charts
    except ImportError as exc:
        notes.append(f"no charts: matplotlib is not importable ({exc})")
    else:
        run.results["charts"] = [p.stem for p in charts.draw_all(run.results, out)]
    run.save()
    report.write(run.results, out)
    return run.results


def default_out() -> Path:
    return RESULTS / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def publish_latest(out: Path) -> Path:
    """Copy a finished run to results/latest (a copy, not a symlink, so it can be committed)."""
    latest = RESULTS / "latest"
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():
        shutil.rmtree(latest)
    shutil.copytree(out, latest, copy_function=_copy_trimmed)
    return latest


def _copy_trimmed(src: str, dst: str, keep: int = 64 * 1024) -> None:
    """Copy a file; a log past 2 x `keep` bytes keeps only its head and tail (waitress logs a
    queue-depth warning per request under load: megabytes nobody reads)."""
    path = Path(src)
    if path.parent.name != "logs" or path.stat().st_size <= 2 * keep:
        shutil.copy2(src, dst)
        return
    data = path.read_bytes()
    skipped = len(data) - 2 * keep
    Path(dst).write_bytes(data[:keep] + f"\n[... {skipped} bytes left out ...]\n".encode()
                          + data[-keep:])
