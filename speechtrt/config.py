"""Frozen configuration objects. The CLI maps flags onto these; library code takes them as arguments.

Model hyperparameters are the seed's (``SimpleTTSModel``, ``SimpleASRModel``); where speechtrt departs from the seed
(causal decoder mask, the ASR front end), the model modules say why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from speechtrt.errors import InputError

ASR_SIZES = ("small", "medium", "large")
"""The seed's offline ASR sizes. ``stream`` is the streaming variant (unidirectional, causal front end)."""

_SIZE_MULTIPLIER = {"small": 0.5, "medium": 1.0, "large": 2.0}


@dataclass(frozen=True)
class TTSConfig:
    """The seed's ``SimpleTTSModel`` defaults (vocab 256, width 512, 6+6 layers, 8 heads, 80 mel bins).

    ``ffn_dim`` and ``dropout`` are ``nn.TransformerEncoderLayer``'s defaults, which the seed relies on.
    ``max_text_len`` and ``max_frames`` bound the shapes the exported graphs and caches support.
    """

    vocab_size: int = 256
    hidden_dim: int = 512
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    mel_dim: int = 80
    dropout: float = 0.1
    max_text_len: int = 512
    max_frames: int = 1000
    samples_per_frame: int = 8  # the vocoder's three stride-2 transposed convolutions
    sample_rate: int = 22050  # the rate the seed's RTF assumes

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads


@dataclass(frozen=True)
class ASRConfig:
    """One ASR model: the seed's ``SimpleASRModel(model_size=...)`` widths, or the streaming variant.

    ``hidden_dim`` and ``num_layers`` are already scaled by the seed's size multiplier (small 0.5, medium 1, large 2).
    """

    size: str = "medium"
    input_dim: int = 80
    hidden_dim: int = 256
    num_layers: int = 4
    vocab_size: int = 1000
    dropout: float = 0.1
    bidirectional: bool = True
    chunk_frames: int = 16  # streaming only: feature frames per model chunk (160 ms at 10 ms hop)

    @property
    def proj_dim(self) -> int:
        """Width the front end projects to: the seed's ``hidden_dim // 4``."""
        return self.hidden_dim // 4

    @property
    def freq_after_frontend(self) -> int:
        """Frequency bins left after two stride-2 convolutions."""
        return math.ceil(math.ceil(self.input_dim / 2) / 2)


def asr_config(size: str) -> ASRConfig:
    """Config for ``small|medium|large`` (the seed's sizes) or ``stream`` (the streaming variant).

    The streaming variant keeps the medium width and depth but runs its LSTM in one direction, so its state can be
    carried across chunks.
    """
    if size in _SIZE_MULTIPLIER:
        m = _SIZE_MULTIPLIER[size]
        return ASRConfig(size=size, hidden_dim=int(256 * m), num_layers=int(4 * m), bidirectional=True)
    if size == "stream":
        return ASRConfig(size="stream", hidden_dim=256, num_layers=4, bidirectional=False)
    raise InputError(f"unknown ASR size {size!r}: choose one of small, medium, large, stream")


@dataclass(frozen=True)
class FrameRule:
    """How many mel frames a text gets when decoding to a fixed length: ``clamp(k * characters, lo, hi)``.

    A randomly initialised stop head fires after one frame, so benchmarks decode a fixed number of frames; the
    same rule applies to the baseline and every optimized variant. 50 characters → 250 frames.
    """

    frames_per_char: float = 5.0
    min_frames: int = 10
    max_frames: int = 1000

    def frames_for_text(self, n_chars: int) -> int:
        return int(min(self.max_frames, max(self.min_frames, round(self.frames_per_char * n_chars))))
