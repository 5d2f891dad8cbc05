"""A small real calibration/held-out set and FP32 graphs of the three fast components, made once per session."""

from __future__ import annotations

import pytest

FAST = ("asr_small", "asr_stream_step", "tts_vocoder")


@pytest.fixture(scope="session")
def quant_dirs(tmp_path_factory, models):
    """(onnx_dir, calib_dir): FP32 graphs of FAST and their captured sets (16 calibration, 8 held-out samples)."""
    from speechtrt.export import component
    from speechtrt.pipeline import export_component
    from speechtrt.quantize.calib import CaptureConfig, capture

    onnx_dir = tmp_path_factory.mktemp("q_onnx")
    calib_dir = tmp_path_factory.mktemp("q_calib")
    comps = [component(n) for n in FAST]
    for comp in comps:
        export_component(comp, models(comp.model), onnx_dir, check=False)
    capture(comps, calib_dir, CaptureConfig(samples=16, heldout=8, tts_max_chars=20))  # 20 chars -> 100 frames
    return onnx_dir, calib_dir
