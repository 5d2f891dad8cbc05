"""The model protocols: what a TTS or ASR model must offer for speechtrt to export, quantize, build and run it.

speechtrt never asks which class a model is. The exporters, the KV-cache pool, the in-flight scheduler, the TTS
service, the quality report and the bench call the methods below and read the config fields below; a model that has
them — the seeded reference, a trained voice, a user's own network — goes through every path unchanged.
:func:`check_tts_model` and :func:`check_asr_model` name what a model lacks (a missing method, a missing config
field, an output of the wrong shape on a tiny probe) before any work starts.

A user's model comes in through ``--model``: a checkpoint written by speechtrt (with its config), or
``module:factory`` / ``path/to/file.py:factory``, a function returning the model
(:func:`speechtrt.models.loading.resolve_model`).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from speechtrt.errors import InputError

TTS_CONFIG_FIELDS = ("num_layers", "num_heads", "head_dim", "hidden_dim", "mel_dim", "max_text_len", "max_frames",
                     "samples_per_frame", "sample_rate", "vocab_size")
"""What a TTS model's ``config`` holds (ints). ``mel_dim`` is the width of one *decoder frame* (a model that emits
``r`` mel frames per step has ``mel_dim = r · n_mels``); ``max_frames`` counts decoder frames and
``samples_per_frame`` is the audio one decoder frame becomes."""

TTS_METHODS = ("encode", "cross_kv", "decode_step", "vocoder_inference")

ASR_CONFIG_FIELDS = ("input_dim", "vocab_size")
STREAMING_CONFIG_FIELDS = ("input_dim", "vocab_size", "chunk_frames")


class TTSConfigLike(Protocol):
    num_layers: int
    num_heads: int
    head_dim: int
    hidden_dim: int
    mel_dim: int
    max_text_len: int
    max_frames: int
    samples_per_frame: int
    sample_rate: int
    vocab_size: int


class Tokenizer(Protocol):
    """A TTS model's text front end (``model.tokenizer``; :class:`~speechtrt.models.text.ByteTokenizer` when a
    model has none). Called once per text, at the edge."""

    def normalize(self, text: str) -> str:
        """The text as the model reads it (what sentence splitting works on); raises InputError for empty text."""

    def tokens(self, text: str) -> list[int]:
        """Token ids in ``[1, vocab_size)`` for the encoder; raises InputError naming unsupported characters."""


@runtime_checkable
class TTSModel(Protocol):
    """An autoregressive TTS model: text encoder → causal decoder with cross-attention and a KV cache → vocoder.

    Shapes (``L`` decoder layers, ``H`` heads of width ``D``, ``E`` = hidden_dim, ``M`` = mel_dim, ``S`` text
    tokens, ``P`` cached positions):

    * ``encode(tokens [B, S] int64, text_lengths [B] int64) -> memory [B, S, E]``. Rows past a text's length must not
      change the valid rows (a padded batch equals each text alone).
    * ``cross_kv(memory) -> (K, V)`` each ``[L, B, H, S, D]``: cross-attention keys and values of every decoder
      layer, computed once per request.
    * ``decode_step(prev_frame [B, M], past_len [B] int64, past_k, past_v, cross_k, cross_v, text_lengths [B])
      -> (frame [B, M], stop_prob [B] in [0, 1], new_k [L, B, H, 1, D], new_v [L, B, H, 1, D])``. Caches come as
      ``L`` tensors ``[B, H, P, D]`` (the exported graph's inputs) or one stacked ``[L, B, H, P, D]`` tensor; rows at
      or past ``past_len`` are garbage and must be ignored (mask them). ``prev_frame`` is zeros at the first step.
      The caller writes the returned rows at index ``past_len``. Must be causal and deterministic in eval mode.
      :func:`speechtrt.models.tts.cached_decoder_layer` is the shared, tested cached step of an
      ``nn.TransformerDecoderLayer`` (with :func:`~speechtrt.models.tts.step_masks` for the masks).
    * ``vocoder_inference(frames [B, T, M]) -> audio [B, T · samples_per_frame]`` float in [-1, 1].
    * ``config``: the fields of :data:`TTS_CONFIG_FIELDS`.

    Optional:

    * ``tokenizer`` (:class:`Tokenizer`); default the seed's byte table.
    * ``reference_frames(audio [N] float32, sample_rate) -> [T, M]``: the decoder frames the model was trained to
      emit for this audio (its training features). The quality report uses it for the teacher-forced
      measurement and the vocoder ceiling.
    * ``name``: the folder its graphs and engines go to (default: the ``--model`` name).

    Each method must export with ``torch.onnx.export(dynamo=True)`` with dynamic batch and time axes (see
    :func:`speechtrt.export.components.tts_components`).
    """

    config: Any

    def encode(self, tokens: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor: ...

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode_step(self, prev_frame: torch.Tensor, past_len: torch.Tensor, past_k, past_v, cross_k, cross_v,
                    text_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def vocoder_inference(self, frames: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class OfflineASRModel(Protocol):
    """A CTC ASR model over whole utterances.

    * ``forward(features [B, T, input_dim] float32, lengths [B] int64) -> (log_probs [B, T', vocab_size],
      out_lengths [B] int64)``: log-softmax over the seed's character table (index 0 = CTC blank; printable ASCII
      at its code point), ``out_lengths`` the valid output frames of each row. Padded frames must not change the
      valid outputs. Features are speechtrt's 80-bin log-mel at 10 ms (:func:`speechtrt.models.audio.log_mel`).
    * ``config``: ``input_dim``, ``vocab_size``.
    * optional ``onnx_exporter``: ``"dynamo"`` (default) or ``"torchscript"`` (what LSTMs need).
    """

    config: Any

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class StreamingASR(Protocol):
    """A streaming CTC ASR model with its state carried explicitly between chunks (the reference implementation is
    :class:`speechtrt.models.asr.StreamingASRModel`).

    * ``initial_state(batch) -> dict[str, Tensor]``: the zero state of ``batch`` streams, in the order ``step``
      takes it. Each tensor has one batch axis (found by comparing ``initial_state(1)`` with ``initial_state(2)``).
    * ``step(features [B, chunk, input_dim], *state) -> (log_probs [B, T', vocab_size], *new_state)``: one chunk;
      the new state has the shapes of the old. Streaming an utterance chunk by chunk equals the model's offline pass.
    * ``config``: ``input_dim``, ``vocab_size``, ``chunk_frames``.
    """

    config: Any

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]: ...

    def step(self, features: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


# ---------------------------------------------------------------- checks


def _missing_methods(model, names: Sequence[str]) -> list[str]:
    return [f"method {n}()" for n in names if not callable(getattr(model, n, None))]


def _missing_fields(config, names: Sequence[str]) -> list[str]:
    if config is None:
        return ["a `config` attribute"]
    out = []
    for n in names:
        value = getattr(config, n, None)
        if value is None:
            out.append(f"config.{n}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            out.append(f"config.{n} as a positive int (got {value!r})")
    return out


def _shape(t) -> tuple:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else (type(t).__name__,)


def _expect(problems: list[str], what: str, got, want: tuple) -> None:
    if _shape(got) != want:
        problems.append(f"{what} has shape {list(_shape(got))}, expected {list(want)}")


def tts_model_problems(model, probe: bool = True) -> list[str]:
    """Everything ``model`` lacks as a :class:`TTSModel`; with ``probe`` also the shapes of a tiny run (batch 2,
    3 tokens, one cached position) checked against its config. Empty when the model fits."""
    problems = _missing_methods(model, TTS_METHODS)
    config = getattr(model, "config", None)
    problems += _missing_fields(config, TTS_CONFIG_FIELDS)
    tok = getattr(model, "tokenizer", None)
    if tok is not None and not (callable(getattr(tok, "normalize", None)) and callable(getattr(tok, "tokens", None))):
        problems.append("a tokenizer with normalize(text) and tokens(text) (it has a `tokenizer` without them)")
    if problems or not probe:
        return problems
    c = config
    if c.num_heads * c.head_dim != c.hidden_dim:
        problems.append(f"config.num_heads × head_dim = hidden_dim (got {c.num_heads} × {c.head_dim} != "
                        f"{c.hidden_dim})")
    return problems + _probe_tts(model, c)


def _probe_tts(model, c) -> list[str]:
    problems: list[str] = []
    b, s, L, H, D = 2, 3, c.num_layers, c.num_heads, c.head_dim
    tokens = torch.full((b, s), min(3, c.vocab_size - 1), dtype=torch.int64)
    lengths = torch.tensor([s, s - 1])
    stage = "encode"
    try:
        with torch.no_grad():
            memory = model.encode(tokens, lengths)
            _expect(problems, "encode(tokens [2, 3]) output", memory, (b, s, c.hidden_dim))
            stage = "cross_kv"
            ck, cv = model.cross_kv(memory)
            for name, t in (("K", ck), ("V", cv)):
                _expect(problems, f"cross_kv {name}", t, (L, b, H, s, D))
            if problems:
                return problems
            stage = "decode_step"
            past = [torch.zeros(b, H, 1, D) for _ in range(L)]
            out = model.decode_step(torch.zeros(b, c.mel_dim), torch.zeros(b, dtype=torch.int64), past, past,
                                    list(ck), list(cv), lengths)
            if not isinstance(out, (tuple, list)) or len(out) != 4:
                return problems + ["decode_step to return (frame, stop_prob, new_k, new_v)"]
            frame, stop, nk, nv = out
            _expect(problems, "decode_step frame", frame, (b, c.mel_dim))
            _expect(problems, "decode_step stop_prob", stop, (b,))
            _expect(problems, "decode_step new_k", nk, (L, b, H, 1, D))
            _expect(problems, "decode_step new_v", nv, (L, b, H, 1, D))
            stage = "vocoder_inference"
            audio = model.vocoder_inference(torch.zeros(b, 2, c.mel_dim))
            _expect(problems, "vocoder_inference(frames [2, 2, mel_dim]) output", audio,
                    (b, 2 * c.samples_per_frame))
    except Exception as exc:  # a user's model failing on the probe: say where, with its message
        problems.append(f"{stage}() to run on a probe batch (it raised {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''})")
    return problems


def check_tts_model(model, probe: bool = True, flag: str = "--model") -> None:
    """Raise :class:`InputError` naming everything ``model`` lacks as a :class:`TTSModel` (see
    :func:`tts_model_problems`); return None when it fits."""
    problems = tts_model_problems(model, probe)
    if problems:
        raise InputError(f"{flag}: {type(model).__name__} is not a speechtrt TTS model; it needs "
                         + "; ".join(problems) + " (see speechtrt.models.protocol.TTSModel)")


def batch_axes(state_1: dict[str, torch.Tensor], state_2: dict[str, torch.Tensor]) -> dict[str, int]:
    """The batch axis of every state tensor: the one axis where ``initial_state(1)`` and ``initial_state(2)``
    differ. Raises InputError for a tensor without exactly one such axis."""
    axes = {}
    for name, a in state_1.items():
        b = state_2.get(name)
        diff = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y] if b is not None else []
        if b is None or a.dim() != b.dim() or len(diff) != 1 or a.shape[diff[0]] != 1 or b.shape[diff[0]] != 2:
            raise InputError(f"initial_state()[{name!r}] needs exactly one batch axis (size 1 for one stream, 2 for "
                             f"two); got {list(a.shape)} and {list(b.shape) if b is not None else 'nothing'}")
        axes[name] = diff[0]
    return axes


def asr_model_problems(model, probe: bool = True) -> list[str]:
    """Everything ``model`` lacks as an :class:`OfflineASRModel` or a :class:`StreamingASR` (streaming when it has
    ``step``); with ``probe``, the shapes of a tiny run."""
    streaming = callable(getattr(model, "step", None))
    config = getattr(model, "config", None)
    if streaming:
        problems = _missing_methods(model, ("initial_state", "step"))
        problems += _missing_fields(config, STREAMING_CONFIG_FIELDS)
    else:
        problems = [] if callable(model) else ["to be callable as forward(features, lengths)"]
        problems += _missing_fields(config, ASR_CONFIG_FIELDS)
    if problems or not probe:
        return problems
    try:
        with torch.no_grad():
            if streaming:
                s1, s2 = model.initial_state(1), model.initial_state(2)
                batch_axes(s1, s2)
                out = model.step(torch.zeros(2, config.chunk_frames, config.input_dim), *s2.values())
                if not isinstance(out, (tuple, list)) or len(out) != 1 + len(s2):
                    return [f"step() to return (log_probs, {', '.join(s2)})"]
                if out[0].dim() != 3 or out[0].shape[0] != 2 or out[0].shape[2] != config.vocab_size:
                    problems.append(f"step() log_probs has shape {list(out[0].shape)}, expected [2, T', "
                                    f"{config.vocab_size}]")
                for (name, old), new in zip(s2.items(), out[1:]):
                    _expect(problems, f"step() new state {name!r}", new, tuple(old.shape))
            else:
                out = model(torch.zeros(2, 64, config.input_dim), torch.tensor([64, 40]))
                if not isinstance(out, (tuple, list)) or len(out) != 2:
                    return ["forward() to return (log_probs, out_lengths)"]
                lp, ol = out
                if lp.dim() != 3 or lp.shape[0] != 2 or lp.shape[2] != config.vocab_size:
                    problems.append(f"forward() log_probs has shape {list(lp.shape)}, expected [2, T', "
                                    f"{config.vocab_size}]")
                _expect(problems, "forward() out_lengths", ol, (2,))
    except InputError as exc:
        problems.append(str(exc))
    except Exception as exc:
        problems.append(f"{'step' if streaming else 'forward'}() to run on a probe batch (it raised "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
    return problems


def check_asr_model(model, probe: bool = True, flag: str = "--model") -> None:
    """Raise :class:`InputError` naming everything ``model`` lacks as an ASR model; None when it fits."""
    problems = asr_model_problems(model, probe)
    if problems:
        raise InputError(f"{flag}: {type(model).__name__} is not a speechtrt ASR model; it needs "
                         + "; ".join(problems) + " (see speechtrt.models.protocol)")


def model_kind(model) -> str:
    """``tts``, ``asr-stream`` or ``asr``: which protocol ``model`` means to follow (by the methods it has)."""
    if callable(getattr(model, "decode_step", None)):
        return "tts"
    if callable(getattr(model, "step", None)) and callable(getattr(model, "initial_state", None)):
        return "asr-stream"
    return "asr"
