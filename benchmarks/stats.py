"""Result records shared by every load tool, so the report treats wrk, h2load and ours alike."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

ERROR_KINDS = ("connect", "read", "write", "timeout", "status")


@dataclass
class Latency:
    """Milliseconds."""

    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    mean: float = 0.0


@dataclass
class LoadResult:
    tool: str
    requests: int
    duration_s: float
    body_bytes: int
    latency: Latency
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    slow_over_5s: int = 0
    note: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(tool: str, latencies_s: Sequence[float], duration_s: float, body_bytes: int,
              errors: dict[str, int], slow: int, note: str = "") -> LoadResult:
    ordered = sorted(latencies_s)
    ms = [x * 1000 for x in ordered]
    latency = Latency(percentile(ms, 50), percentile(ms, 90), percentile(ms, 99),
                      ms[-1] if ms else 0.0, sum(ms) / len(ms) if ms else 0.0)
    return LoadResult(tool, len(ordered), duration_s, body_bytes, latency,
                      {k: errors.get(k, 0) for k in ERROR_KINDS}, slow, note)
