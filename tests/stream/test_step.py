"""Steps and slot storage: ONNX Runtime streams exactly like its own offline pass; slots gather/scatter rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechtrt.errors import InputError
from speechtrt.pipeline import model_artifacts
from speechtrt.stream.engine import StreamConfig, StreamingEngine
from speechtrt.stream.step import STATE_BATCH_DIMS, StepConfig, StepModel
from speechtrt.stream.slots import ChunkFeaturizer, StreamSlotPool
from tests.stream.conftest import offline, play_and_finalize


def test_ort_step_streams_equal_its_offline_pass_and_torch(model, step, speech, tmp_path):
    ort = StepModel.open(StepConfig(backend="ort", threads=1, cache_dir=tmp_path), model)
    onnx_path = ort.runner.path
    assert onnx_path.parent == model_artifacts(model, tmp_path).onnx_dir  # exported into a folder keyed by weights
    exported = onnx_path.stat().st_mtime_ns
    again = StepModel.open(StepConfig(backend="ort", threads=1, cache_dir=tmp_path), model)
    assert again.runner.path == onnx_path and onnx_path.stat().st_mtime_ns == exported  # reused, not re-exported
    engine = StreamingEngine(ort, StreamConfig(max_streams=4, max_batch=4))
    rng = np.random.default_rng(3)
    with engine:
        ids = {engine.open(): audio for audio in speech}
        finals = play_and_finalize(engine, ids, rng, 500, 6000)
    for sid, audio in ids.items():
        ort_lp, ort_tokens, _ = offline(ort, audio)
        assert finals[sid].token_ids == ort_tokens
        torch_lp, _, _ = offline(step, audio)
        torch.testing.assert_close(ort_lp, torch_lp, atol=1e-4, rtol=1e-4)  # same model in both runtimes


def test_slot_pool_gathers_and_scatters_rows_and_zeroes_on_release(model):
    pool = StreamSlotPool(4, model.initial_state(1), STATE_BATCH_DIMS, max_frames=32)
    a, b, c = pool.acquire(), pool.acquire(), pool.acquire()
    assert (a, b, c) == (0, 1, 2) and pool.free_count == 1
    idx = torch.tensor([c, a])
    new = {k: torch.randn_like(v) for k, v in model.initial_state(2).items()}
    pool.scatter(idx, new)
    got = pool.gather(idx)
    for k in new:
        torch.testing.assert_close(got[k], new[k], rtol=0, atol=0)
        assert pool.state[k].select(STATE_BATCH_DIMS[k], b).abs().sum() == 0  # untouched row
    pool.release(c)
    assert all(pool.state[k].select(STATE_BATCH_DIMS[k], c).abs().sum() == 0 for k in new)
    assert pool.acquire() == c
    with pytest.raises(RuntimeError, match="double release"):
        pool.release(3)
    assert pool.acquire() == 3 and pool.acquire() is None


def test_sample_buffer_chunks_featurize_to_the_offline_frames(speech):
    """Irregular appends, chunk windows cut from the buffer, batched log-mel: the offline front end's frames."""
    from speechtrt.models.audio import log_mel

    chunk = 16
    pool = StreamSlotPool(1, {"h": torch.zeros(1, 1, 1)}, {"h": 1}, max_frames=64)
    buf = pool.sample_buffer(pool.acquire())
    featurize = ChunkFeaturizer(chunk)
    window = np.zeros(featurize.window_samples, dtype=np.float32)
    audio, pos, rng, frames = speech[1], 0, np.random.default_rng(0), []
    while pos < len(audio) or buf.frames_ready:
        if pos < len(audio):
            n = min(int(rng.integers(1, 900)), buf.samples_that_fit())
            buf.append(audio[pos:pos + n])
            pos += n
        if buf.frames_ready >= chunk or (pos >= len(audio) and buf.frames_ready):
            k = buf.take(chunk, window)
            frames.append(featurize(torch.from_numpy(window)[None])[0, :k])
    want = log_mel(audio)
    assert buf.total_frames == want.shape[0] and buf.count < 400
    # same frames; FFTs over different numbers of frames round differently in the last bit
    torch.testing.assert_close(torch.cat(frames), want, rtol=1e-5, atol=1e-5)


def test_unknown_backend_precision_device_and_bad_chunk_are_refused():
    with pytest.raises(InputError, match="unknown backend 'tensorflow'"):
        StepConfig(backend="tensorflow")
    with pytest.raises(InputError, match="unknown precision 'fp64'"):
        StepConfig(precision="fp64")
    with pytest.raises(InputError, match="the ort backend runs fp32, fp16, int8"):
        StepConfig(backend="ort", precision="bf16")
    with pytest.raises(InputError, match="fp16 streaming on torch needs --device cuda"):
        StepConfig(precision="fp16")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        StepConfig(device="tpu")
    with pytest.raises(InputError, match="multiple of 4"):
        StreamConfig(chunk_frames=10)


def test_nothing_in_the_stream_package_constructs_a_runner():
    """Runners come from ``open_runner`` only (speechtrt.runtime.open); the streaming package asks for them."""
    from pathlib import Path

    import speechtrt.stream

    forbidden = ("OrtRunner(", "TrtRunner(", "TorchRunner(", "GraphedRunner(", "InferenceSession(",
                 "deserialize_cuda_engine", "make_trt_runner")
    found = [f"{path.name}: {name}" for path in Path(speechtrt.stream.__file__).parent.glob("*.py")
             for name in forbidden if name in path.read_text()]
    assert not found, found
