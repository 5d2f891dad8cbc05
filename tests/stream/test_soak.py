"""Thousands of streams opened and closed: slots, engine bookkeeping and memory return to their baseline."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from speechtrt.errors import CapacityError
from speechtrt.stream.engine import StreamConfig, StreamingEngine


def _cycle(engine: StreamingEngine, audio: np.ndarray, i: int) -> None:
    """One stream's life; every few streams decode a real chunk, others end before a full chunk or are cancelled."""
    sid = engine.open()
    # 3000 samples: one full 16-frame chunk and a padded remainder; under 400 samples: no frame at all
    n = 3000 if i % 10 == 0 else 100 + i % 300
    engine.push(sid, audio[:n])
    if i % 3 == 0:
        engine.cancel(sid)
    else:
        fut = engine.finalize_async(sid)
        engine.run_until_idle()
        assert fut.result(timeout=0).frames == (0 if n < 400 else 1 + (n - 400) // 160)


def test_soak_open_close_returns_to_baseline(step, speech):
    # metric series bounded to 256 samples, so they stop growing during warm-up
    engine = StreamingEngine(step, StreamConfig(max_streams=8, max_batch=8, metrics_window=256))
    audio = speech[1]
    tracemalloc.start()
    for i in range(1200):  # warm-up, traced: the bounded tombstone table fills and turns over once
        _cycle(engine, audio, i)
    gc.collect()
    base, _ = tracemalloc.get_traced_memory()
    before = tracemalloc.take_snapshot()
    refusals = 0
    for i in range(1200, 3600):
        _cycle(engine, audio, i)
        if i % 500 == 0:  # fill every slot now and then: admission still refuses past capacity
            held = [engine.open() for _ in range(8)]
            with pytest.raises(CapacityError):
                engine.open()
            refusals += 1
            for sid in held:
                engine.cancel(sid)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    growth = "\n".join(str(d) for d in tracemalloc.take_snapshot().compare_to(before, "lineno")[:5])
    tracemalloc.stop()
    assert engine.metrics.streams_opened == 3600 + refusals * 8
    assert engine.metrics.refused_opens == refusals
    assert engine.pool.free_count == engine.pool.capacity == 8
    assert engine.open_streams == 0 and engine.core.n_ready == 0 and engine.core.in_flight == 0
    assert len(engine.core.table) == 0  # finished streams leave no record behind
    assert len(engine.core.table.tombstones) <= StreamingEngine.TOMBSTONES
    # one leaked stream record (buffers, deques, lists) is ~1 KB: 2400 of them would be megabytes
    assert after - base < 64 * 1024, f"traced memory grew by {after - base} bytes over 2400 streams:\n{growth}"
