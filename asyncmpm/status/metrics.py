"""Prometheus metrics: cheap counters on the request path, everything else read at scrape time.

The request path only bumps integers (a status class, a byte count, one histogram bucket).
Scoreboard figures, queue length and supervisor counters are read from their owners when
Prometheus scrapes, through a custom collector, so they cost nothing between scrapes.
Rendering uses ``prometheus_client``'s exposition code.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from asyncmpm.supervisor.scoreboard import ScoreboardSnapshot, SlotState

__all__ = ["CONTENT_TYPE", "RequestMetrics", "SupervisorCounters", "render"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class SupervisorCounters(Protocol):
    spawns: int
    retirements: int
    crashes: int
    timeouts: int
    restarts: int


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


@dataclass(slots=True)
class RequestMetrics:
    """Per-request counters kept by the front loop."""

    requests: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    duration: _Histogram = field(default_factory=lambda: _Histogram(DURATION_BUCKETS))
    queue_wait: _Histogram = field(default_factory=lambda: _Histogram(WAIT_BUCKETS))

    connections: dict[str, int] = field(default_factory=dict)  # by protocol, ever opened
    open_connections: dict[str, int] = field(default_factory=dict)
    h2_streams: int = 0

    def connection_opened(self, protocol: str) -> None:
        self.connections[protocol] = self.connections.get(protocol, 0) + 1
        self.open_connections[protocol] = self.open_connections.get(protocol, 0) + 1

    def connection_closed(self, protocol: str) -> None:
        self.open_connections[protocol] -= 1

    def observe(self, status: int, body_bytes: int, seconds: float) -> None:
        klass = f"{status // 100}xx"
        self.requests[klass] = self.requests.get(klass, 0) + 1
        self.bytes[klass] = self.bytes.get(klass, 0) + body_bytes
        self.duration.observe(seconds)


class _Collector(Collector):
    def __init__(self, snapshot: ScoreboardSnapshot, requests: RequestMetrics,
                 supervisor: SupervisorCounters) -> None:
        self.snapshot = snapshot
        self.requests = requests
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield GaugeMetricFamily("asyncmpm_busy_workers", "Slots serving a request (mod_status "
                                "BusyWorkers).", value=snap.busy_workers)
        yield GaugeMetricFamily("asyncmpm_idle_workers", "Idle slots of the current generation "
                                "(mod_status IdleWorkers).", value=snap.idle_workers)
        states = GaugeMetricFamily("asyncmpm_slots", "Scoreboard slots by state.",
                                   labels=["state"])
        counts = dict.fromkeys(SlotState, 0)
        for proc in snap.processes:
            for thread in proc.threads:
                counts[thread.state] += 1
        for state, count in counts.items():
            states.add_metric([state.name.lower()], count)
        yield states
        procs = GaugeMetricFamily("asyncmpm_processes", "Child processes by generation.",
                                  labels=["generation"])
        by_gen: dict[int, int] = {}
        for proc in snap.processes:
            if proc.pid:
                by_gen[proc.generation] = by_gen.get(proc.generation, 0) + 1
        for gen, count in sorted(by_gen.items()):
            procs.add_metric([str(gen)], count)
        yield procs
        yield GaugeMetricFamily("asyncmpm_generation", "Current generation (restarts).",
                                value=snap.generation)
        yield GaugeMetricFamily("asyncmpm_queued_requests", "Requests waiting for a free slot.",
                                value=snap.queued_requests)
        requests = CounterMetricFamily("asyncmpm_requests", "Requests answered, by status "
                                       "class.", labels=["status"])
        sent = CounterMetricFamily("asyncmpm_response_body_bytes", "Response body bytes, by "
                                   "status class.", labels=["status"])
        for klass in sorted(self.requests.requests):
            requests.add_metric([klass], self.requests.requests[klass])
            sent.add_metric([klass], self.requests.bytes[klass])
        yield requests
        yield sent
        opened = CounterMetricFamily("asyncmpm_connections", "Client connections accepted, "
                                     "by protocol (http/1.1, h2 over TLS, h2c).",
                                     labels=["protocol"])
        current = GaugeMetricFamily("asyncmpm_open_connections", "Client connections open "
                                    "now, by protocol.", labels=["protocol"])
        for protocol in sorted(self.requests.connections):
            opened.add_metric([protocol], self.requests.connections[protocol])
            current.add_metric([protocol], self.requests.open_connections[protocol])
        yield opened
        yield current
        yield CounterMetricFamily("asyncmpm_http2_streams", "HTTP/2 streams (requests) "
                                  "received.", value=self.requests.h2_streams)
        yield self.requests.duration.family("asyncmpm_request_duration_seconds",
                                            "Time from request head to the end of the response.")
        yield self.requests.queue_wait.family("asyncmpm_queue_wait_seconds",
                                              "Time queued requests waited for a slot.")
        sup = self.supervisor
        for name, value, doc in (
            ("spawns", sup.spawns, "Children started."),
            ("retirements", sup.retirements, "Children retired gracefully (spare servers, "
             "MaxConnectionsPerChild, restarts)."),
            ("crashes", sup.crashes, "Children that died unexpectedly."),
            ("timeouts", sup.timeouts, "Requests that ran past Timeout (504)."),
            ("restarts", sup.restarts, "Restarts (graceful or not)."),
        ):
            yield CounterMetricFamily(f"asyncmpm_{name}", doc, value=value)


def render(snapshot: ScoreboardSnapshot, requests: RequestMetrics,
           supervisor: SupervisorCounters) -> bytes:
    """The Prometheus text exposition of everything above."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot, requests, supervisor))
    return generate_latest(registry)
