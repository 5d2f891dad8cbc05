"""Griffin-Lim in exportable operations: the trained voices' vocoder, and the mel analysis their training data uses.

Every operation here exports with the dynamo ONNX exporter and builds with TensorRT: the STFT is a ``conv1d`` with a
fixed (window × DFT) basis, the inverse STFT a ``conv_transpose1d`` with the synthesis basis followed by division by
the window-sum envelope, and a phase is a pair (re, im) divided by its magnitude — no complex tensors, no ``atan2``,
no FFT. The iteration count is fixed (``iters``), so the graph has no loop.

Framing is centred: ``n_fft // 2`` zeros are padded on each side, frame ``t`` is centred on sample ``t · hop``, and
``N`` samples give ``1 + N // hop`` frames. During the iterations the signal keeps its padded length and the padded
samples are held at zero (they were zero when the features were computed), so only the centre is estimated; the
result is the centre, ``T · hop`` samples for ``T`` frames.

The fast Griffin-Lim update (Perraudin et al., 2013: momentum on the projected spectrum, as torchaudio's
``GriffinLim``) reaches in 32 iterations what plain Griffin-Lim reaches in several hundred. The initial phase is 0
(the magnitude itself), which keeps the output a deterministic function of the mel. A phase is normalised with a
floor of 1e-3 on |X| (inaudible at this scale, where speech bins are 0.1–100): below it the direction of (re, im) is
rounding noise, and without the floor float32 runs (PyTorch vs ONNX Runtime) drift apart within a few iterations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from speechtrt.models.audio import FeatureConfig, mel_filterbank


@dataclass(frozen=True)
class MelConfig:
    """The voices' spectral front end: 16 kHz, 1024-point Hann window, hop 256 (16 ms), 80 HTK mel bins up to 8 kHz,
    natural log of the mel *magnitude* with a floor. ``gl_*``: the Griffin-Lim settings (measured on espeak-ng
    speech through asr-medium, see ``checkpoints/voice-en.json``)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5
    gl_iters: int = 32
    gl_momentum: float = 0.99
    gl_power: float = 1.0  # magnitudes are raised to this power before phase reconstruction

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    def frames_for(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop

    def filterbank(self) -> torch.Tensor:
        """[n_freq, n_mels] triangular HTK filters (the ASR features' construction at this resolution)."""
        return mel_filterbank(FeatureConfig(sample_rate=self.sample_rate, n_fft=self.n_fft, hop=self.hop,
                                            n_mels=self.n_mels, f_min=self.f_min, f_max=self.f_max))


@functools.lru_cache(maxsize=4)
def _bases(n_fft: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(analysis basis [2F, 1, N], synthesis basis [2F, 1, N], squared window [1, 1, N]) for a periodic Hann window.

    Analysis rows: w[n]·cos(2πkn/N) (real parts) then −w[n]·sin(2πkn/N) (imaginary parts). Synthesis rows give the
    windowed inverse real DFT of one frame: w[n]·c_k/N·(Re cos − Im sin), c_k = 1 at DC and Nyquist, else 2.
    """
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    angle = 2 * np.pi * np.outer(k, n) / n_fft  # [F, N]
    analysis = np.concatenate([window * np.cos(angle), -window * np.sin(angle)])
    scale = np.where((k == 0) | (k == n_fft // 2), 1.0, 2.0)[:, None] / n_fft
    synthesis = np.concatenate([scale * np.cos(angle) * window, -scale * np.sin(angle) * window])
    as_t = lambda a: torch.from_numpy(a.astype(np.float32))[:, None, :]  # noqa: E731
    return as_t(analysis), as_t(synthesis), as_t((window ** 2)[None, :])


def stft_magnitude(samples: torch.Tensor, cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """|STFT| of centred, zero-padded frames. samples [B, N] -> [B, n_freq, 1 + N // hop]."""
    analysis, _, _ = _bases(cfg.n_fft)
    x = F.pad(samples[:, None, :], (cfg.n_fft // 2, cfg.n_fft // 2))
    n_frames = 1 + samples.shape[-1] // cfg.hop
    spec = F.conv1d(x, analysis.to(samples.device), stride=cfg.hop)[..., :n_frames]
    re, im = spec.chunk(2, dim=1)
    return torch.sqrt(re * re + im * im)


def log_mel_magnitude(samples: np.ndarray | torch.Tensor, cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """Training features of one utterance: log mel magnitude, [N] samples -> [frames, n_mels] (float32)."""
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(1, -1)
    mag = stft_magnitude(x, cfg)[0]  # [F, T]
    mel = torch.matmul(mag.transpose(0, 1), cfg.filterbank())  # [T, M]
    return torch.log(torch.clamp(mel, min=cfg.log_floor))


class GriffinLim(nn.Module):
    """log-mel magnitude -> waveform. ``forward(log_mel [B, T, n_mels]) -> audio [B, T · hop]``.

    Mel to linear magnitude is the fixed pseudo-inverse of the filterbank, clamped at 0. Buffers hold every basis, so
    the module moves between devices and dtypes like any other.
    """

    def __init__(self, cfg: MelConfig = MelConfig()):
        super().__init__()
        if cfg.hop > cfg.n_fft // 2 or cfg.n_fft % cfg.hop:
            raise ValueError(f"Griffin-Lim needs hop <= n_fft / 2 dividing n_fft (got hop {cfg.hop}, n_fft {cfg.n_fft})")
        self.cfg = cfg
        analysis, synthesis, window_sq = _bases(cfg.n_fft)
        self.register_buffer("analysis", analysis, persistent=False)
        self.register_buffer("synthesis", synthesis, persistent=False)
        self.register_buffer("window_sq", window_sq, persistent=False)
        self.register_buffer("window", torch.sqrt(window_sq[0, 0]), persistent=False)
        self.register_buffer("mel_inverse", torch.linalg.pinv(cfg.filterbank()).contiguous(), persistent=False)

    def magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """[B, T, n_mels] log mel -> [B, n_freq, T] linear magnitude (≥ 0, raised to ``gl_power``)."""
        lin = torch.clamp(torch.matmul(torch.exp(log_mel), self.mel_inverse), min=0.0)
        if self.cfg.gl_power != 1.0:
            lin = torch.pow(lin, self.cfg.gl_power)
        return lin.transpose(1, 2)

    def _istft(self, re: torch.Tensor, im: torch.Tensor, inv_envelope: torch.Tensor, keep: torch.Tensor):
        # re, im: [B, F, T] -> padded signal [B, 1, (T - 1) · hop + n_fft], zero outside the centre
        y = F.conv_transpose1d(torch.cat([re, im], dim=1), self.synthesis, stride=self.cfg.hop)
        return y * inv_envelope * keep

    def _stft(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # padded signal [B, 1, (T - 1) · hop + n_fft] -> (re, im) [B, F, T]
        return F.conv1d(y, self.analysis, stride=self.cfg.hop).chunk(2, dim=1)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self._griffin_lim(log_mel, self._stft, self._istft)

    def fast(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The same iterations with FFTs and strided overlap-add instead of the DFT convolutions: equal to
        :meth:`forward` up to float rounding, ~40× faster on a CPU; for training-time monitoring, not for export."""
        return self._griffin_lim(log_mel, self._stft_fft, self._istft_fft)

    def _stft_fft(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = y[:, 0].unfold(-1, self.cfg.n_fft, self.cfg.hop) * self.window  # [B, T, N]
        spec = torch.fft.rfft(frames, dim=-1).transpose(1, 2)  # [B, F, T]
        return spec.real, spec.imag

    def _istft_fft(self, re: torch.Tensor, im: torch.Tensor, inv_envelope: torch.Tensor, keep: torch.Tensor):
        n, hop = self.cfg.n_fft, self.cfg.hop
        frames = torch.fft.irfft(torch.complex(re, im).transpose(1, 2), n=n, dim=-1) * self.window  # [B, T, N]
        b, t, _ = frames.shape
        k = n // hop
        parts = frames.reshape(b, t, k, hop)
        out = frames.new_zeros(b, t + k - 1, hop)
        for j in range(k):  # frame t's j-th hop lands on output block t + j
            out[:, j:j + t] += parts[:, :, j]
        return out.reshape(b, 1, -1) * inv_envelope * keep

    def _griffin_lim(self, log_mel: torch.Tensor, stft, istft) -> torch.Tensor:
        cfg = self.cfg
        mag = self.magnitude(log_mel)  # [B, F, T]
        t = mag.shape[-1]
        # window-sum envelope of T frames, and the centre the padded signal may occupy
        ones = torch.ones_like(mag[:1, :1, :])  # [1, 1, T]
        envelope = F.conv_transpose1d(ones, self.window_sq, stride=cfg.hop)  # [1, 1, L]
        inv_envelope = 1.0 / torch.clamp(envelope, min=1e-3)
        idx = torch.arange(envelope.shape[-1], device=mag.device)
        keep = ((idx >= cfg.n_fft // 2) & (idx < cfg.n_fft // 2 + t * cfg.hop)).to(mag.dtype)
        re, im = mag, torch.zeros_like(mag)
        prev_re, prev_im = torch.zeros_like(mag), torch.zeros_like(mag)
        a = cfg.gl_momentum / (1.0 + cfg.gl_momentum)
        for _ in range(cfg.gl_iters):
            new_re, new_im = stft(istft(re, im, inv_envelope, keep))
            re, im = new_re - a * prev_re, new_im - a * prev_im
            prev_re, prev_im = new_re, new_im
            scale = mag / torch.sqrt(re * re + im * im + 1e-6)  # |X| floor 1e-3: a phase of ~0 is ill-defined
            re, im = re * scale, im * scale
        y = istft(re, im, inv_envelope, keep)  # [B, 1, (T - 1) · hop + n_fft]
        return y[:, 0, cfg.n_fft // 2: cfg.n_fft // 2 + t * cfg.hop]  # [B, T · hop]
