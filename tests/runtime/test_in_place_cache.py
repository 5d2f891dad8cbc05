"""The decoder step reading the cache in place (per-layer contiguous views of a pool whose row capacity grows)
equals the causal full recompute, at several batch sizes and cache lengths, in PyTorch and in ONNX Runtime."""

import pytest
import torch

from speechtrt.export import component
from speechtrt.models.text import tts_tokens
from speechtrt.runtime.kv_pool import KVCachePool, PoolShape
from speechtrt.runtime.open import Artifacts, open_runner
from speechtrt.runtime.runner import RunnerDecoderStep
from speechtrt.tts.baseline import seed_decode

TEXTS = ("in place", "the cache is read where it lies", "a", "twelve rows", "per layer views", "no copies")


_REFERENCE: dict = {}


def _full_recompute(model, text: str, frames: int) -> torch.Tensor:
    """The seed's O(T²) decode of ``text`` (computed once per text and length for both backends)."""
    if (text, frames) not in _REFERENCE:
        tokens = torch.tensor(tts_tokens(text))[None]
        with torch.no_grad():
            mel, _ = seed_decode(model, model.encode_text(tokens), n_frames=frames)
        _REFERENCE[(text, frames)] = mel[0]
    return _REFERENCE[(text, frames)]


def _decode_in_pool(model, step, texts, frames: int, past_step: int) -> KVCachePool:
    c = model.config
    pool = KVCachePool(PoolShape.for_model(c, max_slots=len(texts), max_frames=frames, max_text=40), past_step=past_step)
    ids = [tts_tokens(t) for t in texts]
    tokens = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.int64)
    for j, x in enumerate(ids):
        tokens[j, : len(x)] = torch.tensor(x)
    lengths = torch.tensor([len(x) for x in ids])
    enc = open_runner(component("tts_encoder"), "torch", artifacts=Artifacts(model=model))
    out = enc.infer({"tokens": tokens, "text_lengths": lengths})
    pool.load(list(range(len(texts))), out["cross_k"], out["cross_v"], lengths.tolist())
    for _ in range(frames):
        step.step(pool, len(texts))
    return pool


@pytest.mark.slow
@pytest.mark.parametrize("batch, frames, past_step", [(1, 7, 4), (3, 40, 16), (6, 70, 64)])
@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_in_place_step_equals_full_recompute(tts_model, tts_onnx_dir, backend, batch, frames, past_step):
    runner = open_runner("tts_decoder_step", backend, "fp32", "cpu", Artifacts(onnx_dir=tts_onnx_dir, model=tts_model),
                         threads=1)
    pool = _decode_in_pool(tts_model, RunnerDecoderStep(runner), TEXTS[:batch], frames, past_step)
    assert pool.past_k.cap >= frames  # the capacity grew as the past did (several re-layouts for small steps)
    for b, text in enumerate(TEXTS[:batch]):
        want = _full_recompute(tts_model, text, frames)
        got = pool.mel[b, :frames]
        assert ((got - want).norm() / want.norm()).item() < 1e-4, (backend, b)
