"""Bench fixtures: the seed TTS model and its three exported graphs (made once per test session)."""

from __future__ import annotations

import pytest


def export_tts_graphs(tmp_path_factory, model):
    """Export tts_encoder / tts_decoder_step / tts_vocoder once per session into a shared temporary folder."""
    from speechtrt.export import components_for, export_component

    out = tmp_path_factory.getbasetemp() / "tts_onnx"
    if not (out / "tts_vocoder.json").is_file():
        for comp in components_for("tts"):
            export_component(comp, model, out, check=False)
    return out


@pytest.fixture(scope="session")
def tts_model():
    from speechtrt.models import build_tts

    return build_tts(seed=0)


@pytest.fixture(scope="session")
def tts_onnx_dir(tmp_path_factory, tts_model):
    return export_tts_graphs(tmp_path_factory, tts_model)
