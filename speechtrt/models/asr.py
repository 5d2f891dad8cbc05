"""The seed's CTC ASR model in three sizes, made runnable, and a streaming variant.

The seed's ``SimpleASRModel`` does not run as written:

1. Its front end ends in ``AdaptiveAvgPool2d((None, hidden_dim // 4))`` and then ``features.squeeze(3)``. The
   pool leaves ``(batch, 128, time/4, hidden/4)``; ``squeeze(3)`` removes nothing and the LSTM is handed a 4-D
   tensor. (The pool's output size also depends on the input, so it does not export to ONNX.)
   **Fix:** flatten channels × frequency and project linearly to ``hidden_dim // 4``, giving
   ``(batch, time/4, hidden/4)`` as the LSTM expects.
2. ``pack_padded_sequence`` is given the *input* frame counts although the CNN has downsampled time by 4.
   **Fix:** lengths go through the same arithmetic as the convolutions: ``ceil(ceil(T / 2) / 2)``.

Each size keeps the seed's hidden width and layer count (small 128×2, medium 256×4, large 512×8, bidirectional)
and its 1000-way classifier over the seed's character table. One more change makes batching exact: the front end
zeroes padded frames before each convolution, so a padded batch row equals the same utterance alone.

``StreamingASRModel`` is the same front end made causal (left padding in time only) with a unidirectional LSTM:
its state (two small convolution contexts plus the LSTM's ``h``/``c``) carries across chunks, and running it chunk
by chunk gives exactly the offline output.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechtrt.config import ASRConfig, asr_config
from speechtrt.models.seeding import seeded


def frontend_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the two stride-2 convolutions: ``ceil(ceil(T / 2) / 2)``."""
    half = torch.div(lengths + 1, 2, rounding_mode="floor")
    return torch.div(half + 1, 2, rounding_mode="floor")


_CONV_CHANNELS = 128  # channels of the second front-end convolution (every size)


def project_frames(z: torch.Tensor, projection: nn.Linear) -> torch.Tensor:
    """Convolution output ``[B, C, T, F]`` -> ``[B, T, P]``: ``projection`` applied to each frame's ``C × F``
    features flattened channel-major — computed as a convolution with a ``(1, F)`` kernel holding the same weights,
    so the ``[B, T, C, F]`` transpose of the largest activation is never materialised (measured on one CPU thread: 5 %
    of the exported FP32 graph's time, 12 % of the static INT8 graph's). Same parameters as the ``Linear``, so
    checkpoints are unchanged."""
    if not isinstance(projection.weight, torch.Tensor):  # a dynamically quantized Linear: weight() is a method
        b, c, t, f = z.shape
        return projection(z.permute(0, 2, 1, 3).reshape(b, t, c * f))
    # the kernel's shape from module constants, not from z.shape: a traced export then folds it into a constant
    # (a convolution weight computed at run time is not quantizable)
    weight = projection.weight.view(projection.out_features, _CONV_CHANNELS, 1,
                                    projection.in_features // _CONV_CHANNELS)
    return F.conv2d(z, weight, projection.bias).squeeze(3).transpose(1, 2)


def _time_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    # [B] -> [B, 1, T, 1] float, 1 on valid frames
    return (torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]).to(torch.float32)[:, None, :, None]


class SimpleASRModel(nn.Module):
    """CNN front end → (Bi)LSTM → CTC classifier. Input log-mel [B, T, 80] → log-probs [B, ceil(T/4), vocab]."""

    def __init__(self, config: ASRConfig | None = None):
        super().__init__()
        self.config = config = config or asr_config("medium")
        self.hidden_dim = config.hidden_dim
        self.num_layers = config.num_layers
        self.model_size = config.size
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
            nn.ReLU(),
            nn.Conv2d(64, _CONV_CHANNELS, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
            nn.ReLU(),
        )
        self.projection = nn.Linear(_CONV_CHANNELS * config.freq_after_frontend, config.proj_dim)
        self.encoder = nn.LSTM(
            config.proj_dim, config.hidden_dim, config.num_layers, batch_first=True,
            bidirectional=config.bidirectional, dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(config.hidden_dim * (2 if config.bidirectional else 1), config.vocab_size)

    def frontend(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """mel: [B, T, F] -> [B, ceil(T/4), hidden/4], padded frames zeroed before each convolution."""
        conv1, relu1, conv2, relu2 = self.feature_extractor
        x = mel[:, None, :, :] * _time_mask(lengths, mel.shape[1])  # [B, 1, T, F]
        x = relu1(conv1(x))  # [B, 64, T/2, F/2]
        # the mask's length from the input's shape, not x.shape: reading x's shape would force a quantized graph to
        # dequantize x just for its shape (measured: 6 % of the static INT8 graph's CPU time)
        x = x * _time_mask(torch.div(lengths + 1, 2, rounding_mode="floor"), (mel.shape[1] + 1) // 2)
        x = relu2(conv2(x))  # [B, 128, T/4, F/4]
        return project_frames(x, self.projection)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel: [B, T, F] log-mel, lengths: [B] frames -> (log-probs [B, T', V], output lengths [B])."""
        if lengths is None:
            lengths = torch.full((mel.shape[0],), mel.shape[1], dtype=torch.long, device=mel.device)
        feats = self.frontend(mel, lengths)
        out_lengths = frontend_lengths(lengths)
        packed = nn.utils.rnn.pack_padded_sequence(feats, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
        encoded, _ = self.encoder(packed)
        encoded, _ = nn.utils.rnn.pad_packed_sequence(encoded, batch_first=True, total_length=feats.shape[1])
        return F.log_softmax(self.classifier(encoded), dim=-1), out_lengths


class StreamingASRModel(nn.Module):
    """Causal front end + unidirectional LSTM + CTC classifier, runnable offline or chunk by chunk.

    Streaming state for a batch of B streams (all float32):

    * ``ctx1`` [B, 2, F]: the last two input frames (the first convolution's left context),
    * ``ctx2`` [B, 64, 2, F/2]: the last two first-convolution frames (the second convolution's left context),
    * ``h``, ``c`` [layers, B, hidden]: the LSTM state.

    Zero state equals the zero padding the offline pass uses, so chunked == offline. Chunks must have a length
    that is a multiple of 4 frames, except the last chunk of an utterance.
    """

    CONTEXT = 2  # kernel 3, stride 2, causal: each output sees its frame and the two before

    def __init__(self, config: ASRConfig | None = None):
        super().__init__()
        self.config = config = config or asr_config("stream")
        self.conv1 = nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(2, 2), padding=(0, 1))
        self.conv2 = nn.Conv2d(64, _CONV_CHANNELS, kernel_size=(3, 3), stride=(2, 2), padding=(0, 1))
        self.projection = nn.Linear(_CONV_CHANNELS * config.freq_after_frontend, config.proj_dim)
        self.encoder = nn.LSTM(
            config.proj_dim, config.hidden_dim, config.num_layers, batch_first=True,
            bidirectional=False, dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(config.hidden_dim, config.vocab_size)

    def initial_state(self, batch: int, device=None) -> dict[str, torch.Tensor]:
        c = self.config
        return {
            "ctx1": torch.zeros(batch, self.CONTEXT, c.input_dim, device=device),
            "ctx2": torch.zeros(batch, 64, self.CONTEXT, (c.input_dim + 1) // 2, device=device),
            "h": torch.zeros(c.num_layers, batch, c.hidden_dim, device=device),
            "c": torch.zeros(c.num_layers, batch, c.hidden_dim, device=device),
        }

    def step(self, chunk: torch.Tensor, ctx1: torch.Tensor, ctx2: torch.Tensor, h: torch.Tensor,
             c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk for B streams. chunk: [B, T, F] -> (log-probs [B, ceil(T/4), V], ctx1, ctx2, h, c)."""
        x = torch.cat([ctx1, chunk], dim=1)  # [B, 2+T, F]
        new_ctx1 = x[:, -self.CONTEXT:, :]
        y = F.relu(self.conv1(x[:, None, :, :]))  # [B, 64, ceil(T/2), F/2]
        y = torch.cat([ctx2, y], dim=2)
        new_ctx2 = y[:, :, -self.CONTEXT:, :]
        z = F.relu(self.conv2(y))  # [B, 128, ceil(T/4), F/4]
        feats = project_frames(z, self.projection)
        encoded, (h, c) = self.encoder(feats, (h, c))
        return F.log_softmax(self.classifier(encoded), dim=-1), new_ctx1, new_ctx2, h, c

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Offline pass over whole utterances: the reference that chunked decoding must reproduce.

        Causal, so frames after an utterance's end never change its outputs; padded rows need no packing.
        """
        if lengths is None:
            lengths = torch.full((mel.shape[0],), mel.shape[1], dtype=torch.long, device=mel.device)
        s = self.initial_state(mel.shape[0], mel.device)
        log_probs, *_ = self.step(mel, s["ctx1"], s["ctx2"], s["h"], s["c"])
        return log_probs, frontend_lengths(lengths)


def build_asr(size: str = "medium", seed: int = 0) -> nn.Module:
    """A deterministically initialised ``small|medium|large`` or ``stream`` model in eval mode."""
    config = asr_config(size)
    return seeded(lambda: StreamingASRModel(config) if size == "stream" else SimpleASRModel(config), seed)


def trim_classifier(model: nn.Module, columns) -> nn.Module:
    """A copy of ``model`` whose classifier computes only the token ids ``columns`` (in that order), so output
    column ``j`` is token ``columns[j]`` and the log-softmax normalises over those tokens alone.

    The seed's 1000-way classifier is trained on 29 characters; a trained model puts almost no probability on the
    rest, and then the trimmed log-probabilities equal the full ones shifted by the dropped log-mass
    (:func:`dropped_log_mass`, which is what decides whether trimming is allowed). The copy carries
    ``output_columns`` (int64 tensor) so consumers can map columns back to token ids.
    """
    import copy

    index = torch.as_tensor(columns, dtype=torch.long)
    trimmed = copy.deepcopy(model)
    full = trimmed.classifier
    linear = nn.Linear(full.in_features, len(index), bias=full.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(full.weight[index])
        if full.bias is not None:
            linear.bias.copy_(full.bias[index])
    trimmed.classifier = linear.to(full.weight.device, full.weight.dtype)
    trimmed.register_buffer("output_columns", index.clone(), persistent=False)
    return trimmed.eval()


@torch.no_grad()
def dropped_log_mass(model: nn.Module, batches, columns) -> float:
    """The largest probability mass, as ``-log(kept mass)`` in nats, that ``model`` puts outside the token ids
    ``columns`` on any valid frame of ``batches`` (pairs of padded features [B, T, 80] and lengths [B]): the largest
    amount by which :func:`trim_classifier` moves a kept log-probability. 0 means nothing is dropped."""
    index = torch.as_tensor(columns, dtype=torch.long)
    worst = 0.0
    for x, lengths in batches:
        log_probs, out_lengths = model(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(lengths))
        for row, n in zip(log_probs, out_lengths):
            kept = torch.logsumexp(row[: int(n)][:, index].float(), dim=-1)
            if kept.numel():
                worst = max(worst, float(-kept.min()))
    return worst
