"""Capacity search: the largest number of concurrent streams whose p95 chunk latency meets a target with no drops.

The search is independent of how a trial runs: ``trial(n)`` plays ``n`` concurrent clients and returns anything;
``summary_of(result)`` gives its numbers (``latency_ms.{p50,p95,p99}``, ``batch_utilization``, ``dropped_chunks``).
It grows the count by about 1.5× (multiples of 8) from ``start`` until a count misses the target or passes
``limit``, then bisects between the last count that held and the first that missed, to 8 streams.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class TrialPoint:
    """One trial's numbers in the search (milliseconds)."""

    streams: int
    p50: float
    p95: float
    p99: float
    batch_utilization: float
    dropped_chunks: int
    holds: bool


@dataclass
class CapacityResult(Generic[T]):
    """``capacity`` (0 when no count held), every trial in stream order, and the trial to report: the largest count
    that held, else the first one run."""

    target_p95_ms: float
    capacity: int
    trials: list[TrialPoint]
    report_trial: T

    def to_json(self) -> dict:
        return {"target_p95_ms": self.target_p95_ms, "capacity": self.capacity,
                "trials": [asdict(t) for t in self.trials]}


def holds(summary: dict, target_p95_ms: float) -> bool:
    return summary["latency_ms"]["p95"] <= target_p95_ms and summary["dropped_chunks"] == 0


def find_capacity(trial: Callable[[int], T], summary_of: Callable[[T], dict], start: int, limit: int,
                  target_p95_ms: float, log: Callable[[str], None] = lambda msg: None) -> CapacityResult[T]:
    """Run trials as the module docstring says; ``log`` hears one line per trial."""
    if start < 1 or limit < start:
        raise ValueError(f"capacity search from {start} to {limit} streams: need 1 <= start <= limit")
    points: list[TrialPoint] = []
    best: tuple[int, T] | None = None
    first: T | None = None

    def attempt(n: int) -> bool:
        nonlocal best, first
        result = trial(n)
        first = result if first is None else first
        s = summary_of(result)
        ok = holds(s, target_p95_ms)
        lat = s["latency_ms"]
        points.append(TrialPoint(n, lat["p50"], lat["p95"], lat["p99"], s["batch_utilization"],
                                 s["dropped_chunks"], ok))
        log(f"{n} streams: p95 {lat['p95']} ms, drops {s['dropped_chunks']} -> "
            f"{'holds' if ok else 'misses the target'}")
        if ok and (best is None or n > best[0]):
            best = (n, result)
        return ok

    n, fail = start, None
    while n <= limit:
        if not attempt(n):
            fail = n
            break
        n = max(n + 8, int(n * 1.5) // 8 * 8)
    lo = best[0] if best else 0
    while fail is not None and fail - lo > 8:
        mid = max(8, (lo + fail) // 2 // 8 * 8)
        if mid <= lo or mid >= fail:
            break
        if attempt(mid):
            lo = mid
        else:
            fail = mid
    points.sort(key=lambda p: p.streams)
    return CapacityResult(target_p95_ms, best[0] if best else 0, points, best[1] if best else first)
