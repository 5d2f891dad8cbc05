"""A trained voice: phonemes → transformer encoder → causal transformer decoder (r mel frames per step) → Griffin-Lim.

:class:`VoiceTTS` is driven by the runtime exactly like :class:`~speechtrt.models.tts.SimpleTTSModel`
(:meth:`encode`, :meth:`cross_kv`, :meth:`decode_step`, :meth:`vocoder_inference` and ``config``), so the KV-cache
pool, the in-flight scheduler, the TTS service and the exporters run it unchanged. What it adds for real speech:

* **Input**: espeak-ng phonemes with stress, word and clause tokens (:mod:`speechtrt.models.phonemes`).
* **Encoder**: embedding → 3 convolutions (kernel 5, ReLU, LayerNorm; padded positions held at zero, so a padded
  batch row equals the text alone) → sinusoidal positions with a learned scale → pre-norm transformer layers.
* **Decoder frames**: one decoder step emits ``r`` mel frames (the reduction factor) flattened to ``r · n_mels``, the
  width the runtime calls ``mel_dim``. The step reads back only the last mel frame of the previous step through a
  narrow prenet (two ReLU layers with dropout 0.5); its position ``past_len`` enters as a sinusoidal encoding with
  a learned scale computed inside the graph.
* **Prenet dropout at inference**: Tacotron-style decoders need prenet dropout at inference too (without it the
  decoder copies its input). To keep inference deterministic (a batch equals each text alone, ONNX Runtime equals
  PyTorch, FP16/INT8 compare against FP32), evaluation mode uses a fixed mask per decoder position, a buffer drawn
  once from a seed; training draws fresh masks.
* **Decoder layers** are ``nn.TransformerDecoderLayer`` (pre-norm); the cached step goes through
  :func:`~speechtrt.models.tts.cached_decoder_layer`, shared with the seed model. :meth:`teacher_forced` is the
  full-sequence causal pass used for training; it also returns every cross-attention head's weights (guided
  attention) and equals a sequence of cached steps (tested).
* **Aligned voices** (``aligned=True``): the encoder also predicts each phoneme's duration in decoder steps (two
  convolutions and a projection to ``log(1 + d)``) and adds to its memory row the position encoding of the phoneme's
  centre in time (the running sum of durations, less half of its own and half a step; the running sum is a product
  with a triangular matrix, plain operations for every backend). A decoder step's own position encoding then matches
  the phoneme it should speak, so the cross-attention finds its place by time instead of by the frames it has
  produced; trained with true durations in place (:mod:`speechtrt.tts.align`) and an attention prior around each
  phoneme's true centre. With ``feedback=False`` as well, the decoder never reads its own frames: free-running equals
  teacher-forced, and errors cannot compound. The runtime interface is unchanged (the durations live inside
  :meth:`encode`); decoding still ends on the stop token.
* **Vocoder**: conv postnet (residual) on the ``[T · r, n_mels]`` frames → de-normalisation with the stored training
  statistics → Griffin-Lim in exportable operations (:mod:`speechtrt.models.vocoder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechtrt.models.phonemes import VOCAB_SIZE
from speechtrt.models.seeding import seeded
from speechtrt.models.tts import _attend, _heads, _merge, cache_rows, cached_decoder_layer, layers_cross_kv, step_masks
from speechtrt.models.vocoder import GriffinLim, MelConfig


@dataclass(frozen=True)
class VoiceConfig:
    """Hyperparameters of a trained voice. ``num_layers`` counts decoder layers (the runtime's KV cache depth);
    ``max_frames`` counts decoder frames (groups of ``reduction`` mel frames)."""

    vocab_size: int = VOCAB_SIZE
    hidden_dim: int = 256
    num_heads: int = 4
    num_layers: int = 3
    encoder_layers: int = 3
    encoder_convs: int = 3
    ffn_dim: int = 1024
    dropout: float = 0.1
    prenet_dim: int = 128
    prenet_dropout: float = 0.5
    prenet_last_frame: bool = True  # the prenet reads the last mel frame of the previous step only
    feedback: bool = True  # False: the decoder does not read its previous frames (see the module docstring)
    aligned: bool = False  # True: predicted durations place every phoneme in time (see the module docstring)
    duration_layers: int = 2
    postnet_channels: int = 128
    postnet_layers: int = 5
    reduction: int = 4
    max_text_len: int = 256
    max_frames: int = 400
    phoneme_voice: str = "en-us"
    mask_seed: int = 1234
    mel: MelConfig = field(default_factory=MelConfig)

    @property
    def n_mels(self) -> int:
        return self.mel.n_mels

    @property
    def mel_dim(self) -> int:
        """Width of one decoder frame: ``reduction`` mel frames flattened."""
        return self.reduction * self.mel.n_mels

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def samples_per_frame(self) -> int:
        return self.reduction * self.mel.hop

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @classmethod
    def from_dict(cls, d: dict) -> "VoiceConfig":
        d = dict(d)
        d["mel"] = MelConfig(**d.get("mel", {}))
        return cls(**d)


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer position encoding: positions [...] (any numeric dtype) -> [..., dim] (sin half, cos half)."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
                         * (-math.log(10000.0) / dim))
    angle = positions.to(torch.float32)[..., None] * inv_freq
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class _ConvBlock(nn.Module):
    """Conv1d (same length) → ReLU → LayerNorm over channels → dropout; padded positions zeroed after."""

    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(channels)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # x: [B, S, E]; keep: [B, S, 1] float
        y = F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        y = F.dropout(self.norm(y), self.dropout, self.training)
        return y * keep


class Postnet(nn.Module):
    """Residual 1-D conv stack over mel frames: [B, T, n_mels] -> [B, T, n_mels] (BatchNorm, tanh)."""

    def __init__(self, n_mels: int, channels: int, layers: int, kernel: int = 5, dropout: float = 0.0):
        super().__init__()
        dims = [n_mels] + [channels] * (layers - 1) + [n_mels]
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in dims[1:])
        self.dropout = dropout

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.transpose(1, 2)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x))
            if i < len(self.convs) - 1:
                x = torch.tanh(x)
            x = F.dropout(x, self.dropout, self.training)
        return mel + x.transpose(1, 2)


class VoiceTTS(nn.Module):
    """The trained voice (see the module docstring). Normalised log-mel in, normalised log-mel out."""

    def __init__(self, config: VoiceConfig | None = None):
        super().__init__()
        self.config = c = config or VoiceConfig()
        E = c.hidden_dim
        self.embedding = nn.Embedding(c.vocab_size, E, padding_idx=0)
        self.encoder_convs = nn.ModuleList(_ConvBlock(E, 5, c.dropout) for _ in range(c.encoder_convs))
        self.encoder_pos_scale = nn.Parameter(torch.ones(()))
        self.encoder_layers = nn.ModuleList(
            nn.TransformerEncoderLayer(E, c.num_heads, c.ffn_dim, c.dropout, batch_first=True, norm_first=True)
            for _ in range(c.encoder_layers))
        self.encoder_norm = nn.LayerNorm(E)
        if c.aligned:
            self.duration_convs = nn.ModuleList(_ConvBlock(E, 3, c.dropout) for _ in range(c.duration_layers))
            self.duration_projection = nn.Linear(E, 1)
            self.memory_time_scale = nn.Parameter(torch.ones(()))

        prenet_in = c.n_mels if c.prenet_last_frame else c.mel_dim
        self.prenet = nn.ModuleList([nn.Linear(prenet_in, c.prenet_dim), nn.Linear(c.prenet_dim, c.prenet_dim)])
        self.prenet_out = nn.Linear(c.prenet_dim, E)
        self.decoder_pos_scale = nn.Parameter(torch.ones(()))
        self.decoder_layers = nn.ModuleList(
            nn.TransformerDecoderLayer(E, c.num_heads, c.ffn_dim, c.dropout, batch_first=True, norm_first=True)
            for _ in range(c.num_layers))
        self.decoder_norm = nn.LayerNorm(E)
        self.mel_projection = nn.Linear(E, c.mel_dim)
        self.stop_projection = nn.Linear(E, 1)
        self.postnet = Postnet(c.n_mels, c.postnet_channels, c.postnet_layers)
        self.griffin_lim = GriffinLim(c.mel)

        # fixed inference masks of the two prenet dropouts, one row per decoder position (values 0 or 1/(1-p))
        gen = torch.Generator().manual_seed(c.mask_seed)
        keep = (torch.rand(2, c.max_frames, c.prenet_dim, generator=gen) >= c.prenet_dropout).float()
        self.register_buffer("prenet_masks", keep / (1.0 - c.prenet_dropout) if c.prenet_dropout < 1 else keep)
        # log-mel normalisation statistics of the training data (per mel bin)
        self.register_buffer("mel_mean", torch.zeros(c.n_mels))
        self.register_buffer("mel_std", torch.ones(c.n_mels))

    # ---- the runtime's interface

    def encode(self, tokens: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor:
        """tokens [B, S] int64, text_lengths [B] -> memory [B, S, E]. Rows past a text's length do not affect it."""
        return self.encode_timed(tokens, text_lengths)[0]

    def encode_timed(self, tokens: torch.Tensor, text_lengths: torch.Tensor, durations: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(memory [B, S, E], predicted log(1 + duration) [B, S] or None for an attention voice).

        An aligned voice adds to every phoneme's memory row the position encoding of its centre in decoder steps,
        from ``durations`` [B, S] (decoder steps per phoneme; training passes the true ones) or else its own
        prediction."""
        memory = self._encode_text(tokens, text_lengths)
        if not self.config.aligned:
            return memory, None
        keep = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] < text_lengths[:, None]).to(torch.float32)
        x = memory
        for block in self.duration_convs:
            x = block(x, keep[:, :, None])
        log_d = self.duration_projection(x)[..., 0] * keep  # [B, S]
        if durations is None:
            durations = torch.clamp(torch.exp(log_d) - 1.0, min=0.0)
        durations = durations.to(torch.float32) * keep
        s = tokens.shape[1]
        upper = (torch.arange(s, device=tokens.device)[:, None] <= torch.arange(s, device=tokens.device)[None, :])
        ends = torch.matmul(durations, upper.to(torch.float32))  # running sum as a product: plain ops for every backend
        centres = ends - 0.5 * durations - 0.5  # decoder step t covers [t, t + 1): its centre t + 0.5 matches t
        memory = memory + self.memory_time_scale * sinusoid(centres, self.config.hidden_dim) * keep[:, :, None]
        return memory, log_d

    def _encode_text(self, tokens: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor:
        h = self.config.num_heads
        s = tokens.shape[1]
        valid = torch.arange(s, device=tokens.device)[None, :] < text_lengths[:, None]  # [B, S]
        keep = valid[:, :, None].to(torch.float32)
        x = self.embedding(tokens) * keep
        for block in self.encoder_convs:
            x = block(x, keep)
        pos = sinusoid(torch.arange(s, device=tokens.device), self.config.hidden_dim)
        x = x + self.encoder_pos_scale * pos[None]
        attn_keep = valid[:, None, None, :]
        for layer in self.encoder_layers:
            sa = layer.self_attn
            q, k, v = F.linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
            a = _merge(_attend_dropout(_heads(q, h), _heads(k, h), _heads(v, h), attn_keep, sa.dropout,
                                       self.training))
            x = x + layer.dropout1(sa.out_proj(a))
            x = x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))))
        return self.encoder_norm(x) * keep

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, S, E] -> cross-attention (K, V) of every decoder layer, each [L, B, H, S, D]."""
        return layers_cross_kv(self.decoder_layers, memory, self.config.num_heads)

    def decode_step(
        self,
        prev_frame: torch.Tensor,  # [B, r·n_mels] the decoder frame emitted last (zeros at the first step)
        past_len: torch.Tensor,  # [B] int64     valid rows in the cache = this step's position
        past_k,  # [L, B, H, P, D], or L tensors [B, H, P, D]; rows >= past_len are ignored
        past_v,  # like past_k
        cross_k,  # [L, B, H, S, D], or L tensors [B, H, S, D]
        cross_v,  # like cross_k
        text_lengths: torch.Tensor,  # [B] int64
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One cached decoder step. Returns (frame [B, r·n_mels], stop probability [B], new K rows, new V rows
        [L, B, H, 1, D]); the caller writes the rows at index ``past_len``."""
        h = self.config.num_heads
        self_keep, text_keep = step_masks(past_len, cache_rows(past_k), text_lengths, cache_rows(cross_k))
        x = self._decoder_input(prev_frame[:, None, :], past_len[:, None])  # [B, 1, E]
        new_k, new_v = [], []
        for i, layer in enumerate(self.decoder_layers):
            x, k, v = cached_decoder_layer(layer, x, past_k[i], past_v[i], self_keep, cross_k[i], cross_v[i],
                                           text_keep, h)
            new_k.append(k)
            new_v.append(v)
        x = self.decoder_norm(x[:, 0, :])
        stop = torch.sigmoid(self.stop_projection(x))[:, 0]
        return self.mel_projection(x), stop, torch.stack(new_k), torch.stack(new_v)

    def vocoder_inference(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, r·n_mels] (normalised, as the decoder emits them) -> audio [B, T · r · hop]."""
        return self.griffin_lim(self.log_mel(frames))

    def reference_vocoder(self, frames: torch.Tensor) -> torch.Tensor:
        """True frames [B, T, r·n_mels] (the analysis of real audio, normalised) -> audio: de-normalised straight into
        the vocoder. The postnet refines the decoder's own output and was never trained on true frames, so it is
        not applied: this is the vocoder path's ceiling."""
        b, t, _ = frames.shape
        return self.griffin_lim(frames.reshape(b, t * self.config.reduction, self.config.n_mels) * self.mel_std
                                + self.mel_mean)

    # ---- pieces shared by the cached step and the training pass

    def _decoder_input(self, prev: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """prev [B, T, r·n_mels], positions [B, T] int64 -> decoder input [B, T, E] (prenet + positions)."""
        c = self.config
        x = prev[..., -c.n_mels:] if c.prenet_last_frame else prev
        if not c.feedback:
            x = torch.zeros_like(x)
        idx = torch.clamp(positions, max=c.max_frames - 1)
        for i, linear in enumerate(self.prenet):
            x = F.relu(linear(x))
            if self.training:
                x = F.dropout(x, c.prenet_dropout, True)
            else:
                x = x * self.prenet_masks[i][idx]  # [B, T, P]: the fixed mask of each position
        return self.prenet_out(x) + self.decoder_pos_scale * sinusoid(positions, c.hidden_dim)

    def postnet_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Decoder frames [B, T, r·n_mels] -> refined normalised log-mel [B, T·r, n_mels]."""
        b, t, _ = frames.shape
        return self.postnet(frames.reshape(b, t * self.config.reduction, self.config.n_mels))

    def log_mel(self, frames: torch.Tensor) -> torch.Tensor:
        """Decoder frames [B, T, r·n_mels] -> natural-log mel magnitude [B, T·r, n_mels] (postnet, de-normalised)."""
        return self.postnet_frames(frames) * self.mel_std + self.mel_mean

    def teacher_forced(self, tokens: torch.Tensor, text_lengths: torch.Tensor, inputs: torch.Tensor,
                       memory: torch.Tensor | None = None):
        """The full causal pass. inputs [B, T, r·n_mels]: the previous decoder frame of every position (zeros at 0).

        Returns (frames [B, T, r·n_mels], stop logits [B, T], cross-attention weights [L, B, H, T, S]).
        In eval mode, position t equals the cached step at ``past_len = t`` fed the same inputs.
        """
        c = self.config
        h = c.num_heads
        if memory is None:
            memory = self.encode(tokens, text_lengths)
        cross_k, cross_v = self.cross_kv(memory)
        b, t, _ = inputs.shape
        positions = torch.arange(t, device=inputs.device)[None, :].expand(b, t)
        x = self._decoder_input(inputs, positions)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()[None, None]  # [1, 1, T, T]
        text_keep = (torch.arange(tokens.shape[1], device=x.device)[None, :] < text_lengths[:, None])[:, None, None]
        weights = []
        for i, layer in enumerate(self.decoder_layers):
            sa, ca = layer.self_attn, layer.multihead_attn
            e = c.hidden_dim
            q, k, v = F.linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
            a = _attend_dropout(_heads(q, h), _heads(k, h), _heads(v, h), causal, sa.dropout, self.training)
            x = x + layer.dropout1(sa.out_proj(_merge(a)))
            q = _heads(F.linear(layer.norm2(x), ca.in_proj_weight[:e], ca.in_proj_bias[:e]), h)
            a, w = _attend_weights(q, cross_k[i], cross_v[i], text_keep, ca.dropout, self.training)
            weights.append(w)
            x = x + layer.dropout2(ca.out_proj(_merge(a)))
            x = x + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(x))))))
        x = self.decoder_norm(x)
        return self.mel_projection(x), self.stop_projection(x)[..., 0], torch.stack(weights)

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, text_lengths: torch.Tensor, max_steps: int | None = None,
                 stop_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """Free-running greedy decoding of a batch with the cached step until each text's stop token (or
        ``max_steps``). Returns (frames [B, T, r·n_mels], steps [B]: decoder frames up to and including the one
        whose stop probability crossed the threshold, or ``max_steps``)."""
        c = self.config
        b = tokens.shape[0]
        max_steps = min(max_steps or c.max_frames, c.max_frames)
        memory = self.encode(tokens, text_lengths)
        ck, cv = self.cross_kv(memory)
        past_k = torch.zeros(c.num_layers, b, c.num_heads, max_steps, c.head_dim)
        past_v = torch.zeros_like(past_k)
        prev = torch.zeros(b, c.mel_dim)
        steps = torch.full((b,), max_steps, dtype=torch.int64)
        done = torch.zeros(b, dtype=torch.bool)
        out = []
        for t in range(max_steps):
            p = max(t, 1)
            frame, stop, nk, nv = self.decode_step(prev, torch.full((b,), t, dtype=torch.int64),
                                                   past_k[:, :, :, :p], past_v[:, :, :, :p], ck, cv, text_lengths)
            past_k[:, :, :, t], past_v[:, :, :, t] = nk[:, :, :, 0], nv[:, :, :, 0]
            out.append(frame)
            prev = frame
            fired = (stop > stop_threshold) & ~done
            steps[fired] = t + 1
            done |= fired
            if bool(done.all()):
                break
        return torch.stack(out, dim=1), steps


def _attend_dropout(q, k, v, keep, p: float, training: bool):
    if not training or p == 0.0:
        return _attend(q, k, v, keep)
    out, _ = _attend_weights(q, k, v, keep, p, training)
    return out


def _attend_weights(q, k, v, keep, p: float, training: bool):
    """Attention that also returns its weights [B, H, Tq, Tk] (before dropout)."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-1, -2))
    scores = torch.where(keep, scores, torch.full_like(scores, -1.0e4))
    w = torch.softmax(scores, dim=-1)
    return torch.matmul(F.dropout(w, p, training), v), w


def build_voice(config: VoiceConfig | None = None, seed: int = 0) -> VoiceTTS:
    """A deterministically initialised voice in eval mode."""
    return seeded(lambda: VoiceTTS(config), seed)


def regroup_voice(model: VoiceTTS, reduction: int) -> VoiceTTS:
    """The same voice with ``reduction`` mel frames per decoder step: a warm start for training at another
    reduction factor. Every weight and buffer is kept (none of them depends on the factor: the prenet reads one
    mel frame) except the frame projection, whose rows for frame ``j`` of a step are the old step's rows for frame
    ``j mod r_old`` (bias likewise). The result decodes at the new rate only after training: its positions now count
    larger steps."""
    c = model.config
    if reduction == c.reduction:
        return model
    if not c.prenet_last_frame:
        raise ValueError("regroup_voice needs a prenet that reads the last mel frame (prenet_last_frame=True)")
    new = VoiceTTS(replace(c, reduction=reduction))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mel_projection.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and sorted(missing) == ["mel_projection.bias", "mel_projection.weight"], (missing, unexpected)
    n = c.n_mels
    rows = torch.arange(reduction * n)
    old_rows = (rows // n) % c.reduction * n + rows % n
    with torch.no_grad():
        new.mel_projection.weight.copy_(model.mel_projection.weight[old_rows])
        new.mel_projection.bias.copy_(model.mel_projection.bias[old_rows])
    return new.train(model.training)


def align_voice(model: VoiceTTS) -> VoiceTTS:
    """The same voice made aligned (``aligned=True``): every weight kept, a fresh duration predictor, the phoneme
    time encoding at scale 1. A warm start for training an aligned voice from an attention voice."""
    if model.config.aligned:
        return model
    new = build_voice(replace(model.config, aligned=True))
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("duration_", "memory_time")) for k in missing), (missing, unexpected)
    return new.train(model.training)
