"""The synchronous core, driven call by call: what each of open / accept / ready / decode_ready / result / finalize /
cancel / reap returns, with the real seeded model and real speech."""

from __future__ import annotations

import numpy as np
import pytest

from speechtrt.asr.decode import greedy_path
from speechtrt.errors import CapacityError, InputError
from speechtrt.models.audio import FEATURES, log_mel
from speechtrt.stream.core import StreamConfig, StreamCore
from speechtrt.stream.step import OUTPUT_SHIFT_S
from speechtrt.stream.table import StreamClosedError, StreamStatus, UnknownStreamError
from tests.stream.conftest import offline

CHUNK = 16  # frames
CHUNK_SAMPLES = (CHUNK - 1) * FEATURES.hop + FEATURES.n_fft  # samples that make the first full chunk: 2800


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_open_accept_ready_decode_result_finalize(step, speech):
    clock = FakeClock()
    core = StreamCore(step, StreamConfig(max_streams=2, max_batch=2, chunk_frames=CHUNK, max_buffer_ms=10_000),
                      clock=clock)
    audio = speech[1]
    sid = core.open()
    assert sid == "s0" and core.ready_streams() == [] and not core.ready(sid)

    assert core.accept(sid, audio[: CHUNK_SAMPLES - 1]) == CHUNK_SAMPLES - 1  # one sample short of a chunk
    assert core.ready_streams() == []
    assert core.accept(sid, audio[CHUNK_SAMPLES - 1: CHUNK_SAMPLES]) == 1
    assert core.ready(sid) and core.ready_streams() == [sid]

    clock.t += 0.02
    out = core.decode_ready([sid])
    assert out.stream_ids == (sid,) and out.finished == () and out.failed == () and out.error is None
    r = core.result(sid)
    assert r.frames == CHUNK and not r.final and r.status == "open" and core.ready_streams() == []
    assert list(core.metrics.latencies_s) == [pytest.approx(0.02)]  # chunk arrival -> partial updated

    assert core.accept(sid, audio[CHUNK_SAMPLES:]) == len(audio) - CHUNK_SAMPLES  # the rest fits (10 s buffer)
    while core.ready_streams():
        core.decode_ready()
    assert not core.result(sid).final  # the last partial chunk waits for more audio, or for finalize
    assert core.finalize(sid) is False  # something is left: decoded by the next decode_ready
    assert core.ready_streams() == [sid] and core.status(sid) is StreamStatus.FINALIZING
    out = core.decode_ready()
    assert out.finished == (sid,)

    final = core.result(sid)
    log_probs, tokens, text = offline(step, audio)
    assert final.final and final.status == "done"
    assert final.token_ids == tokens and final.text == text  # final == offline
    assert final.frames == FEATURES.frames_for(len(audio))  # every accepted frame decoded
    frames = greedy_path(log_probs.argmax(-1))[1]
    assert final.timestamps_s == tuple(round(f * OUTPUT_SHIFT_S, 3) for f in frames)
    assert all(b > a for a, b in zip(final.timestamps_s, final.timestamps_s[1:]))
    assert core.pool.free_count == 2  # the slot is back; the record stays until close
    with pytest.raises(StreamClosedError, match="is finalized"):
        core.accept(sid, audio[:100])
    core.close(sid)
    with pytest.raises(StreamClosedError, match=r"closed \(finalized\)"):
        core.result(sid)


def test_finalize_with_nothing_left_is_final_at_once(step, speech):
    core = StreamCore(step, StreamConfig(max_streams=1, max_batch=1))
    sid = core.open()
    core.accept(sid, speech[0][:300])  # under one 25 ms window: no frame at all
    assert core.finalize(sid) is True
    r = core.result(sid)
    assert r.final and r.frames == 0 and r.text == "" and core.pool.free_count == 1


def test_batched_steps_equal_each_stream_offline(step, speech):
    core = StreamCore(step, StreamConfig(max_streams=4, max_batch=4, max_buffer_ms=10_000))
    ids = [core.open(f"u{i}") for i in range(len(speech))]
    for sid, audio in zip(ids, speech):
        assert core.accept(sid, audio) == len(audio)
        core.finalize(sid)
    sizes = []
    while core.ready_streams():
        sizes.append(len(core.decode_ready().stream_ids))
    assert max(sizes) == 4
    for sid, audio in zip(ids, speech):
        assert core.result(sid).token_ids == offline(step, audio)[1]


def test_accept_takes_what_fits_and_the_rest_after_a_step(step, speech):
    core = StreamCore(step, StreamConfig(max_streams=1, max_batch=1, max_buffer_ms=160))  # one chunk of room
    sid = core.open()
    audio = speech[1][:16000]
    assert core.room(sid) == CHUNK_SAMPLES
    took = core.accept(sid, audio)
    assert took == CHUNK_SAMPLES and core.room(sid) == 0 and core.accept(sid, audio[took:]) == 0
    core.decode_ready([sid])
    assert core.room(sid) == CHUNK * FEATURES.hop  # the chunk's hops were dropped; the overlap stays
    pos = took
    while pos < len(audio):
        pos += core.accept(sid, audio[pos:])
        while core.ready_streams():
            core.decode_ready()
    core.finalize(sid)
    while core.ready_streams():
        core.decode_ready()
    assert core.result(sid).token_ids == offline(step, audio)[1]  # nothing lost on the way


def test_decode_ready_refuses_streams_that_are_not_ready(step, speech):
    core = StreamCore(step, StreamConfig(max_streams=3, max_batch=2))
    a, b, c = core.open(), core.open(), core.open()
    with pytest.raises(InputError, match="holds no full chunk"):
        core.decode_ready([a])
    with pytest.raises(UnknownStreamError, match="unknown stream id 'zz'"):
        core.decode_ready(["zz"])
    for sid in (a, b, c):
        core.accept(sid, speech[1][:CHUNK_SAMPLES])
    with pytest.raises(InputError, match="3 streams in one step; max_batch is 2"):
        core.decode_ready([a, b, c])
    assert core.decode_ready().stream_ids == (a, b)  # default: the longest-waiting max_batch
    assert core.ready_streams() == [c]


def test_a_failed_step_fails_its_streams_not_the_core(step, speech, monkeypatch):
    core = StreamCore(step, StreamConfig(max_streams=3, max_batch=2))
    a, b, c = core.open(), core.open(), core.open()
    for sid in (a, b, c):
        core.accept(sid, speech[1][:CHUNK_SAMPLES])

    def lost(feeds):
        raise RuntimeError("device lost")

    monkeypatch.setattr(core.model, "step", lost)
    out = core.decode_ready([a, b])
    monkeypatch.undo()
    assert out.failed == (a, b) and "RuntimeError: device lost" in out.error
    assert core.result(a).status == "failed" and "device lost" in core.result(a).error
    assert core.metrics.streams_failed == 2 and core.pool.free_count == 2  # their slots are free
    with pytest.raises(StreamClosedError, match="is failed"):
        core.accept(a, speech[1][:100])
    assert core.decode_ready().stream_ids == (c,)  # the core goes on
    assert core.open() and core.open()  # and the freed slots admit new streams


def test_cancel_during_a_step_frees_the_slot_after_it(step, speech):
    core = StreamCore(step, StreamConfig(max_streams=1, max_batch=1))
    sid = core.open()
    core.accept(sid, speech[1][:CHUNK_SAMPLES])
    batch = core.gather([sid])
    core.cancel(sid)  # the step still writes its slot: it is freed at commit
    assert core.pool.free_count == 0
    with pytest.raises(CapacityError, match="all 1 stream slots are in use"):
        core.open()
    out = core.commit(core.compute(batch))
    assert out.stream_ids == (sid,) and out.finished == () and core.pool.free_count == 1
    with pytest.raises(StreamClosedError, match=r"closed \(cancelled\)"):
        core.result(sid)


def test_reap_finalizes_idle_streams_and_forgets_unclaimed_results(step, speech):
    clock = FakeClock()
    core = StreamCore(step, StreamConfig(max_streams=2, max_batch=2, idle_timeout_s=5), clock=clock)
    idle, busy = core.open(), core.open()
    core.accept(idle, speech[0][:5000])  # a full chunk and 13 frames
    core.decode_ready()
    clock.t += 3
    core.accept(busy, speech[0][:800])
    clock.t += 3
    assert core.reap() == [idle]  # 6 s quiet; busy only 3 s
    assert core.status(idle) is StreamStatus.FINALIZING and core.ready_streams() == [idle]
    core.decode_ready()
    r = core.result(idle)
    assert r.final and r.timed_out and r.frames == 29 and core.metrics.timed_out == 1
    clock.t += 6  # nobody read it within the timeout; busy has now been idle too
    assert core.reap() == [busy]
    with pytest.raises(StreamClosedError, match="timed out"):
        core.result(idle)
