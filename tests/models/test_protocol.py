"""The reference models follow the protocols a user's model follows, and the generic graph specs derived from a
protocol reproduce the registry's."""

from __future__ import annotations

import pytest
import torch

from speechtrt.models.protocol import (OfflineASRModel, StreamingASR, TTSModel, asr_model_problems, batch_axes,
                                       model_kind, tts_model_problems)


@pytest.mark.parametrize("name,protocol,kind", [
    ("tts", TTSModel, "tts"), ("asr-small", OfflineASRModel, "asr"), ("asr-stream", StreamingASR, "asr-stream"),
])
def test_reference_models_fit_their_protocol(models, name, protocol, kind):
    model = models(name)
    assert isinstance(model, protocol) and model_kind(model) == kind
    problems = tts_model_problems(model) if kind == "tts" else asr_model_problems(model)
    assert problems == []


def test_generic_specs_equal_the_registrys(models):
    from speechtrt.config import TTSConfig
    from speechtrt.export.components import component, components_of, stream_component

    stream = stream_component(models("asr-stream"), "asr-stream", "asr_stream_step")
    ref = component("asr_stream_step")
    assert stream.inputs == ref.inputs and stream.outputs == ref.outputs and stream.dims == ref.dims
    (asr,) = components_of(models("asr-small"), "asr-small")
    assert asr.inputs == component("asr_small").inputs and asr.outputs == component("asr_small").outputs
    assert [c.name for c in components_of(models("tts"), "voice-x")] == ["tts_encoder", "tts_decoder_step",
                                                                         "tts_vocoder"]
    small = components_of(type("M", (), {"config": TTSConfig(max_frames=40, max_text_len=32),
                                         "decode_step": lambda *a: None})(), "m")
    assert {c.model for c in small} == {"m"}
    step = small[1]
    assert step.dims["past"].opt <= step.dims["past"].max == 40 and step.dims["text"].opt <= 32


def test_batch_axes_are_found_or_refused():
    from speechtrt.errors import InputError

    one = {"h": torch.zeros(4, 1, 8), "ctx": torch.zeros(1, 3)}
    two = {"h": torch.zeros(4, 2, 8), "ctx": torch.zeros(2, 3)}
    assert batch_axes(one, two) == {"h": 1, "ctx": 0}
    with pytest.raises(InputError, match="exactly one batch axis"):
        batch_axes({"s": torch.zeros(1, 1)}, {"s": torch.zeros(2, 2)})
