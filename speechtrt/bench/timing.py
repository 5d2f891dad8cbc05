"""Timing primitives: synchronised wall clocks, CUDA events, warm-up + repeats, percentile summaries."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


def synchronize(device) -> None:
    """Wait for queued device work so a host clock measures it (no-op on CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextmanager
def wall_clock(device="cpu"):
    """``with wall_clock(dev) as t: ...`` then ``t()`` is the elapsed seconds, device work included."""
    synchronize(device)
    start = time.perf_counter()
    box = [None]
    try:
        yield lambda: box[0] if box[0] is not None else time.perf_counter() - start
    finally:
        synchronize(device)
        box[0] = time.perf_counter() - start


class CudaTimer:
    """Elapsed GPU time between two CUDA events on the current stream (milliseconds)."""

    def __init__(self):
        import torch

        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __enter__(self):
        self.start.record()
        return self

    def __exit__(self, *exc):
        self.end.record()

    def ms(self) -> float:
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


@dataclass(frozen=True)
class Summary:
    """Latency statistics over repeated measurements, in milliseconds."""

    n: int
    avg: float
    p50: float
    p95: float
    min: float
    max: float

    def to_json(self) -> dict:
        return {"n": self.n, "avg": self.avg, "p50": self.p50, "p95": self.p95, "min": self.min, "max": self.max}


def summarize_ms(seconds: list[float]) -> Summary:
    """avg / p50 / p95 (linear interpolation, numpy's default) of durations given in seconds."""
    if not seconds:
        raise ValueError("no measurements to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return Summary(len(ms), float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 95)),
                   float(ms.min()), float(ms.max()))


def repeat(fn, repeats: int, warmup: int = 1, device="cpu") -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; returns each run's seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        with wall_clock(device) as t:
            fn()
        out.append(t())
    return out
