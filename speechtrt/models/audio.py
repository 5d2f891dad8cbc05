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


# ---------------------------------------------------------------- audio files (libsndfile)


def read_audio(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Read an audio file, or its bytes, with libsndfile (``soundfile``): WAV in any PCM or IEEE-float encoding,
    FLAC, OGG/Vorbis and whatever else libsndfile reads. Returns (samples float32 in [-1, 1], shape [N] or
    [N, channels], sample rate).

    Raises :class:`InputError` naming the file for a missing, empty, unreadable or non-audio file, and for audio
    holding NaN or Inf samples (which would poison every feature computed from it).
    """
    import soundfile

    name = "uploaded audio" if isinstance(source, (bytes, bytearray)) else f"audio file {source}"
    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{name} does not exist: check the manifest's audio_filepath")
        handle = str(path)
    else:
        if not source:
            raise InputError(f"{name} is empty (0 bytes): send a WAV, FLAC or OGG file")
        handle = io.BytesIO(source)
    try:
        data, rate = soundfile.read(handle, dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        detail = str(exc).strip().rsplit(": ", 1)[-1][:200]  # libsndfile's reason, without the handle's repr
        raise InputError(f"{name} is not audio libsndfile can read ({detail}); use WAV (PCM or float), FLAC or "
                         "OGG, or convert it with sox or ffmpeg") from exc
    if data.size and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(f"{name} has {bad} NaN/Inf samples of {data.size}: clean the audio and send it again")
    return np.ascontiguousarray(data, dtype=np.float32), int(rate)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """:func:`read_audio` of a file (kept under its old name: every reader goes through libsndfile)."""
    return read_audio(path)


AUDIO_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    """Mono float samples in [-1, 1] as the bytes of a ``wav`` (16-bit PCM), ``flac`` or ``ogg`` file."""
    import soundfile

    if fmt not in AUDIO_FORMATS:
        raise InputError(f"unknown audio format {fmt!r}: choose one of {', '.join(AUDIO_FORMATS)}")
    container, subtype = AUDIO_FORMATS[fmt]
    buf = io.BytesIO()
    soundfile.write(buf, np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), sample_rate,
                    format=container, subtype=subtype)
    return buf.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples in [-1, 1] as a 16-bit PCM WAV (or FLAC/OGG by the file's suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lower().lstrip(".")
    path.write_bytes(encode_audio(samples, sample_rate, fmt if fmt in AUDIO_FORMATS else "wav"))
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
    data, rate_in = read_audio(proc.stdout)
    return resample(data, rate_in, sample_rate)
