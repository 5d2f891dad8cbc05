"""The batching decision, as a pure function: how many ready streams to run now, or how long to wait.

No tensors, no threads: the engine asks :func:`decide` with counts and ages and acts on the answer, so the policy is
tested on its own. The policy: run a full batch as soon as ``max_batch`` streams are ready; run whatever is ready
once the oldest ready chunk has waited ``max_wait``; run at once when every live stream is already ready (waiting
could not grow the batch); otherwise sleep until the oldest chunk's deadline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchDecision:
    take: int  # streams to batch now (0: wait)
    wait_s: float | None  # how long to wait before asking again (None: until something changes)


def decide(n_ready: int, oldest_ready_age_s: float, n_live: int, max_batch: int, max_wait_s: float) -> BatchDecision:
    """``n_ready`` streams hold a full chunk; the oldest has waited ``oldest_ready_age_s``; ``n_live`` streams are
    open and not in flight (ready or not)."""
    if n_ready <= 0:
        return BatchDecision(0, None)
    if n_ready >= max_batch:
        return BatchDecision(max_batch, None)
    if oldest_ready_age_s >= max_wait_s or n_ready >= n_live:
        return BatchDecision(n_ready, None)
    return BatchDecision(0, max_wait_s - oldest_ready_age_s)
