"""python -m benchmarks [--quick] [--servers ...] [--workloads ...] [--out DIR] [--profile]"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

from benchmarks.load import Tools
from benchmarks.runner import SCENARIOS, Plan, default_out, execute, publish_latest
from benchmarks.servers import SERVERS, ServerSpec
from benchmarks.workloads import WORKLOAD_NAMES

ALL_WORKLOADS = (*WORKLOAD_NAMES, *SCENARIOS)


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def _servers(patterns: list[str]) -> tuple[ServerSpec, ...]:
    if not patterns:
        return SERVERS
    chosen = [s for s in SERVERS if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(s.name, p) for s in SERVERS)]
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(unknown)}; "
                         f"known: {', '.join(s.name for s in SERVERS)}")
    return tuple(chosen)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare asyncmpm with Apache httpd + mod_wsgi, gunicorn, waitress, granian "
                    "and uvicorn: servers x workloads, one server at a time.")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds per case (for tests and smoke runs)")
    parser.add_argument("--servers", action="append", metavar="NAMES",
                        help="comma-separated names or globs, e.g. 'asyncmpm-*-uvloop,apache-*' "
                             "[default: all]")
    parser.add_argument("--workloads", action="append", metavar="NAMES",
                        help=f"comma-separated, from: {', '.join(ALL_WORKLOADS)} [default: all]")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="results folder [default: benchmarks/results/<timestamp>, copied "
                             "to benchmarks/results/latest]")
    parser.add_argument("--profile", action="store_true",
                        help="also py-spy the asyncmpm front loop and a child under hello load")
    parser.add_argument("--load-tool", choices=("auto", "builtin"), default="auto",
                        help="builtin: use the built-in generator even when wrk is installed")
    parser.add_argument("--list", action="store_true", help="list servers and workloads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for spec in SERVERS:
            reason = spec.skip_reason()
            print(f"{spec.name:26} {spec.capacity:34} {'' if reason is None else reason}")
        print("workloads:", ", ".join(ALL_WORKLOADS))
        return 0
    workloads = tuple(_names(args.workloads)) or ALL_WORKLOADS
    unknown = [w for w in workloads if w not in ALL_WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(unknown)}; "
                         f"known: {', '.join(ALL_WORKLOADS)}")
    tools = Tools.detect()
    if args.load_tool == "builtin":
        tools = Tools(None, tools.h2load, None, tools.py_spy)
    plan = Plan.make(quick=args.quick, servers=_servers(_names(args.servers)),
                     workloads=workloads, profile=args.profile, tools=tools)
    out = args.out or default_out()
    results = execute(plan, out)
    print(f"[benchmarks] report: {out / 'report.md'}")
    if args.out is None:
        print(f"[benchmarks] copied to {publish_latest(out)}")
    for goal in results["goals"]:
        ratio = "" if goal["ratio"] is None else f" (ratio {goal['ratio']:.2f})"
        verdict = {True: "met", False: "NOT met", None: "reported"}[goal["met"]]
        print(f"[benchmarks] goal: {goal['goal']}: {goal['measured']}, target "
              f"{goal['target']}{ratio}: {verdict}")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
