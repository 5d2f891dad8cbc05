"""The audio front end shared by training, evaluation, calibration and streaming: WAV I/O, espeak-ng speech,
80-bin log-mel features.

Features are computed without centring (no reflection padding): frame ``i`` covers samples
``[i * hop, i * hop + win)``. A stream that keeps the last ``win - hop`` samples of each chunk therefore produces
exactly the frames the offline pass produces, which is what lets a streaming transcript equal the offline one.
"""

from __future__ import annotations

import functools
import io
import math
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechtrt.errors import InputError


@dataclass(frozen=True)
class FeatureConfig:
    """16 kHz audio, 25 ms Hann window, 10 ms hop, 80 mel bins (HTK mel scale, 20 Hz – 7.6 kHz), natural log."""

    sample_rate: int = 16000
    n_fft: int = 400
    hop: int = 160
    n_mels: int = 80
    f_min: float = 20.0
    f_max: float = 7600.0
    log_floor: float = 1e-6

    @property
    def overlap(self) -> int:
        """Samples a stream carries from one chunk into the next."""
        return self.n_fft - self.hop

    def frames_for(self, n_samples: int) -> int:
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop


FEATURES = FeatureConfig()


@functools.lru_cache(maxsize=4)
def mel_filterbank(cfg: FeatureConfig = FEATURES) -> torch.Tensor:
    """Triangular filters on the HTK mel scale: [n_fft // 2 + 1, n_mels]."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down)).T  # [F, M]
    return torch.from_numpy(fb.astype(np.float32))


def log_mel(samples: np.ndarray | torch.Tensor, cfg: FeatureConfig = FEATURES) -> torch.Tensor:
    """Log-mel features of mono audio at ``cfg.sample_rate``: samples [N] -> [frames, n_mels] (float32).

    Fewer than ``n_fft`` samples give zero frames (shape ``[0, n_mels]``).
    """
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32) if not isinstance(samples, torch.Tensor) else samples)
    x = x.to(torch.float32).reshape(-1)
    n = cfg.frames_for(x.numel())
    if n == 0:
        return torch.zeros(0, cfg.n_mels)
    return log_mel_frames(x[: (n - 1) * cfg.hop + cfg.n_fft].unfold(0, cfg.n_fft, cfg.hop), cfg)


def log_mel_frames(frames: torch.Tensor, cfg: FeatureConfig = FEATURES) -> torch.Tensor:
    """The feature arithmetic on cut frames, on their device: [..., n_fft] samples -> [..., n_mels] log-mel.

    Periodic Hann window, power spectrum, HTK mel filterbank, natural log with ``cfg.log_floor``. :func:`log_mel`
    (whole utterances) and the streaming featurizer (chunks of many streams) both call it.
    """
    window, filterbank = _feature_constants(cfg, frames.device)
    spectrum = torch.view_as_real(torch.fft.rfft(frames * window, dim=-1))  # [..., F, 2]
    re, im = spectrum[..., 0], spectrum[..., 1]
    power = torch.addcmul(re * re, im, im)  # |X|² without the square root that |X| takes (a third of the time)
    return torch.matmul(power, filterbank).add_(cfg.log_floor).log_()


@functools.lru_cache(maxsize=8)
def _feature_constants(cfg: FeatureConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The window and filterbank on ``device``, made once per device (they are the same for every call); ordinary
    tensors even when the first call comes from inside ``torch.inference_mode``."""
    with torch.inference_mode(False):
        return (torch.hann_window(cfg.n_fft, periodic=True, device=device), mel_filterbank(cfg).to(device))


# ---------------------------------------------------------------- WAV files


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file: returns (samples float32 in [-1, 1], shape [N] or [N, channels], sample rate).

    Raises :class:`InputError` naming the file for a missing, unreadable or non-PCM file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {path} does not exist: check the manifest's audio_filepath")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as exc:
        raise InputError(f"audio file {path} is not a readable PCM WAV ({exc}); convert it with sox or ffmpeg") from exc
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise InputError(f"audio file {path} has {8 * width}-bit samples; use 8, 16 or 32-bit PCM")
    data = np.frombuffer(raw, dtype=dtype).astype(np.float32)
    data = (data - 128.0) / 128.0 if dtype is np.uint8 else data / float(np.iinfo(dtype).max)
    if channels > 1:
        data = data.reshape(-1, channels)
    return data, rate


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return path


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) between integer rates."""
    if rate_in == rate_out:
        return np.asarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(rate_in, rate_out)
    return resample_poly(samples, rate_out // g, rate_in // g).astype(np.float32)


# ---------------------------------------------------------------- espeak-ng speech


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_speech(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                  sample_rate: int = FEATURES.sample_rate) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return mono float32 samples at ``sample_rate``.

    ``voice`` is an espeak-ng voice, optionally with a variant (``en-gb-scotland+f3``); ``rate`` in words per
    minute, ``pitch`` 0–99.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise InputError("espeak-ng is not installed: `apt-get install espeak-ng` (Debian/Ubuntu)")
    if not text.strip():
        raise InputError("cannot speak empty text")
    proc = subprocess.run(
        [exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", "--", text],
        capture_output=True, timeout=60,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise InputError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(proc.stdout), "rb") as w:
        rate_in = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32767.0
    return resample(data, rate_in, sample_rate)
