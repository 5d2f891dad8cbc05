"""What each exported graph is: its wrapper module, named inputs/outputs, dynamic dims and their supported ranges.

A component is one ONNX graph. Its dims (``batch``, ``text``, ``past``, ...) carry ``min/opt/max`` ranges; those
ranges are written into the graph's sidecar JSON and become TensorRT optimization profiles in ``speechtrt build``.
``make_inputs`` draws valid random inputs for any sizes inside the ranges (lengths never exceed their tensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn



@dataclass(frozen=True)
class DimRange:
    """A dynamic axis and the sizes the graph (and its engines) support."""

    name: str
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class TensorSpec:
    """A named graph input or output. ``shape`` holds ints (fixed) and dim names (dynamic)."""

    name: str
    dtype: str  # "float32" | "int64"
    shape: tuple


@dataclass(frozen=True)
class Component:
    name: str
    model: str  # CLI model name that owns it
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, DimRange]
    exporter: str  # "dynamo" (TorchDynamo-based) | "torchscript" (legacy; the only one that handles LSTMs here)
    wrap: Callable[[nn.Module], nn.Module] = field(repr=False)
    make_inputs: Callable[[nn.Module, dict[str, int], torch.Generator], dict[str, torch.Tensor]] = field(repr=False)
    varargs_from: int | None = None  # inputs from this index on reach the wrapper's forward as *args
    # outputs compared as STFT magnitudes at export parity: audio of a phase-reconstructing vocoder (Griffin-Lim),
    # whose waveform moves with 1e-6 of float noise while its spectrum does not
    spectral_outputs: tuple[str, ...] = ()
    # outputs that are probabilities (a sigmoid's): compared by absolute error at export parity, since the relative
    # error of a probability near 0 is the absolute error of its logit and says nothing about the decision
    probability_outputs: tuple[str, ...] = ()
    # why INT8 leaves this component at FP32 (torch's dynamic recipe and ONNX Runtime's int8 graphs), "" to quantize
    int8_keeps_fp32: str = ""

    def shape_at(self, spec: TensorSpec, which: str) -> list[int]:
        """Concrete shape of ``spec`` with every dim at its ``min``, ``opt`` or ``max``."""
        return [d if isinstance(d, int) else getattr(self.dims[d], which) for d in spec.shape]

    def sizes(self, which: str) -> dict[str, int]:
        return {n: getattr(d, which) for n, d in self.dims.items()}


# ---------------------------------------------------------------- wrappers (named forward signatures)


class _TTSEncoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, text_lengths):
        memory = self.model.encode(tokens, text_lengths)
        cross_k, cross_v = self.model.cross_kv(memory)
        return memory, cross_k, cross_v


class _TTSDecoderStep(nn.Module):
    """The decoder step with one cache input per layer and kind (see :data:`CACHE_KINDS`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.layers = model.config.num_layers

    def forward(self, prev_frame, past_len, text_lengths, *caches):
        n = self.layers
        pk, pv, ck, cv = (list(caches[i * n:(i + 1) * n]) for i in range(len(CACHE_KINDS)))
        return self.model.decode_step(prev_frame, past_len, pk, pv, ck, cv, text_lengths)


class _TTSVocoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, mel):
        return self.model.vocoder_inference(mel)


class _ASR(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features, feature_lengths):
        return self.model(features, feature_lengths)


class _ASRStreamStep(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features, ctx1, ctx2, h, c):
        return self.model.step(features, ctx1, ctx2, h, c)


class _StreamStep(nn.Module):
    """A streaming model's step with its state as separate inputs (any number, in ``initial_state`` order)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features, *state):
        return self.model.step(features, *state)


# ---------------------------------------------------------------- random valid inputs


def _lengths(batch: int, longest: int, gen: torch.Generator, low: int = 1) -> torch.Tensor:
    """Per-row lengths in [low, longest], the first row always full (so the padded tensor is tight)."""
    lengths = torch.randint(min(low, longest), longest + 1, (batch,), generator=gen)
    lengths[0] = longest
    return lengths


def _tts_encoder_inputs(model, s, gen):
    vocab = model.config.vocab_size  # printable ASCII for the byte table; any valid id for a smaller vocabulary
    low, high = (32, 127) if vocab >= 127 else (1, vocab)
    return {
        "tokens": torch.randint(low, high, (s["batch"], s["text"]), generator=gen),
        "text_lengths": _lengths(s["batch"], s["text"], gen),
    }


def _tts_decoder_inputs(model, s, gen):
    c = model.config
    b, p, t = s["batch"], s["past"], s["text"]
    kv = (c.num_layers, b, c.num_heads)
    past_len = torch.randint(0, p + 1, (b,), generator=gen)
    past_len[0] = p
    return per_layer_feeds({
        "prev_frame": torch.randn(b, c.mel_dim, generator=gen),
        "past_len": past_len,
        "text_lengths": _lengths(b, t, gen),
        "past_k": torch.randn(*kv, p, c.head_dim, generator=gen),
        "past_v": torch.randn(*kv, p, c.head_dim, generator=gen),
        "cross_k": torch.randn(*kv, t, c.head_dim, generator=gen),
        "cross_v": torch.randn(*kv, t, c.head_dim, generator=gen),
    }, c.num_layers)


CACHE_KINDS = ("past_k", "past_v", "cross_k", "cross_v")
"""The decoder step's cache inputs, one per layer each: ``past_k_0`` … ``past_k_{L-1}``, then ``past_v_*``,
``cross_k_*``, ``cross_v_*``, each ``[B, H, rows, D]``. One input per layer lets a runtime bind every layer's
cache where it lies; a stacked ``[L, B, H, rows, D]`` input is split (copied) by ONNX Runtime at every step."""


def cache_input_names(num_layers: int) -> list[str]:
    return [f"{kind}_{i}" for kind in CACHE_KINDS for i in range(num_layers)]


def per_layer_feeds(feeds: dict, num_layers: int) -> dict:
    """``feeds`` with stacked caches (``past_k`` … ``cross_v``, ``[L, B, H, rows, D]``) replaced by the decoder
    step's per-layer inputs (views, nothing copied); other entries unchanged, in the graph's input order."""
    out = {k: v for k, v in feeds.items() if k not in CACHE_KINDS}
    for kind in CACHE_KINDS:
        for i in range(num_layers):
            out[f"{kind}_{i}"] = feeds[kind][i]
    return out


def _tts_vocoder_inputs(model, s, gen):
    return {"mel": torch.randn(s["batch"], s["frames"], model.config.mel_dim, generator=gen)}


def _asr_inputs(model, s, gen):
    return {
        "features": torch.randn(s["batch"], s["frames"], model.config.input_dim, generator=gen),
        "feature_lengths": _lengths(s["batch"], s["frames"], gen),
    }


def _asr_stream_inputs(model, s, gen):
    state = model.initial_state(s["batch"])
    return {
        "features": torch.randn(s["batch"], s["chunk"], model.config.input_dim, generator=gen),
        **{k: torch.randn(v.shape, generator=gen) * 0.5 for k, v in state.items()},
    }


# ---------------------------------------------------------------- the seven graphs


def tts_components(config=None, model: str = "tts") -> list[Component]:
    """The three TTS graphs of a model with ``config`` (default: the seed's :class:`~speechtrt.config.TTSConfig`).

    Any model following :class:`speechtrt.models.protocol.TTSModel` (a trained voice, a user's model) has these
    three graphs; only the widths and the ranges come from its config. ``model`` names the owner (the folder its
    plans go to).
    """
    from speechtrt.config import TTSConfig

    c = config or TTSConfig()
    L, H, D, E, M = c.num_layers, c.num_heads, c.head_dim, c.hidden_dim, c.mel_dim
    text = DimRange("text", 1, min(64, c.max_text_len), c.max_text_len)  # a small model's max may be below 64
    kv_text = (L, "batch", H, "text", D)
    rows = {"past_k": "past", "past_v": "past", "cross_k": "text", "cross_v": "text"}
    caches = tuple(TensorSpec(f"{kind}_{i}", "float32", ("batch", H, rows[kind], D))
                   for kind in CACHE_KINDS for i in range(L))
    return [
        Component(
            "tts_encoder", model,
            inputs=(TensorSpec("tokens", "int64", ("batch", "text")), TensorSpec("text_lengths", "int64", ("batch",))),
            outputs=(TensorSpec("memory", "float32", ("batch", "text", E)),
                     TensorSpec("cross_k", "float32", kv_text), TensorSpec("cross_v", "float32", kv_text)),
            dims={"batch": DimRange("batch", 1, 8, 64), "text": text},
            exporter="dynamo", wrap=_TTSEncoder, make_inputs=_tts_encoder_inputs,
            int8_keeps_fp32=TTS_ENCODER_INT8_KEEPS_FP32,
        ),
        Component(
            "tts_decoder_step", model,
            inputs=(TensorSpec("prev_frame", "float32", ("batch", M)), TensorSpec("past_len", "int64", ("batch",)),
                    TensorSpec("text_lengths", "int64", ("batch",)), *caches),
            outputs=(TensorSpec("frame", "float32", ("batch", M)), TensorSpec("stop_prob", "float32", ("batch",)),
                     TensorSpec("new_k", "float32", (L, "batch", H, 1, D)),
                     TensorSpec("new_v", "float32", (L, "batch", H, 1, D))),
            dims={"batch": DimRange("batch", 1, 8, 256),
                  "past": DimRange("past", 1, min(250, c.max_frames), c.max_frames), "text": text},
            exporter="dynamo", wrap=_TTSDecoderStep, make_inputs=_tts_decoder_inputs, varargs_from=3,
            probability_outputs=("stop_prob",),
        ),
        Component(
            "tts_vocoder", model,
            inputs=(TensorSpec("mel", "float32", ("batch", "frames", M)),),
            outputs=(TensorSpec("audio", "float32", ("batch", "samples")),),
            dims={"batch": DimRange("batch", 1, 8, 64), "frames": DimRange("frames", 1, min(250, c.max_frames),
                                                                            c.max_frames)},
            exporter="dynamo", wrap=_TTSVocoder, make_inputs=_tts_vocoder_inputs,
            spectral_outputs=("audio",) if getattr(c, "mel", None) is not None else (),  # a voice: Griffin-Lim
        ),
    ]


TTS_ENCODER_INT8_KEEPS_FP32 = (
    "the encoder runs once per sentence and sets every phoneme's timing: on the trained voice (40 held-out sentences, "
    "torch) its INT8 weights moved the predicted durations so that 32.5 % of sentences ended at another length than "
    "FP32 (per-tensor or per-channel scales alike) and the frames of the rest were 11.6 dB mel SNR from FP32; with it "
    "at FP32 and the decoder step INT8, 2.5 % and 32.6 dB, at the same speed")
"""Why CPU INT8 keeps the TTS encoder at FP32 (:attr:`Component.int8_keeps_fp32`); INT8 saves time in the decoder
step, which runs once per frame."""


def _asr_component(size: str) -> Component:
    from speechtrt.config import asr_config

    return asr_component(asr_config(size), f"asr-{size}", f"asr_{size}", exporter="torchscript")


def asr_component(config, model: str, name: str | None = None, exporter: str = "dynamo") -> Component:
    """The graph of an offline CTC model with ``config`` (``input_dim``, ``vocab_size``): features and lengths in,
    log-probabilities and output lengths out (:class:`speechtrt.models.protocol.OfflineASRModel`). ``name``
    defaults to ``asr_<model>``."""
    c = config
    return Component(
        name or graph_name_for(model, "asr"), model,
        inputs=(TensorSpec("features", "float32", ("batch", "frames", c.input_dim)),
                TensorSpec("feature_lengths", "int64", ("batch",))),
        outputs=(TensorSpec("log_probs", "float32", ("batch", "out_frames", c.vocab_size)),
                 TensorSpec("output_lengths", "int64", ("batch",))),
        dims={"batch": DimRange("batch", 1, 16, 64), "frames": DimRange("frames", 1, 800, 3000)},
        exporter=exporter, wrap=_ASR, make_inputs=_asr_inputs,
    )


def stream_component(model: nn.Module, model_name: str, name: str | None = None,
                     exporter: str = "torchscript") -> Component:
    """The step graph of a streaming model (:class:`speechtrt.models.protocol.StreamingASR`): one input per state
    tensor, named as ``initial_state`` names them, with its batch axis found from ``initial_state(1)`` and
    ``initial_state(2)``; the new state comes out as ``<name>_out``."""
    from speechtrt.models.protocol import batch_axes

    c = model.config
    s1, s2 = model.initial_state(1), model.initial_state(2)
    axes = batch_axes(s1, s2)
    state_in = tuple(TensorSpec(k, "float32", tuple("batch" if i == axes[k] else d for i, d in enumerate(v.shape)))
                     for k, v in s1.items())
    return Component(
        name or graph_name_for(model_name, "asr_stream"), model_name,
        inputs=(TensorSpec("features", "float32", ("batch", "chunk", c.input_dim)), *state_in),
        outputs=(TensorSpec("log_probs", "float32", ("batch", "out_frames", c.vocab_size)),
                 *(TensorSpec(f"{s.name}_out", s.dtype, s.shape) for s in state_in)),
        dims={"batch": DimRange("batch", 1, 64, 1024), "chunk": DimRange("chunk", 1, c.chunk_frames, 64)},
        exporter=exporter, wrap=_StreamStep, make_inputs=_asr_stream_inputs, varargs_from=1,
    )


def graph_name_for(model: str, prefix: str) -> str:
    """``<prefix>_<model>`` with the characters a file and an ONNX name dislike replaced."""
    return f"{prefix}_" + "".join(ch if ch.isalnum() else "_" for ch in model)


def components_of(model: nn.Module, name: str) -> list[Component]:
    """The graphs of any model following a protocol of :mod:`speechtrt.models.protocol`, shaped by its config and
    filed under ``name`` (the folder its plans go to): the three TTS graphs, or one ASR graph. The reference models
    keep their registry components (:func:`components_for`)."""
    from speechtrt.models.protocol import model_kind

    kind = model_kind(model)
    exporter = getattr(model, "onnx_exporter", None)
    if kind == "tts":
        return tts_components(model.config, model=name)
    if kind == "asr-stream":
        return [stream_component(model, name, exporter=exporter or "torchscript")]
    return [asr_component(model.config, name, exporter=exporter or "dynamo")]


def _asr_stream_component() -> Component:
    from speechtrt.config import asr_config

    c = asr_config("stream")
    f2 = (c.input_dim + 1) // 2
    state_in = (TensorSpec("ctx1", "float32", ("batch", 2, c.input_dim)),
                TensorSpec("ctx2", "float32", ("batch", 64, 2, f2)),
                TensorSpec("h", "float32", (c.num_layers, "batch", c.hidden_dim)),
                TensorSpec("c", "float32", (c.num_layers, "batch", c.hidden_dim)))
    return Component(
        "asr_stream_step", "asr-stream",
        inputs=(TensorSpec("features", "float32", ("batch", "chunk", c.input_dim)), *state_in),
        outputs=(TensorSpec("log_probs", "float32", ("batch", "out_frames", c.vocab_size)),
                 *(TensorSpec(f"{s.name}_out", s.dtype, s.shape) for s in state_in)),
        dims={"batch": DimRange("batch", 1, 64, 1024), "chunk": DimRange("chunk", 1, c.chunk_frames, 64)},
        exporter="torchscript", wrap=_ASRStreamStep, make_inputs=_asr_stream_inputs,
    )


def all_components() -> list[Component]:
    return [*tts_components(), *(_asr_component(s) for s in ("small", "medium", "large")), _asr_stream_component()]


def component(name: str, config=None, model: str = "tts") -> Component:
    """The component ``name``; for the TTS graphs, shaped by ``config`` (a model's config) when given and filed
    under ``model`` (the folder its plans go to)."""
    from speechtrt.vocab import check_component

    check_component(name)
    if config is not None and name.startswith("tts_"):
        return next(c for c in tts_components(config, model=model) if c.name == name)
    return next(c for c in all_components() if c.name == name)


def components_for(model: str) -> list[Component]:
    """Components of a CLI model name (``tts``, ``asr-small`` ... ``asr-stream``) or of ``all``."""
    from speechtrt.vocab import check_model

    if check_model(model, flag="--model", allow_all=True) == "all":
        return all_components()
    return [c for c in all_components() if c.model == model]
