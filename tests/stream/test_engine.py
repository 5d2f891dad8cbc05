"""The streaming engine on the real seeded model: exactness, batching, admission, backpressure, timeouts."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
import pytest
import torch

from speechtrt.errors import CapacityError
from speechtrt.stream.engine import (BackpressureError, StreamClosedError, StreamConfig, StreamingEngine,
                                     StreamStatus)
from tests.stream.conftest import offline


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _tap(engine: StreamingEngine) -> dict[str, list[torch.Tensor]]:
    """Collect each stream's valid log-prob rows as the engine produces them."""
    rows: dict[str, list[torch.Tensor]] = defaultdict(list)

    def observe(ids, log_probs, valid):
        for i, (sid, n) in enumerate(zip(ids, valid)):
            rows[sid].append(log_probs[i, :n].detach().clone())

    engine.step_observer = observe
    return rows


def _play_interleaved(engine, streams: dict[str, np.ndarray], rng, max_piece: int) -> None:
    """Push every stream's audio in irregular pieces (1..max_piece samples), stepping the engine at random."""
    pos = {sid: 0 for sid in streams}
    while any(pos[s] < len(a) for s, a in streams.items()):
        for sid, audio in streams.items():
            if pos[sid] < len(audio):
                n = int(rng.integers(1, max_piece))
                engine.push(sid, audio[pos[sid]: pos[sid] + n])
                pos[sid] += n
        if rng.random() < 0.5:
            engine.run_step()


def test_chunked_transcripts_equal_offline_with_irregular_chunks(step, speech):
    engine = StreamingEngine(step, StreamConfig(max_streams=8, max_batch=8))
    rows = _tap(engine)
    streams = {engine.open(): audio for audio in speech}
    _play_interleaved(engine, streams, np.random.default_rng(0), max_piece=7000)
    futures = {sid: engine.finalize_async(sid) for sid in streams}
    engine.run_until_idle()
    for sid, audio in streams.items():
        want_lp, want_tokens, want_text = offline(step, audio)
        final = futures[sid].result(timeout=0)
        assert final.token_ids == want_tokens and final.text == want_text
        got_lp = torch.cat(rows[sid])
        assert got_lp.shape == want_lp.shape  # ceil(frames / 4) outputs: none lost, none extra
        torch.testing.assert_close(got_lp, want_lp, atol=1e-4, rtol=1e-5)
    assert max(engine.metrics.batch_sizes) > 1  # streams really were batched together
    assert engine.pool.free_count == 8


def test_tiny_pushes_and_a_final_partial_chunk(step, speech):
    """Pushes smaller than one frame hop, and an utterance that ends mid-chunk, still decode exactly."""
    engine = StreamingEngine(step, StreamConfig(max_streams=2, max_batch=2))
    audio = speech[0][: 16000 + 1234]
    sid = engine.open()
    _play_interleaved(engine, {sid: audio}, np.random.default_rng(1), max_piece=200)
    fut = engine.finalize_async(sid)
    engine.run_until_idle()
    assert fut.result(timeout=0).token_ids == offline(step, audio)[1]


def test_batching_across_streams_equals_each_stream_alone(step, speech):
    outputs = {}
    for max_batch in (1, 4):
        engine = StreamingEngine(step, StreamConfig(max_streams=4, max_batch=max_batch, max_buffer_ms=10_000))
        rows = _tap(engine)
        ids = [engine.open(f"u{i}") for i in range(len(speech))]
        for sid, audio in zip(ids, speech):
            engine.push(sid, audio)  # everything buffered first: batches are as full as max_batch allows
        futs = [engine.finalize_async(sid) for sid in ids]
        engine.run_until_idle()
        assert max(engine.metrics.batch_sizes) == max_batch
        outputs[max_batch] = ({sid: torch.cat(rows[sid]) for sid in ids},
                              [f.result(timeout=0).token_ids for f in futs])
    alone, batched = outputs[1], outputs[4]
    assert alone[1] == batched[1]
    for sid in alone[0]:
        torch.testing.assert_close(batched[0][sid], alone[0][sid], atol=1e-5, rtol=1e-5)


def test_admission_control_refuses_with_a_reason_and_readmits(step, speech):
    engine = StreamingEngine(step, StreamConfig(max_streams=2, max_batch=2))
    a, b = engine.open(), engine.open()
    with pytest.raises(CapacityError, match=r"all 2 stream slots are in use"):
        engine.open("third")
    assert engine.metrics.refused_opens == 1
    engine.push(a, speech[0])
    fut = engine.finalize_async(a)
    engine.run_until_idle()
    assert fut.result(timeout=0).token_ids == offline(step, speech[0])[1]
    c = engine.open("third")  # a's slot came back
    assert engine.open_streams == 2 and {b, c} == {"s1", "third"}


def test_backpressure_refuses_or_blocks_and_never_drops(step, speech):
    # a buffer of one 160 ms chunk: 1 s of audio cannot fit
    engine = StreamingEngine(step, StreamConfig(max_streams=2, max_batch=2, max_buffer_ms=160))
    audio = speech[1]
    sid = engine.open()
    with pytest.raises(BackpressureError, match="nothing was accepted") as err:
        engine.push(sid, audio[:16000], block=False)
    assert err.value.accepted == 0 and engine.metrics.backpressure_events == 1
    # blocking without anyone draining: it times out and says exactly how much went in
    with pytest.raises(BackpressureError) as err:
        engine.push(sid, audio[:16000], block=True, timeout=0.05)
    accepted = err.value.accepted
    assert 0 < accepted < 16000
    # with the scheduler draining, a blocking push of the whole rest completes and nothing is lost
    with engine:
        engine.push(sid, audio[accepted:], block=True, timeout=60)
        text = engine.finalize(sid, timeout=60)
    assert text == offline(step, audio)[2]
    assert engine.metrics.backpressure_events > 2


def test_blocked_producer_of_a_cancelled_stream_is_released(step, speech):
    engine = StreamingEngine(step, StreamConfig(max_streams=1, max_batch=1, max_buffer_ms=160))
    sid = engine.open()
    errors = []

    def produce():
        try:
            engine.push(sid, speech[1], block=True, timeout=30)
        except StreamClosedError as exc:
            errors.append(exc)

    t = threading.Thread(target=produce)
    t.start()
    while engine.metrics.backpressure_events == 0:
        threading.Event().wait(0.005)
    engine.cancel(sid)
    t.join(timeout=30)
    assert not t.is_alive() and errors and "cancelled" in str(errors[0])
    assert engine.pool.free_count == 1


def test_idle_streams_time_out_and_free_their_slot(step, speech):
    clock = FakeClock()
    engine = StreamingEngine(step, StreamConfig(max_streams=2, max_batch=2, idle_timeout_s=5), clock=clock)
    idle, busy = engine.open(), engine.open()
    engine.push(idle, speech[0][:5000])  # 2 chunks + a partial one
    engine.run_until_idle()
    clock.t += 3
    engine.push(busy, speech[0][:800])
    clock.t += 3  # idle: 6 s quiet; busy: 3 s
    engine.run_until_idle()
    assert engine.metrics.timed_out == 1 and engine.open_streams == 1 and engine.pool.free_count == 1
    assert engine.status(busy) is StreamStatus.OPEN
    # its accepted audio was processed: all 29 frames of 5000 samples (a full chunk, then 13 frames padded);
    # busy's 800 samples (3 frames) wait for more audio
    assert engine.metrics.frames_decoded == 29 and engine.metrics.chunks_processed == 2
    with pytest.raises(StreamClosedError, match="timed out"):
        engine.push(idle, speech[0][:100])
    assert engine.open("new")  # the freed slot admits a new stream


def test_producer_threads_against_the_scheduler_thread(step, speech):
    """One producer thread per stream, pushing concurrently while the scheduler batches them."""
    engine = StreamingEngine(step, StreamConfig(max_streams=8, max_batch=8, max_wait_ms=5))
    finals: dict[str, str] = {}

    def client(i: int, audio: np.ndarray) -> None:
        sid = engine.open(f"c{i}")
        rng = np.random.default_rng(i)
        pos = 0
        while pos < len(audio):
            n = int(rng.integers(200, 4000))
            engine.push(sid, audio[pos: pos + n])
            pos += n
        finals[sid] = engine.finalize(sid, timeout=60)

    with engine:
        threads = [threading.Thread(target=client, args=(i, a)) for i, a in enumerate(speech * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    for i, audio in enumerate(speech * 2):
        assert finals[f"c{i}"] == offline(step, audio)[2]
    assert engine.pool.free_count == 8 and engine.metrics.streams_finished == 8


def test_update_callbacks_results_with_times_and_counts_for_a_server(step, speech):
    engine = StreamingEngine(step, StreamConfig(max_streams=4, max_batch=4, max_buffer_ms=10_000))
    updates: dict[str, list] = defaultdict(list)
    a = engine.open("a", on_update=updates["a"].append)
    b = engine.open("b", on_update=lambda r: (_ for _ in ()).throw(RuntimeError("client bug")))  # ignored
    assert engine.counts() == {"live": 2, "ready": 0, "in_flight": 0, "free_slots": 2, "capacity": 4}
    for sid in (a, b):
        engine.push(sid, speech[1])
    assert engine.counts()["ready"] == 2
    fa, fb = engine.finalize_async(a), engine.finalize_async(b)
    engine.run_until_idle()
    final = fa.result(timeout=0)
    assert fb.result(timeout=0).token_ids == final.token_ids  # the raising callback hurt nobody
    got = updates["a"]
    assert got[-1] == final and final.final and final.status == "done"
    assert all(not r.final for r in got[:-1]) and len(got) >= 2  # partials as the transcript grew, then the final
    texts = [r.text for r in got]
    assert all(t2.startswith(t1) and t2 != t1 for t1, t2 in zip(texts[:-2], texts[1:-1]))  # each one grew
    assert len(final.timestamps_s) == len(final.token_ids) and final.timestamps_s == tuple(sorted(final.timestamps_s))
    assert final.timestamps_s[-1] <= len(speech[1]) / 16000
    assert engine.counts()["live"] == 0 and engine.open_streams == 0
    with pytest.raises(StreamClosedError, match="finalized"):
        engine.result(a)


def test_a_failed_step_fails_its_futures_and_the_engine_goes_on(step, speech, monkeypatch):
    from speechtrt.stream.engine import StreamFailedError

    engine = StreamingEngine(step, StreamConfig(max_streams=2, max_batch=2))
    sid = engine.open(on_update=(seen := []).append)
    engine.push(sid, speech[0][:4000])
    fut = engine.finalize_async(sid)

    def lost(feeds):
        raise RuntimeError("device lost")

    monkeypatch.setattr(engine.model, "step", lost)
    engine.run_until_idle()
    monkeypatch.undo()
    with pytest.raises(StreamFailedError, match="'s0' failed: RuntimeError: device lost"):
        fut.result(timeout=0)
    assert seen[-1].status == "failed" and engine.metrics.streams_failed == 1 and engine.pool.free_count == 2
    with pytest.raises(StreamClosedError, match="failed in a batched step"):
        engine.push(sid, speech[0][:100])
    other = engine.open()
    engine.push(other, speech[0])
    f2 = engine.finalize_async(other)
    engine.run_until_idle()
    assert f2.result(timeout=0).token_ids == offline(step, speech[0])[1]
