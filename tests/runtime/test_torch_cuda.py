"""The CUDA-graph decoder step: its bucketed body on CPU; FP16 graphs vs the eager FP32 step on a GPU."""

import pytest
import torch

from speechtrt.export import component
from speechtrt.runtime.kv_pool import KVCachePool, PoolShape
from speechtrt.runtime.runner import RunnerDecoderStep, TorchRunner


@pytest.mark.gpu
def test_graphed_step_matches_eager(tts_model):
    from speechtrt.runtime.torch_cuda import GraphedDecoderStep

    shape = PoolShape.for_model(tts_model.config, max_slots=4, max_frames=40, max_text=16)
    enc = TorchRunner(component("tts_encoder"), tts_model)
    tokens = torch.randint(32, 127, (3, 16), generator=torch.Generator().manual_seed(0))
    lengths = [16, 7, 11]
    out = enc.infer({"tokens": tokens, "text_lengths": torch.tensor(lengths)})
    eager = KVCachePool(shape)
    eager.load([0, 1, 2], out["cross_k"], out["cross_v"], lengths)
    graphed = KVCachePool(shape, torch.float16, "cuda")
    graphed.load([0, 1, 2], out["cross_k"].cuda().half(), out["cross_v"].cuda().half(), lengths)
    e_step = RunnerDecoderStep(TorchRunner(component("tts_decoder_step"), tts_model))
    g_step = GraphedDecoderStep(tts_model, graphed, torch.float16)
    for i in range(30):
        n = 3 if i < 20 else 2  # batch bucket 4 with one idle slot, then bucket 2
        e_step.step(eager, n)
        g_step.step(graphed, n)
    torch.cuda.synchronize()
    assert graphed.past_len.tolist()[:3] == eager.past_len.tolist()[:3] == [30, 30, 20]
    ref, got = eager.mel[:2, :30], graphed.mel[:2, :30].float().cpu()
    snr = 10 * torch.log10(ref.pow(2).sum() / (got - ref).pow(2).sum())
    assert snr > 30
    assert len(g_step.graphs) >= 2


def test_bucketed_step_body_matches_the_generic_step_on_cpu(tts_model):
    """The body the CUDA graphs capture (padded batch bucket, the pool's row capacities), run eagerly on CPU."""
    from speechtrt.export import relative_l2
    from speechtrt.runtime.torch_cuda import GraphedDecoderStep

    shape = PoolShape.for_model(tts_model.config, max_slots=4, max_frames=20, max_text=16)
    enc = TorchRunner(component("tts_encoder"), tts_model)
    tokens = torch.randint(32, 127, (3, 16), generator=torch.Generator().manual_seed(0))
    lengths = [16, 7, 11]
    out = enc.infer({"tokens": tokens, "text_lengths": torch.tensor(lengths)})
    pools = [KVCachePool(shape), KVCachePool(shape, past_step=4)]
    for pool in pools:
        pool.load([0, 1, 2], out["cross_k"], out["cross_v"], lengths)
    generic = RunnerDecoderStep(TorchRunner(component("tts_decoder_step"), tts_model))
    bucketed = GraphedDecoderStep(tts_model, pools[1], torch.float32, use_graphs=False)
    for i in range(14):
        n = 3 if i < 10 else 2  # batch bucket 4 with an idle slot, then 2
        generic.step(pools[0], n)
        bucketed.step(pools[1], n)
    a, b = pools
    assert a.past_len.tolist() == b.past_len.tolist() == [14, 14, 10, 0]
    assert relative_l2(b.mel[:3, :10].numpy(), a.mel[:3, :10].numpy()) < 1e-5
    assert b.past_k.cap == 16 and a.past_k.cap == 20  # grew 4 -> 8 -> 12 -> 16 in steps of 4; one step of 64 (capped)
    for layer in range(shape.layers):
        assert relative_l2(b.past_k.view(layer)[:2, :, :14].numpy(), a.past_k.view(layer)[:2, :, :14].numpy()) < 1e-5
