"""DNSMOS on speechmos' ONNX files: the librosa-free feature front end and the scores' behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from speechtrt.tts.dnsmos import DNSMOS, MOS, model_dir, p808_features, slaney_filterbank


def test_the_models_come_from_the_speechmos_wheel():
    folder = model_dir()
    assert (folder / "model_v8.onnx").is_file() and (folder / "sig_bak_ovr.onnx").is_file()


def test_slaney_filterbank_equals_librosas():
    """Values of ``librosa.filters.mel(sr=16000, n_fft=321, n_mels=120)`` (librosa 0.11), the call DNSMOS makes."""
    fb = slaney_filterbank()
    assert fb.shape == (120, 161) and (fb >= 0).all()
    assert np.allclose(fb[0, :3], [0.0, 2.127e-05, 0.0], atol=1e-8)
    assert int(fb[60].argmax()) == 34 and fb[60].max() == pytest.approx(0.014328802935779095, rel=1e-5)
    assert fb[119].sum() == pytest.approx(0.020068015903234482, rel=1e-5)
    assert fb.sum() == pytest.approx(2.39750337600708, rel=1e-5)


def test_p808_features_are_db_relative_to_the_maximum_with_an_80_db_floor():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 9)).astype(np.float32)
    f = p808_features(audio)
    assert f.shape == (1 + (16000 * 9 - 1) // 160, 120)  # centred frames of a 321-point window
    assert f.max() == pytest.approx(1.0)  # 0 dB re max -> (0 + 40) / 40
    assert f.min() >= (-80 + 40) / 40 - 1e-6


@pytest.fixture(scope="module")
def scorer():
    return DNSMOS(threads=1)


def test_speech_scores_above_noise_and_scores_are_deterministic(scorer):
    from speechtrt.models.audio import espeak_available, espeak_speech

    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    speech = espeak_speech("The quick brown fox jumps over the lazy dog, and then it runs away.")
    noise = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    s, n = scorer(speech), scorer(noise)
    assert isinstance(s, MOS) and s == scorer(speech)
    for m in (s, n):
        assert all(0.5 < getattr(m, k) < 5.5 for k in ("p808_mos", "sig", "bak", "ovrl"))
    assert s.p808_mos > n.p808_mos + 0.5 and s.ovrl > n.ovrl


def test_dnsmos_refuses_other_rates(scorer):
    from speechtrt.errors import InputError

    with pytest.raises(InputError, match="16 kHz"):
        scorer(np.zeros(22050, np.float32), 22050)
