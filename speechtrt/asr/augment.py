"""On-the-fly training augmentation: what a voice goes through between a mouth and a microphone, drawn per
utterance from one seeded ``random.Random``.

The chain (each step present when its name is in :attr:`AugmentConfig.kinds`):

1. ``speed`` — resampling by 0.9 / 1.0 / 1.1 (tempo and pitch together; the only step that changes the length);
2. ``reverb`` — on 30 % of utterances, convolution with a synthetic room impulse response: a direct path, then
   exponentially decaying Gaussian noise with a reverberation time RT60 of 0.2–0.8 s (the statistical model of
   late reverberation; no sox process per utterance), output level matched to the input;
3. ``noise`` / ``babble`` — on half the utterances, additive noise at a signal-to-noise ratio drawn from
   5–30 dB: white or pink (1/f power) (``noise``), or babble (3–6 other training utterances summed, each from a
   random offset) (``babble``), equally likely among those enabled;
4. ``telephone`` — on 15 % of utterances, a narrow-band channel: 300–3400 Hz band-pass, down to 8 kHz, 8-bit
   μ-law, back to 16 kHz;
5. ``gain`` — −10 to +2 dB.

Every function takes and returns float32 mono at 16 kHz, keeps the length (except ``speed``), and returns finite
samples for any finite input, silence included. SpecAugment (:func:`spec_augment`) acts on the log-mel afterwards.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from speechtrt.errors import InputError
from speechtrt.models.audio import FEATURES, resample
from speechtrt.vocab import AUGMENTATIONS


_EPS = 1e-10


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and how strongly. Probabilities are per utterance."""

    kinds: tuple[str, ...] = AUGMENTATIONS
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    reverb_p: float = 0.3
    rt60_s: tuple[float, float] = (0.2, 0.8)
    noise_p: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    babble_talkers: tuple[int, int] = (3, 6)
    telephone_p: float = 0.15
    gain_db: tuple[float, float] = (-10.0, 2.0)


def parse_augmentations(value: str, flag: str = "--augmentations") -> tuple[str, ...]:
    """A comma-separated subset of :data:`AUGMENTATIONS` (``none`` or empty: none); InputError naming ``flag``."""
    names = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise InputError(f"{flag}: unknown augmentation(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(AUGMENTATIONS)} (or none)")
    return tuple(n for n in AUGMENTATIONS if n in names)


def _generator(rng: random.Random) -> np.random.Generator:
    return np.random.default_rng(rng.randrange(2**31))


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.mean(np.square(x, dtype=np.float64))) + _EPS) if x.size else math.sqrt(_EPS)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``n`` samples."""
    if x.shape[0] >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - x.shape[0], dtype=x.dtype)])


# ---------------------------------------------------------------- the steps


def speed_perturb(x: np.ndarray, factor: float, sample_rate: int = FEATURES.sample_rate) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch follows): [N] -> [≈ N / factor]."""
    if factor == 1.0:
        return x.astype(np.float32)
    return resample(x, int(round(sample_rate * factor)), sample_rate)


def apply_gain(x: np.ndarray, db: float) -> np.ndarray:
    return (x * np.float32(10 ** (db / 20))).astype(np.float32)


def white_noise(n: int, gen: np.random.Generator) -> np.ndarray:
    """Unit-RMS white Gaussian noise: [n]."""
    return gen.standard_normal(n).astype(np.float32)


def pink_noise(n: int, gen: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink noise (power ∝ 1/f), shaped from white noise in the frequency domain: [n]."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    spectrum = np.fft.rfft(gen.standard_normal(n))
    f = np.arange(spectrum.shape[0], dtype=np.float64)
    f[0] = 1.0  # no DC boost: the DC bin keeps the white level
    pink = np.fft.irfft(spectrum / np.sqrt(f), n=n)
    return (pink / _rms(pink)).astype(np.float32)


def babble_noise(n: int, talkers: Sequence[np.ndarray], gen: np.random.Generator) -> np.ndarray:
    """Unit-RMS babble: each of ``talkers`` (other utterances, any dtype scale) levelled to unit RMS, read from a
    random offset and looped to ``n`` samples, then summed: [n]."""
    out = np.zeros(n, dtype=np.float64)
    for talker in talkers:
        t = np.asarray(talker, dtype=np.float64)
        if t.size == 0:
            continue
        t = np.tile(t, int(math.ceil((n + t.size) / t.size)))
        start = int(gen.integers(0, talker.size))
        out += t[start:start + n] / _rms(talker.astype(np.float64))
    return (out / _rms(out)).astype(np.float32) if np.any(out) else out.astype(np.float32)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled so that power(x) / power(noise) = ``snr_db``: same length as ``x``."""
    noise = _fit(noise, x.shape[0])
    scale = _rms(x) / (_rms(noise) * 10 ** (snr_db / 20))
    return (x + noise * np.float32(scale)).astype(np.float32)


def room_impulse_response(rt60_s: float, gen: np.random.Generator, sample_rate: int = FEATURES.sample_rate
                          ) -> np.ndarray:
    """A synthetic room: a unit direct path, 2–10 ms of silence, then Gaussian noise starting at 0.05 and decaying
    by 60 dB in ``rt60_s`` seconds, ``rt60_s`` long: [L]. The direct-to-reverberant ratio follows from RT60:
    about +2 dB at 0.2 s, −4 dB at 0.8 s (a talker a few metres away)."""
    n = max(1, int(rt60_s * sample_rate))
    gap = int(gen.integers(int(0.002 * sample_rate), int(0.010 * sample_rate)))
    t = np.arange(n, dtype=np.float64) / sample_rate
    h = np.zeros(1 + gap + n)
    h[0] = 1.0
    h[1 + gap:] = 0.05 * gen.standard_normal(n) * np.exp(-math.log(1000.0) * t / rt60_s)  # 10^-3 = -60 dB
    return h.astype(np.float32)


def reverberate(x: np.ndarray, rt60_s: float, gen: np.random.Generator,
                sample_rate: int = FEATURES.sample_rate) -> np.ndarray:
    """``x`` in a synthetic room (:func:`room_impulse_response`), cut to its length, at its RMS level: [N]."""
    from scipy.signal import fftconvolve

    if x.size == 0:
        return x.astype(np.float32)
    wet = fftconvolve(x.astype(np.float64), room_impulse_response(rt60_s, gen, sample_rate))[: x.shape[0]]
    return (wet * (_rms(x) / _rms(wet))).astype(np.float32)


def mu_law(x: np.ndarray, bits: int = 8) -> np.ndarray:
    """Encode and decode with μ-law companding at ``bits`` bits (G.711-like); input clipped to [-1, 1]."""
    mu = 2**bits - 1
    x = np.clip(x.astype(np.float64), -1.0, 1.0)
    code = np.round((np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) + 1) / 2 * mu)
    y = 2 * code / mu - 1
    return (np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _telephone_band(sample_rate: int) -> np.ndarray:
    from scipy.signal import butter

    return butter(4, [300.0, 3400.0], btype="bandpass", fs=sample_rate, output="sos")


def telephone(x: np.ndarray, sample_rate: int = FEATURES.sample_rate) -> np.ndarray:
    """A telephone channel: 300–3400 Hz band-pass, 8 kHz, 8-bit μ-law, back to ``sample_rate``: [N] -> [N]."""
    from scipy.signal import sosfilt

    if x.size == 0:
        return x.astype(np.float32)
    sos = _telephone_band(sample_rate)
    narrow = resample(sosfilt(sos, x.astype(np.float64)).astype(np.float32), sample_rate, 8000)
    peak = float(np.max(np.abs(narrow))) + _EPS
    coded = mu_law(narrow / peak) * peak  # the codec sees a full-scale signal, as a phone's level control gives it
    return _fit(resample(coded, 8000, sample_rate), x.shape[0]).astype(np.float32)


# ---------------------------------------------------------------- the chain


class BabblePool:
    """Other utterances to make babble from: ``draw`` returns ``k`` of them, never the one being augmented."""

    def __init__(self, utterances: Sequence[np.ndarray]):
        self.utterances = utterances

    def draw(self, rng: random.Random, k: int, exclude: int | None = None) -> list[np.ndarray]:
        candidates = len(self.utterances) - (exclude is not None)
        if candidates <= 0:
            return []
        out = []
        for _ in range(k):
            i = rng.randrange(len(self.utterances))
            if i == exclude:
                i = (i + 1) % len(self.utterances)
            out.append(self.utterances[i])
        return out


def augment_waveform(samples: np.ndarray, rng: random.Random, cfg: AugmentConfig = AugmentConfig(),
                     babble: BabblePool | None = None, index: int | None = None) -> np.ndarray:
    """One draw of the chain for one utterance: int16 or float samples [N] -> float32 [N'] (N' ≠ N only by
    speed). ``babble`` supplies other utterances (``index``: this one's position in it, never drawn). The same
    ``rng`` state gives the same output."""
    x = samples.astype(np.float32) / (32767.0 if samples.dtype == np.int16 else 1.0)
    kinds = cfg.kinds
    # every draw happens whether or not its step runs, so one kind's presence does not shift another's draws
    speed = rng.choice(cfg.speeds)
    do_reverb, rt60 = rng.random() < cfg.reverb_p, rng.uniform(*cfg.rt60_s)
    do_noise, snr, pick = rng.random() < cfg.noise_p, rng.uniform(*cfg.snr_db), rng.random()
    noises = ["white", "pink"] if "noise" in kinds else []
    noises += ["babble"] if "babble" in kinds and babble is not None and len(babble.utterances) > 1 else []
    talkers = rng.randint(*cfg.babble_talkers)
    do_phone = rng.random() < cfg.telephone_p
    gain = rng.uniform(*cfg.gain_db)
    gen = _generator(rng)
    if "speed" in kinds:
        x = speed_perturb(x, speed)
    if "reverb" in kinds and do_reverb:
        x = reverberate(x, rt60, gen)
    if do_noise and noises:
        kind = noises[min(len(noises) - 1, int(pick * len(noises)))]
        if kind == "babble":
            noise = babble_noise(x.shape[0], babble.draw(rng, talkers, index), gen)
        else:
            noise = pink_noise(x.shape[0], gen) if kind == "pink" else white_noise(x.shape[0], gen)
        x = add_noise(x, noise, snr)
    if "telephone" in kinds and do_phone:
        x = telephone(x)
    if "gain" in kinds:
        x = apply_gain(x, gain)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def spec_augment(mel: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Two frequency masks (≤ 12 bins) and two time masks (≤ 4 % of frames); masked cells take the utterance mean.
    [T, F] -> [T, F]."""
    mel = mel.clone()
    t, f = mel.shape
    fill = mel.mean() if mel.numel() else 0.0
    for _ in range(2):
        w = rng.randint(0, 12)
        f0 = rng.randint(0, max(0, f - w))
        mel[:, f0:f0 + w] = fill
    for _ in range(2):
        w = rng.randint(0, max(1, int(0.04 * t)))
        t0 = rng.randint(0, max(0, t - w))
        mel[t0:t0 + w, :] = fill
    return mel
