"""The seed baseline, kept runnable: per-request FP32 eager TTS with a full decoder recompute at every step.

This is the seed's ``BaselineTTSInference.synthesize`` / ``SimpleTTSModel.decode_mel`` with two changes that every
variant shares, so comparisons stay fair:

* the decoder is causal (see :mod:`speechtrt.models.tts`), at the seed's cost: it still re-runs the decoder over
  all frames decoded so far at every step, O(T²) work for T frames;
* a fixed-length mode, ``frames = FrameRule.frames_for_text(characters)``, because a randomly initialised stop head
  fires after one frame. The stop-token mode (stop when every sequence predicts > 0.5, at most ``max_frames``) stays
  available for trained models.

Text goes through :func:`speechtrt.models.text.tts_tokens` (the seed's byte table plus typographic normalisation),
the same tokens the optimized paths use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from speechtrt.config import FrameRule
from speechtrt.models.text import tts_tokens
from speechtrt.models.tts import SimpleTTSModel


@torch.no_grad()
def seed_decode(model: SimpleTTSModel, memory: torch.Tensor, n_frames: int | None = None,
                max_frames: int = 500, stop_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's ``decode_mel`` loop with the causal mask: recompute the whole decoder at every step.

    memory: [B, S, E]. With ``n_frames`` exactly that many frames are decoded; otherwise decoding stops when every
    sequence's stop probability exceeds ``stop_threshold`` or at ``max_frames``.
    Returns (mel [B, T, M], stop probabilities [B, T]).
    """
    b = memory.shape[0]
    mel_in = torch.zeros(b, 1, model.mel_dim, device=memory.device)  # the seed starts from one zero frame
    frames, stops = [], []
    for _ in range(n_frames if n_frames is not None else max_frames):
        mel, stop_logit = model.decoder_forward(mel_in, memory)
        nxt = mel[:, -1:, :]
        stop = torch.sigmoid(stop_logit[:, -1, 0])
        frames.append(nxt)
        stops.append(stop)
        mel_in = torch.cat([mel_in, nxt], dim=1)
        if n_frames is None and bool(torch.all(stop > stop_threshold)):
            break
    return torch.cat(frames, dim=1), torch.stack(stops, dim=1)


@dataclass
class SynthesisResult:
    audio: np.ndarray  # [samples] float32
    mel: np.ndarray  # [frames, mel_dim]
    latency_s: float
    frames: int

    def rtf(self, sample_rate: int) -> float:
        """Real-time factor as the seed computes it: latency / audio seconds."""
        return self.latency_s / max(len(self.audio) / sample_rate, 1e-12)


class HandWrittenKVTTS:
    """What a user writes by hand once they know about KV caches: the same model, one text at a time, eager torch,
    the decoder step (:meth:`~speechtrt.models.tts.SimpleTTSModel.decode_step`) fed a cache grown with
    ``torch.cat`` at every step. No pool, no batching, no graph runtime: the reference point between the seed loop
    and the optimized paths."""

    def __init__(self, model: SimpleTTSModel, device: str | torch.device = "cpu",
                 frame_rule: FrameRule = FrameRule()):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.frame_rule = frame_rule

    @torch.no_grad()
    def synthesize(self, text: str) -> SynthesisResult:
        start = time.perf_counter()
        m, c = self.model, self.model.config
        tokens = torch.tensor(tts_tokens(text, m.vocab_size), device=self.device)[None, :]
        lengths = torch.tensor([tokens.shape[1]], device=self.device)
        cross_k, cross_v = m.cross_kv(m.encode(tokens, lengths))
        k = torch.zeros(c.num_layers, 1, c.num_heads, 1, c.head_dim, device=self.device)  # one masked row
        v = torch.zeros_like(k)
        frame, frames = torch.zeros(1, c.mel_dim, device=self.device), []
        for t in range(self.frame_rule.frames_for_text(len(text))):
            frame, _stop, nk, nv = m.decode_step(frame, torch.tensor([t], device=self.device), k, v, cross_k,
                                                 cross_v, lengths)
            k, v = (nk, nv) if t == 0 else (torch.cat([k, nk], dim=3), torch.cat([v, nv], dim=3))
            frames.append(frame)
        mel = torch.stack(frames, dim=1)
        audio = m.vocoder_inference(mel)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return SynthesisResult(audio[0].cpu().numpy(), mel[0].cpu().numpy(), time.perf_counter() - start,
                               mel.shape[1])


class SeedBaselineTTS:
    """Per-request FP32 eager synthesis, exactly one text at a time (the seed's ``BaselineTTSInference``)."""

    def __init__(self, model: SimpleTTSModel, device: str | torch.device = "cpu",
                 frame_rule: FrameRule | None = FrameRule()):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.frame_rule = frame_rule  # None: stop-token mode

    @torch.no_grad()
    def synthesize(self, text: str) -> SynthesisResult:
        start = time.perf_counter()
        tokens = torch.tensor(tts_tokens(text, self.model.vocab_size), device=self.device)[None, :]
        memory = self.model.encode_text(tokens)
        n = self.frame_rule.frames_for_text(len(text)) if self.frame_rule else None
        mel, _ = seed_decode(self.model, memory, n_frames=n)
        audio = self.model.vocoder_inference(mel)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        audio_np, mel_np = audio[0].cpu().numpy(), mel[0].cpu().numpy()
        return SynthesisResult(audio_np, mel_np, time.perf_counter() - start, mel_np.shape[0])
