"""The TensorRT runner: refused cleanly where it cannot run; parity with torch where an engine runs."""

import os
from pathlib import Path

import pytest
import torch

from speechtrt.errors import EngineLoadError
from speechtrt.export import component, relative_l2
from speechtrt.runtime.open import Artifacts, open_runner


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_trt_backend_is_refused_without_a_gpu(tts_model, tmp_path):
    from speechtrt.runtime.trt import TrtRunner
    from speechtrt.tts.service import ServiceConfig, TTSService

    with pytest.raises(EngineLoadError, match="needs a CUDA GPU.*--backend ort or torch"):
        open_runner("tts_vocoder", "trt", "fp16", artifacts=Artifacts(engine_dir=tmp_path))
    with pytest.raises(EngineLoadError, match="needs a CUDA GPU"):
        TrtRunner(tmp_path / "tts_vocoder.fp16.plan")
    with pytest.raises(EngineLoadError):
        TTSService(tts_model, ServiceConfig(backend="trt", engine_dir=str(tmp_path)))


@pytest.mark.gpu
def test_trt_vocoder_matches_torch(tts_model):
    """Needs plans from `speechtrt build --model tts` in $SPEECHTRT_ENGINES (default engines/)."""
    root = Path(os.environ.get("SPEECHTRT_ENGINES", "engines"))
    try:
        runner = open_runner("tts_vocoder", "trt", "fp32", "cuda", Artifacts(engine_dir=root))
    except EngineLoadError as exc:
        pytest.skip(f"no runnable TTS engine here: {exc}")
    comp = component("tts_vocoder")
    feeds = comp.make_inputs(tts_model, {"batch": 2, "frames": 40}, torch.Generator().manual_seed(0))
    ref = open_runner(comp, "torch", artifacts=Artifacts(model=tts_model)).infer(feeds)["audio"]
    got = runner.infer({k: v.cuda() for k, v in feeds.items()})["audio"]
    torch.cuda.synchronize()
    assert relative_l2(got.float().cpu().numpy(), ref.numpy()) < 1e-3
