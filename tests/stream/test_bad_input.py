"""Bad input on one stream is an error for that stream's call only; every other stream keeps going."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechtrt.errors import InputError
from speechtrt.stream.engine import (StreamClosedError, StreamConfig, StreamingEngine, UnknownStreamError,
                                     validate_samples)
from tests.stream.conftest import offline


def _bad_chunks(audio: np.ndarray) -> list[tuple[str, dict, str]]:
    nan = audio[:1600].copy()
    nan[100] = np.nan
    inf = audio[:1600].copy()
    inf[5] = np.inf
    return [
        ("NaN", {"samples": nan}, "NaN/Inf"),
        ("Inf", {"samples": inf}, "NaN/Inf"),
        ("int16 PCM", {"samples": (audio[:1600] * 32767).astype(np.int16)}, "dtype int16"),
        ("8 kHz", {"samples": audio[:1600], "sample_rate": 8000}, "8000 Hz"),
        ("empty", {"samples": np.zeros(0, dtype=np.float32)}, "empty chunk"),
        ("stereo", {"samples": np.stack([audio[:1600]] * 2, axis=1)}, "mono"),
        ("a list", {"samples": [0.0] * 100}, "NumPy float32 array"),
    ]


def test_bad_input_errors_one_stream_only(step, speech):
    engine = StreamingEngine(step, StreamConfig(max_streams=4, max_batch=4, max_buffer_ms=10_000))
    good = {engine.open(): audio for audio in speech[1:3]}
    bad = engine.open("bad")
    bad_audio = speech[0]
    with engine:  # the scheduler runs while the bad calls happen
        for sid, audio in good.items():
            engine.push(sid, audio[: len(audio) // 2])
        engine.push(bad, bad_audio[:8000])
        for name, kwargs, message in _bad_chunks(bad_audio):
            with pytest.raises(InputError, match=message):
                engine.push(bad, **kwargs)
        with pytest.raises(UnknownStreamError, match="unknown stream id 'nobody'"):
            engine.push("nobody", bad_audio[:1600])
        with pytest.raises(UnknownStreamError):
            engine.partial("nobody")
        with pytest.raises(InputError, match="8000 Hz"):
            engine.open(sample_rate=8000)
        engine.push(bad, bad_audio[8000:])  # the bad stream itself still works
        bad_text = engine.finalize(bad, timeout=60)
        with pytest.raises(StreamClosedError, match="finalized"):
            engine.push(bad, bad_audio[:1600])
        with pytest.raises(StreamClosedError):
            engine.finalize(bad)
        for sid, audio in good.items():
            engine.push(sid, audio[len(audio) // 2:])
        finals = {sid: engine.finalize(sid, timeout=60) for sid in good}
    assert engine.metrics.rejected_pushes == len(_bad_chunks(bad_audio))
    assert bad_text == offline(step, bad_audio)[2]  # only accepted audio, all of it
    for sid, audio in good.items():
        assert finals[sid] == offline(step, audio)[2]
    assert engine.pool.free_count == 4 and engine.metrics.streams_failed == 0


def test_push_while_finalizing_is_refused(step, speech):
    engine = StreamingEngine(step, StreamConfig(max_streams=1, max_batch=1))
    sid = engine.open()
    engine.push(sid, speech[0][:9000])
    fut = engine.finalize_async(sid)  # not drained yet: the stream is finalizing
    with pytest.raises(StreamClosedError, match="finalizing"):
        engine.push(sid, speech[0][9000:])
    engine.run_until_idle()
    assert fut.result(timeout=0).token_ids == offline(step, speech[0][:9000])[1]


def test_validate_samples_accepts_float64_and_column_vectors():
    x = np.linspace(-1, 1, 480)
    assert validate_samples("s", x, None, 16000).dtype == np.float32
    assert validate_samples("s", torch.from_numpy(x[:, None]), 16000, 16000).shape == (480,)
