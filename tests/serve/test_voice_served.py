"""The trained voice behind the OpenAI speech route: decoded to its stop token, the same audio as `speechtrt tts`."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from speechtrt.models.loading import checkpoint_path
from tests.serve.conftest import small_config

TEXT = "Hello there."


@pytest.mark.slow
def test_voice_en_speaks_through_the_openai_client_as_the_tts_command_does():
    from openai import OpenAI

    from speechtrt.models.audio import espeak_available
    from speechtrt.models.loading import resolve_model
    from speechtrt.serve import TTSServeConfig, running_server
    from speechtrt.tts.synthesize import SynthesisOptions, synthesize_texts

    if checkpoint_path("voice-en") is None or not espeak_available():
        pytest.skip("needs checkpoints/voice-en.pt and espeak-ng (the voice reads phonemes)")
    model = resolve_model("voice-en", kind="tts").model
    alone = synthesize_texts(model, [TEXT], SynthesisOptions(max_slots=2, threads=1))[0]
    assert alone.finish_reason == "stop_token" and alone.frames < model.config.max_frames

    config = small_config(tts=TTSServeConfig(models=("voice-en",), max_slots=2, max_concurrent=2,
                                             max_frames=model.config.max_frames, max_text=model.config.max_text_len,
                                             lead_chars=0),
                          asr=None, stream=None)
    with running_server(config) as srv:
        client = OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0, timeout=120)
        wav = client.audio.speech.create(model="voice-en", voice="alloy", input=TEXT, response_format="wav")
        assert wav.response.headers["x-speechtrt-model"] == "voice-en"
    audio, rate = soundfile.read(io.BytesIO(wav.content), dtype="float32")
    assert rate == model.config.mel.sample_rate == 16000
    assert audio.shape == alone.audio.shape  # the stop token ends both at the same frame
    # Griffin-Lim's phase is a chaotic function of the mel (1e-6 of float noise from a different batch moves the
    # waveform by ~2 %), so the two are compared as spectra: the magnitudes a listener hears
    assert _spectral_distance(audio, alone.audio) < 0.02


def _spectral_distance(a: np.ndarray, b: np.ndarray) -> float:
    import torch

    window = torch.hann_window(1024)
    mag = [torch.stft(torch.from_numpy(np.ascontiguousarray(x, np.float32)), 1024, 256, window=window,
                      return_complex=True).abs() for x in (a, b)]
    return float(torch.linalg.norm(mag[0] - mag[1]) / torch.linalg.norm(mag[1]))
