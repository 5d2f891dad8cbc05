"""Runners behind one protocol: ONNX Runtime vs the torch reference on the exported TTS graphs."""

import shutil

import pytest
import torch

from speechtrt.errors import EngineLoadError, InputError
from speechtrt.export import component, relative_l2
from speechtrt.runtime.kv_pool import KVCachePool, PoolShape
from speechtrt.runtime.open import Artifacts, open_runner
from speechtrt.runtime.ort import OrtRunner
from speechtrt.runtime.runner import Runner, RunnerDecoderStep, TorchRunner

pytestmark = pytest.mark.slow  # the session fixture exports three graphs (~30 s)


@pytest.mark.parametrize("name,sizes", [
    ("tts_encoder", {"batch": 3, "text": 17}),
    ("tts_decoder_step", {"batch": 4, "past": 23, "text": 11}),
    ("tts_vocoder", {"batch": 2, "frames": 9}),
])
def test_ort_matches_torch_on_every_output(tts_model, tts_onnx_dir, name, sizes):
    comp = component(name)
    feeds = comp.make_inputs(tts_model, sizes, torch.Generator().manual_seed(1))
    ort_runner = open_runner(name, "ort", artifacts=Artifacts(onnx_dir=tts_onnx_dir), threads=1)
    torch_runner = TorchRunner(comp, tts_model)
    assert isinstance(ort_runner, Runner) and isinstance(torch_runner, Runner)
    a, b = ort_runner.infer(feeds), torch_runner.infer(feeds)
    assert set(a) == set(b) == {s.name for s in comp.outputs}
    for k in a:
        assert a[k].shape == b[k].shape
        assert relative_l2(a[k].numpy(), b[k].numpy()) < 1e-5, k


def test_ort_binds_strided_pool_views_and_steps_like_torch(tts_model, tts_onnx_dir):
    """Ten decoder steps over a pool (per-layer K/V views bound in place, capacity growing) agree between backends."""
    c = tts_model.config
    shape = PoolShape.for_model(c, max_slots=3, max_frames=12, max_text=16)
    enc = TorchRunner(component("tts_encoder"), tts_model)
    tokens = torch.randint(32, 127, (3, 16), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([16, 5, 9])
    out = enc.infer({"tokens": tokens, "text_lengths": lengths})
    pools = []
    for step in (RunnerDecoderStep(TorchRunner(component("tts_decoder_step"), tts_model)),
                 RunnerDecoderStep(open_runner("tts_decoder_step", "ort", artifacts=Artifacts(tts_onnx_dir),
                                               threads=1))):
        pool = KVCachePool(shape, past_step=4)
        pool.load([0, 1, 2], out["cross_k"], out["cross_v"], lengths.tolist())
        for i in range(10):
            step.step(pool, 3 if i < 6 else 2)
        pools.append(pool)
    t, o = pools
    assert t.past_len.tolist() == o.past_len.tolist() == [10, 10, 6]
    assert relative_l2(o.mel[:2, :10].numpy(), t.mel[:2, :10].numpy()) < 1e-5
    for layer in range(c.num_layers):
        assert relative_l2(o.past_k.view(layer)[:2, :, :10].numpy(), t.past_k.view(layer)[:2, :, :10].numpy()) < 1e-5


def test_runner_input_errors_name_the_tensors(tts_onnx_dir, tts_model, tmp_path):
    runner = OrtRunner(tts_onnx_dir / "tts_vocoder.onnx")
    with pytest.raises(InputError, match=r"missing \['mel'\], unexpected \['mels'\]"):
        runner.infer({"mels": torch.zeros(1, 3, 80)})
    # a folder with only the FP32 graph (the session's shared folder gains INT8 graphs as other tests make them)
    shutil.copy(tts_onnx_dir / "tts_vocoder.onnx", tmp_path / "tts_vocoder.onnx")
    with pytest.raises(EngineLoadError, match="speechtrt calibrate --model tts --precision int8"):
        open_runner("tts_vocoder", "ort", "int8", artifacts=Artifacts(tmp_path))
    with pytest.raises(InputError, match="runs fp32, fp16, bf16, int8, not 'fp8'"):
        TorchRunner(component("tts_vocoder"), tts_model, precision="fp8")


def test_torch_int8_is_dynamic_quantization_close_to_fp32(tts_model):
    comp = component("tts_decoder_step")
    feeds = comp.make_inputs(tts_model, {"batch": 2, "past": 7, "text": 9}, torch.Generator().manual_seed(3))
    ref = open_runner(comp, "torch", artifacts=Artifacts(model=tts_model)).infer(feeds)["frame"]
    int8 = open_runner(comp, "torch", "int8", artifacts=Artifacts(model=tts_model))
    assert any("quantized" in type(m).__module__ for m in int8.module.modules())
    assert relative_l2(int8.infer(feeds)["frame"].numpy(), ref.numpy()) < 0.1


def test_torch_int8_keeps_the_tts_encoder_at_fp32(tts_model):
    """The encoder sets every phoneme's timing once per sentence: INT8 leaves it FP32 (its outputs equal FP32's
    exactly), while the decoder step, run once per frame, is quantized."""
    comp = component("tts_encoder")
    assert "once per sentence" in comp.int8_keeps_fp32 and not component("tts_decoder_step").int8_keeps_fp32
    feeds = comp.make_inputs(tts_model, {"batch": 2, "text": 9}, torch.Generator().manual_seed(4))
    ref = open_runner(comp, "torch", artifacts=Artifacts(model=tts_model)).infer(feeds)
    int8 = open_runner(comp, "torch", "int8", artifacts=Artifacts(model=tts_model))
    assert int8.precision == "int8" and not any("quantized" in type(m).__module__ for m in int8.module.modules())
    out = int8.infer(feeds)
    assert all(torch.equal(out[name], ref[name]) for name in ("memory", "cross_k", "cross_v"))


def test_torch_runner_bf16_stays_close_to_fp32(tts_model):
    comp = component("tts_vocoder")
    feeds = comp.make_inputs(tts_model, {"batch": 1, "frames": 20}, torch.Generator().manual_seed(2))
    ref = TorchRunner(comp, tts_model).infer(feeds)["audio"]
    low = TorchRunner(comp, tts_model, precision="bf16").infer(feeds)["audio"]
    assert low.dtype == torch.bfloat16
    assert relative_l2(low.float().numpy(), ref.numpy()) < 0.05
    assert tts_model.vocoder[0].weight.dtype == torch.float32  # the shared model is not cast in place
