"""The capacity search, with trials faked by a latency model: which counts it tries and what it reports."""

from __future__ import annotations

import pytest

from speechtrt.stream.capacity import find_capacity


def _fake(limit_streams: int, drops_from: int | None = None):
    """p95 grows with the stream count and crosses 100 ms past ``limit_streams``."""
    tried = []

    def trial(n: int) -> dict:
        tried.append(n)
        p95 = 100.0 * n / limit_streams
        return {"latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.2}, "batch_utilization": 0.5,
                "dropped_chunks": int(drops_from is not None and n >= drops_from), "n": n}

    return trial, tried


def test_grows_then_bisects_to_eight_streams():
    trial, tried = _fake(limit_streams=100)
    lines = []
    result = find_capacity(trial, lambda s: s, 16, 4096, 100.0, lines.append)
    assert tried == [16, 24, 32, 48, 72, 104, 88, 96]  # ×1.5 in multiples of 8, then bisection
    assert result.capacity == 96 and result.report_trial["n"] == 96
    assert [t.streams for t in result.trials] == sorted(tried)
    assert [t.holds for t in result.trials] == [n <= 100 for n in sorted(tried)]
    assert lines[0] == "16 streams: p95 16.0 ms, drops 0 -> holds" and "misses the target" in lines[5]
    assert result.to_json()["trials"][0] == {"streams": 16, "p50": 8.0, "p95": 16.0, "p99": 19.2,
                                             "batch_utilization": 0.5, "dropped_chunks": 0, "holds": True}


def test_drops_fail_a_count_and_nothing_holding_reports_the_first_trial():
    trial, tried = _fake(limit_streams=10_000, drops_from=40)
    assert find_capacity(trial, lambda s: s, 16, 4096, 100.0).capacity == 32
    trial, tried = _fake(limit_streams=4)
    result = find_capacity(trial, lambda s: s, 8, 64, 100.0)
    assert result.capacity == 0 and tried == [8] and result.report_trial["n"] == 8


def test_stops_at_the_limit():
    trial, tried = _fake(limit_streams=10_000)
    result = find_capacity(trial, lambda s: s, 4, 8, 1e9)
    assert tried == [4] and result.capacity == 4  # the next count (12) is past the limit
    with pytest.raises(ValueError, match="need 1 <= start <= limit"):
        find_capacity(trial, lambda s: s, 16, 8, 100.0)
