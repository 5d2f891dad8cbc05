"""Training augmentation: every step deterministic under a seed, finite (silence included), lengths kept where they
must be, noise at the SNR asked for, and the chain as a whole reproducible."""

import random

import numpy as np
import pytest
import torch

from speechtrt.asr.augment import (AUGMENTATIONS, AugmentConfig, BabblePool, add_noise, apply_gain, augment_waveform,
                                   babble_noise, mu_law, parse_augmentations, pink_noise, reverberate,
                                   room_impulse_response, spec_augment, speed_perturb, telephone, white_noise)
from speechtrt.errors import InputError

N = 24000  # 1.5 s at 16 kHz


def _speech_like(seed: int = 0, n: int = N) -> np.ndarray:
    """A voiced-sounding test signal: harmonics of 120 Hz under a syllable-rate envelope."""
    t = np.arange(n) / 16000
    x = sum(np.sin(2 * np.pi * 120 * k * t + seed) / k for k in range(1, 20))
    return (0.3 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) / 4).astype(np.float32)


def _gen(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


STEPS = {
    "white": lambda x, g: add_noise(x, white_noise(len(x), g), 10.0),
    "pink": lambda x, g: add_noise(x, pink_noise(len(x), g), 10.0),
    "babble": lambda x, g: add_noise(x, babble_noise(len(x), [_speech_like(1, 9000), _speech_like(2, 30000)], g), 5),
    "reverb": lambda x, g: reverberate(x, 0.6, g),
    "telephone": lambda x, g: telephone(x),
    "gain": lambda x, g: apply_gain(x, -6.0),
}


@pytest.mark.parametrize("name", list(STEPS))
def test_each_step_is_seeded_finite_and_keeps_the_length(name):
    x = _speech_like()
    a, b = STEPS[name](x, _gen(3)), STEPS[name](x, _gen(3))
    assert a.dtype == np.float32 and a.shape == x.shape
    assert np.array_equal(a, b)
    assert np.isfinite(a).all() and not np.array_equal(a, x)
    silence = STEPS[name](np.zeros(N, dtype=np.float32), _gen(3))
    assert silence.shape == (N,) and np.isfinite(silence).all()


def test_noise_lands_at_the_snr_asked_for():
    x = _speech_like()
    for make in (white_noise, pink_noise):
        for snr in (0.0, 10.0, 25.0):
            noisy = add_noise(x, make(N, _gen(1)), snr)
            measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
            assert measured == pytest.approx(snr, abs=0.05)


def test_pink_noise_has_more_power_low_than_high():
    spectrum = np.abs(np.fft.rfft(pink_noise(1 << 16, _gen(0)))) ** 2
    freqs = np.fft.rfftfreq(1 << 16, 1 / 16000)
    low, high = spectrum[(freqs > 100) & (freqs < 200)].mean(), spectrum[(freqs > 3200) & (freqs < 6400)].mean()
    assert 10 * np.log10(low / high) == pytest.approx(10 * np.log10(32), abs=2.0)  # 1/f: 5 octaves ≈ 15 dB


def test_speed_changes_the_length_by_its_factor_and_only_speed_does():
    x = _speech_like()
    assert len(speed_perturb(x, 0.9)) == pytest.approx(N / 0.9, abs=2)
    assert len(speed_perturb(x, 1.1)) == pytest.approx(N / 1.1, abs=2)
    assert np.array_equal(speed_perturb(x, 1.0), x)


def test_room_impulse_response_decays_by_60_db_in_rt60():
    h = room_impulse_response(0.5, _gen(0)).astype(np.float64)
    assert h[0] == 1.0 and len(h) > 0.5 * 16000
    tail = h[np.flatnonzero(h[1:])[0] + 1:]
    first, last = np.sqrt(np.mean(tail[:400] ** 2)), np.sqrt(np.mean(tail[-800:-400] ** 2))
    assert 20 * np.log10(first / last) == pytest.approx(60 * (len(tail) - 1000) / 8000, abs=6)


def test_telephone_removes_what_a_phone_line_cannot_carry():
    t = np.arange(N) / 16000
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)
    out = telephone((0.4 * (low + high)).astype(np.float32))
    spectrum = np.abs(np.fft.rfft(out[2000:-2000]))
    freqs = np.fft.rfftfreq(N - 4000, 1 / 16000)
    at = lambda f: spectrum[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert at(1000) > 100 * at(6000)
    # 8-bit μ-law: at most 256 levels, about the same relative precision (≤ 2.5 %) from −26 dBFS to full scale
    x = np.concatenate([-np.geomspace(1, 0.05, 200), np.geomspace(0.05, 1, 200)])
    coded = mu_law(x)
    assert len(np.unique(coded)) <= 256
    assert np.max(np.abs(coded - x) / np.abs(x)) < 0.025


def test_babble_is_made_of_other_utterances_never_the_one_augmented():
    pool = BabblePool([np.full(100, i, dtype=np.int16) for i in range(5)])
    rng = random.Random(0)
    drawn = [int(u[0]) for _ in range(200) for u in pool.draw(rng, 4, exclude=2)]
    assert 2 not in drawn and set(drawn) == {0, 1, 3, 4}
    assert BabblePool([np.zeros(10)]).draw(random.Random(0), 3, exclude=0) == []


def test_the_whole_chain_is_reproducible_under_a_seed_and_varies_across_seeds():
    utterances = [(_speech_like(i, N + 1000 * i) * 32767).astype(np.int16) for i in range(6)]
    pool = BabblePool(utterances)
    everything = AugmentConfig(reverb_p=1.0, noise_p=1.0, telephone_p=1.0)
    outs = []
    for seed in range(8):
        a = augment_waveform(utterances[0], random.Random(seed), everything, pool, 0)
        b = augment_waveform(utterances[0], random.Random(seed), everything, pool, 0)
        assert np.array_equal(a, b) and a.dtype == np.float32 and np.isfinite(a).all()
        assert abs(len(a) - N / 1.1) < 2 or abs(len(a) - N / 0.9) < 2 or len(a) == N
        outs.append(a)
    assert len({o.tobytes() for o in outs}) == len(outs)
    # without speed the length is kept exactly
    no_speed = AugmentConfig(kinds=tuple(k for k in AUGMENTATIONS if k != "speed"), reverb_p=1, noise_p=1,
                             telephone_p=1)
    assert len(augment_waveform(utterances[1], random.Random(1), no_speed, pool, 1)) == len(utterances[1])
    # silence through every step stays finite
    quiet = augment_waveform(np.zeros(N, dtype=np.int16), random.Random(0), everything, pool, None)
    assert np.isfinite(quiet).all()


def test_spec_augment_is_seeded_and_keeps_the_shape():
    mel = torch.randn(300, 80)
    a, b = spec_augment(mel, random.Random(5)), spec_augment(mel, random.Random(5))
    assert a.shape == mel.shape and torch.equal(a, b) and not torch.equal(a, mel)
    assert torch.isfinite(spec_augment(torch.zeros(0, 80), random.Random(0))).all()


def test_augmentation_names_are_checked():
    assert parse_augmentations("reverb,speed") == ("speed", "reverb")
    assert parse_augmentations("none") == ()
    with pytest.raises(InputError, match="--augmentations: unknown augmentation"):
        parse_augmentations("speed,echo")
