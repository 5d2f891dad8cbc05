"""The seed's autoregressive TTS (text encoder → mel decoder loop → vocoder), made causal and cache-friendly.

Parameter names and hyperparameters are the seed's ``SimpleTTSModel``, so a seed state dict loads unchanged.
Two departures, both needed for exact incremental decoding:

* **Causal decoder mask.** The seed's decoder has no ``tgt_mask``: every position attends to later frames, so
  appending a frame changes the outputs of all earlier positions and, from the second layer on, their keys and
  values. A KV cache cannot reproduce that. Real autoregressive TTS is causal; here training and inference pass a
  causal mask, and the seed baseline that benchmarks compare against does too (same cost, same semantics).
* **Padding masks.** The seed synthesizes one text at a time. For batches, the encoder takes per-text lengths
  (key-padding mask) and the decoder masks padded text positions in cross-attention.

The model has no positional encoding (neither has the seed): order reaches the decoder only through the causal
mask, so a cache slot's row order is irrelevant and a padded cache with a length mask is exact.

Besides the ``nn.Transformer*`` reference path, the module offers the same math as explicit functions
(:meth:`encode`, :meth:`cross_kv`, :meth:`decode_step`) which the ONNX exporter and the runtimes use.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechtrt.config import TTSConfig
from speechtrt.models.seeding import seeded

_MASKED = -1.0e4  # exp(-1e4 - max) underflows to exactly 0 in fp32 and fp16; representable in fp16


def causal_mask(n: int, device=None) -> torch.Tensor:
    """Additive ``[n, n]`` mask: position i may attend to j <= i."""
    return torch.triu(torch.full((n, n), float("-inf"), device=device), diagonal=1)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    # x: [B, T, E] -> [B, H, T, D]
    b, t, e = x.shape
    return x.reshape(b, t, num_heads, e // num_heads).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention. q: [B,H,Tq,D]; k, v: [B,H,Tk,D]; keep: bool, broadcastable to [B,H,Tq,Tk]."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-1, -2))
    scores = torch.where(keep, scores, torch.full_like(scores, _MASKED))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def _merge(x: torch.Tensor) -> torch.Tensor:
    # [B, H, T, D] -> [B, T, H*D]
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def cache_rows(kv) -> int:
    """Rows (positions) of a cache given as one stacked tensor [L, B, H, P, D] or a sequence of per-layer
    tensors [B, H, P, D] (the exported decoder step takes one input per layer: a stacked input would be split,
    i.e. copied, by ONNX Runtime at every step)."""
    return kv.shape[3] if isinstance(kv, torch.Tensor) else kv[0].shape[2]


def step_masks(past_len: torch.Tensor, p: int, text_lengths: torch.Tensor, s: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive attention biases of a cached decoder step, computed once per step and shared by every layer:
    (past [B,1,1,P]: 0 on the valid past rows, -1e4 beyond ``past_len``; text [B,1,1,S]: likewise beyond
    ``text_lengths``). The new row is always attended to, so it needs no entry."""
    past = torch.arange(p, device=past_len.device)[None, :] >= past_len[:, None]  # [B, P] True = masked
    text = torch.arange(s, device=text_lengths.device)[None, :] >= text_lengths[:, None]  # [B, S]
    return (past.to(torch.float32) * _MASKED)[:, None, None, :], (text.to(torch.float32) * _MASKED)[:, None, None, :]


def _attend_cached(q: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   past_bias: torch.Tensor) -> torch.Tensor:
    """Attention of one new position over the cached past and itself, reading the cache where it lies.

    q, k, v: [B,H,1,D] (the new row); past_k, past_v: [B,H,P,D]; past_bias: additive [B,1,1,P]. The softmax over
    [past, new] is taken in two parts sharing one maximum, so the past is never concatenated with the new row
    (a copy of the whole cache per layer and step); equal to attention over ``cat([past, new])``.
    """
    q = q * (1.0 / math.sqrt(q.shape[-1]))
    s_past = torch.matmul(q, past_k.transpose(-1, -2)) + past_bias.to(q.dtype)  # [B, H, 1, P]
    s_new = (q * k).sum(dim=-1, keepdim=True)  # [B, H, 1, 1]
    top = torch.maximum(s_past.amax(dim=-1, keepdim=True), s_new)
    e_past, e_new = torch.exp(s_past - top), torch.exp(s_new - top)
    return (torch.matmul(e_past, past_v) + e_new * v) / (e_past.sum(dim=-1, keepdim=True) + e_new)


def _attend_bias(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention with an additive bias broadcastable to the scores [B,H,Tq,Tk]."""
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-1, -2)) + bias.to(q.dtype)
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def cached_decoder_layer(
    layer: nn.TransformerDecoderLayer,
    x: torch.Tensor,  # [B, 1, E]    the new position's input to this layer
    past_k: torch.Tensor,  # [B, H, P, D] this layer's self-attention keys; rows beyond past_len are ignored
    past_v: torch.Tensor,  # [B, H, P, D]
    self_keep: torch.Tensor,  # additive past bias [B, 1, 1, P] from step_masks
    cross_k: torch.Tensor,  # [B, H, S, D]
    cross_v: torch.Tensor,  # [B, H, S, D]
    text_keep: torch.Tensor,  # additive text bias [B, 1, 1, S] from step_masks
    num_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ``nn.TransformerDecoderLayer`` applied to one new position with a KV cache (eval mode, no dropout).

    Self-attention reads the past rows and the new row, cross-attention the precomputed text keys/values, then the
    feed-forward block; post-norm or pre-norm as ``layer.norm_first`` says. Every TTS model's cached step goes
    through this function, so how attention reads the cache is decided here only.
    Returns (x [B, 1, E], new key row [B, H, 1, D], new value row [B, H, 1, D]).
    """
    e = x.shape[-1]
    pre = layer.norm_first
    sa, ca = layer.self_attn, layer.multihead_attn
    q, k, v = F.linear(layer.norm1(x) if pre else x, sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
    q, k, v = _heads(q, num_heads), _heads(k, num_heads), _heads(v, num_heads)  # [B, H, 1, D]
    a = sa.out_proj(_merge(_attend_cached(q, past_k, past_v, k, v, self_keep)))
    x = x + a if pre else layer.norm1(x + a)

    q = _heads(F.linear(layer.norm2(x) if pre else x, ca.in_proj_weight[:e], ca.in_proj_bias[:e]), num_heads)
    a = ca.out_proj(_merge(_attend_bias(q, cross_k, cross_v, text_keep)))
    x = x + a if pre else layer.norm2(x + a)

    f = layer.linear2(layer.activation(layer.linear1(layer.norm3(x) if pre else x)))
    x = x + f if pre else layer.norm3(x + f)
    return x, k, v


def layers_cross_kv(layers, memory: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention keys/values of ``nn.TransformerDecoderLayer`` s over the encoder ``memory`` [B, S, E],
    computed once per request: (K, V) each [L, B, H, S, D]."""
    e = memory.shape[-1]
    ks, vs = [], []
    for layer in layers:
        w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
        ks.append(_heads(F.linear(memory, w[e:2 * e], b[e:2 * e]), num_heads))
        vs.append(_heads(F.linear(memory, w[2 * e:], b[2 * e:]), num_heads))
    return torch.stack(ks), torch.stack(vs)


class SimpleTTSModel(nn.Module):
    """The seed's TTS: char embedding, 6-layer encoder, 6-layer causal decoder, mel/stop heads, vocoder."""

    def __init__(self, config: TTSConfig | None = None):
        super().__init__()
        self.config = config = config or TTSConfig()
        self.vocab_size = config.vocab_size
        self.hidden_dim = config.hidden_dim
        self.mel_dim = config.mel_dim

        self.text_embedding = nn.Embedding(config.vocab_size, config.hidden_dim)
        self.text_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                config.hidden_dim, nhead=config.num_heads, dim_feedforward=config.ffn_dim,
                dropout=config.dropout, batch_first=True,
            ),
            num_layers=config.num_layers,
            enable_nested_tensor=False,
        )
        self.mel_embedding = nn.Linear(config.mel_dim, config.hidden_dim)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(
                config.hidden_dim, nhead=config.num_heads, dim_feedforward=config.ffn_dim,
                dropout=config.dropout, batch_first=True,
            ),
            num_layers=config.num_layers,
        )
        self.mel_projection = nn.Linear(config.hidden_dim, config.mel_dim)
        self.stop_token = nn.Linear(config.hidden_dim, 1)
        self.vocoder = nn.Sequential(
            nn.ConvTranspose1d(config.mel_dim, 256, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose1d(256, 128, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose1d(128, 1, 4, 2, 1),
            nn.Tanh(),
        )

    # ---- reference path (nn.Transformer modules), used for training and the seed baseline ----

    def encode_text(self, tokens: torch.Tensor, text_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: [B, S] int64 -> encoder states [B, S, E]. Padded positions are masked as keys."""
        pad = None if text_lengths is None else _pad_mask(text_lengths, tokens.shape[1])
        return self.text_encoder(self.text_embedding(tokens), src_key_padding_mask=pad)

    def decoder_forward(self, mel_in: torch.Tensor, memory: torch.Tensor,
                        text_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal decoder over all frames. mel_in: [B, T, M] -> (mel [B, T, M], stop logits [B, T, 1])."""
        t = mel_in.shape[1]
        pad = None if text_lengths is None else _pad_mask(text_lengths, memory.shape[1])
        out = self.decoder(
            self.mel_embedding(mel_in), memory,
            tgt_mask=causal_mask(t, mel_in.device), tgt_is_causal=True, memory_key_padding_mask=pad,
        )
        return self.mel_projection(out), self.stop_token(out)

    def forward(self, tokens: torch.Tensor, mel_target: torch.Tensor,
                text_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced training pass (the seed's training branch, with the causal mask)."""
        memory = self.encode_text(tokens, text_lengths)
        return self.decoder_forward(mel_target[:, :-1, :], memory, text_lengths)

    def vocoder_inference(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: [B, T, M] -> audio [B, T * samples_per_frame]."""
        return self.vocoder(mel.transpose(1, 2)).squeeze(1)

    # ---- explicit path: the same math as functions of tensors, for export and incremental decoding ----

    def encode(self, tokens: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor:
        """Functional twin of :meth:`encode_text`. tokens: [B, S] int64, text_lengths: [B] -> [B, S, E]."""
        h = self.config.num_heads
        keep = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] < text_lengths[:, None])
        keep = keep[:, None, None, :]  # [B, 1, 1, S]
        x = self.text_embedding(tokens)
        for layer in self.text_encoder.layers:
            attn = layer.self_attn
            q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            a = _merge(_attend(_heads(q, h), _heads(k, h), _heads(v, h), keep))
            x = layer.norm1(x + attn.out_proj(a))
            x = layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))
        return x

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of every decoder layer, computed once per request.

        memory: [B, S, E] -> (K, V) each [L, B, H, S, D].
        """
        return layers_cross_kv(self.decoder.layers, memory, self.config.num_heads)

    def decode_step(
        self,
        prev_frame: torch.Tensor,  # [B, M]      the frame decoded last (zeros at the first step)
        past_len: torch.Tensor,  # [B] int64   valid rows in the cache for each sequence
        past_k,  # [L, B, H, P, D], or L tensors [B, H, P, D]: self-attention keys; rows >= past_len are ignored
        past_v,  # like past_k
        cross_k,  # [L, B, H, S, D], or L tensors [B, H, S, D]
        cross_v,  # like cross_k
        text_lengths: torch.Tensor,  # [B] int64
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One causal decoder step for a batch of sequences at different positions.

        Returns (next frame [B, M], stop probability [B], new K rows [L, B, H, 1, D], new V rows [L, B, H, 1, D]).
        The caller writes the new rows at index ``past_len`` of each sequence's cache.
        """
        h = self.config.num_heads
        self_keep, text_keep = step_masks(past_len, cache_rows(past_k), text_lengths, cache_rows(cross_k))

        x = self.mel_embedding(prev_frame)[:, None, :]  # [B, 1, E]
        new_k, new_v = [], []
        for i, layer in enumerate(self.decoder.layers):
            x, k, v = cached_decoder_layer(layer, x, past_k[i], past_v[i], self_keep, cross_k[i], cross_v[i],
                                           text_keep, h)
            new_k.append(k)
            new_v.append(v)
        x = x[:, 0, :]
        frame = self.mel_projection(x)
        stop = torch.sigmoid(self.stop_token(x))[:, 0]
        return frame, stop, torch.stack(new_k), torch.stack(new_v)


def _pad_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """True at padded positions (the convention of ``key_padding_mask``). lengths: [B] -> [B, n]."""
    return torch.arange(n, device=lengths.device)[None, :] >= lengths[:, None]


def build_tts(config: TTSConfig | None = None, seed: int = 0) -> SimpleTTSModel:
    """A deterministically initialised model in eval mode."""
    return seeded(lambda: SimpleTTSModel(config), seed)
