"""Durations of an aligned voice: espeak-ng's own phoneme timing (through libespeak-ng's phoneme events) lined up
with the voice's tokens, and the attention of an attention voice."""

import math
import shutil

import pytest
import torch

from speechtrt.models.audio import espeak_speech
from speechtrt.models.phonemes import phoneme_symbols
from speechtrt.models.vocoder import MelConfig, log_mel_magnitude
from speechtrt.tts.align import espeak_durations, espeak_phoneme_times

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
TEXT = 'Try a single person, for a "change".'
STEPS_PER_SECOND = 16000 / 256 / 4


@needs_espeak
def test_espeak_timing_matches_the_audio_the_voice_learns():
    """The library's first phoneme starts where the command-line audio stops being silent, and its phonemes are
    the ones the tokens name, in order."""
    events, total = espeak_phoneme_times(TEXT, "en-us", 175, 50)
    audio = espeak_speech(TEXT, sample_rate=16000)
    loud = torch.nonzero(torch.from_numpy(abs(audio) > 0.01))[:, 0]
    assert abs(events[0][0] - float(loud[0]) / 16000) < 0.005
    assert total < len(audio) / 16000 < total + 0.5  # the command line appends silence
    spoken = [p for _, p in events if not p.startswith("_")]
    symbols = phoneme_symbols(TEXT)
    assert spoken == [s for s in symbols if not s.startswith(("<", "_")) and s not in ("'", ",")]


@needs_espeak
def test_espeak_durations_give_each_token_its_span():
    symbols = phoneme_symbols(TEXT)
    mel = log_mel_magnitude(espeak_speech(TEXT, sample_rate=16000), MelConfig())
    steps = math.ceil(mel.shape[0] / 4)
    d = espeak_durations(TEXT, symbols, steps, STEPS_PER_SECOND)
    assert d.shape == (len(symbols),) and float(d.sum()) == pytest.approx(steps, rel=1e-5)
    assert bool((d >= 0).all())
    for i, s in enumerate(symbols):
        if s in ("'", ",", "<w>"):
            assert float(d[i]) == 0.0, s
    events, total = espeak_phoneme_times(TEXT, "en-us", 175, 50)
    starts = [t for t, _ in events] + [total]
    r = symbols.index("r")  # second phoneme: its own span exactly
    assert float(d[r]) == pytest.approx((starts[2] - starts[1]) * STEPS_PER_SECOND, rel=1e-3)
    assert float(d[0]) > (starts[1] - starts[0]) * STEPS_PER_SECOND  # the first token also takes the lead-in
    assert float(d[symbols.index("<,>")]) > 0.5 and float(d[-1]) > 2.0  # a clause pause; the appended silence
    wrong = list(symbols)
    wrong[r] = "l"
    assert espeak_durations(TEXT, wrong, steps, STEPS_PER_SECOND) is None


def test_attention_durations_spread_every_step_over_the_tokens():
    from speechtrt.models.vocoder import MelConfig as Mel
    from speechtrt.models.voice import VoiceConfig, build_voice
    from speechtrt.tts.align import attention_durations

    cfg = VoiceConfig(hidden_dim=32, num_heads=2, num_layers=2, encoder_layers=1, encoder_convs=1, ffn_dim=64,
                      prenet_dim=16, postnet_channels=16, postnet_layers=3, max_text_len=32, max_frames=40,
                      mel=Mel(gl_iters=4))
    model = build_voice(cfg, seed=1)
    gen = torch.Generator().manual_seed(2)
    items = [{"text": "x", "tokens": torch.randint(4, cfg.vocab_size, (n,), generator=gen).short(),
              "mel": torch.randn(f, 80, generator=gen).half()} for n, f in ((5, 17), (9, 30), (3, 8))]
    d = attention_durations(model, items)
    for item, x in zip(items, d):
        assert x.shape == item["tokens"].shape and bool((x >= 0).all())
        assert float(x.sum()) == pytest.approx(math.ceil(item["mel"].shape[0] / 4), rel=1e-5)
