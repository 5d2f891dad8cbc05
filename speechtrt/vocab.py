"""The project's vocabulary: backends, precisions, models and components — one definition each.

Every command, config and library function that takes one of these names checks it here, so a typo is refused
with the same one-line message everywhere (naming the flag when there is one), before any work starts.
"""

from __future__ import annotations

from typing import Iterable

from speechtrt.errors import InputError

BACKENDS = ("torch", "ort", "trt")
"""Where a component runs: the PyTorch module, ONNX Runtime, a TensorRT / TensorRT-RTX plan."""

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
"""Every precision a runner can be asked for. Which backend runs which: :data:`BACKEND_PRECISIONS`."""

GRAPH_PRECISIONS = ("fp32", "fp16", "int8")
"""Precisions an exported graph and a TensorRT plan come in (bf16 exists only as torch weights)."""

REDUCED_PRECISIONS = ("fp16", "int8")
"""What ``speechtrt calibrate`` makes from an FP32 graph."""

BACKEND_PRECISIONS = {
    "torch": ("fp32", "fp16", "bf16", "int8"),  # fp16/bf16 on CUDA; int8 = dynamic quantization on the CPU
    "ort": ("fp32", "fp16", "int8"),  # int8 = ONNX Runtime's own int8 kernels (not the TensorRT Q/DQ graph)
    "trt": ("fp32", "fp16", "int8"),  # int8 = the ModelOpt Q/DQ graph, built strongly typed
}

CALIBRATION_METHODS = ("entropy", "max")

MODEL_NAMES = ("tts", "asr-small", "asr-medium", "asr-large", "asr-stream")
"""The reference models (``speechtrt.models.build_model``)."""

ASR_SIZES = ("small", "medium", "large")
"""The seed's offline ASR sizes. ``stream`` is the streaming variant (unidirectional, causal front end)."""

TTS_COMPONENTS = ("tts_encoder", "tts_decoder_step", "tts_vocoder")
ASR_COMPONENTS = ("asr_small", "asr_medium", "asr_large")
STREAM_COMPONENT = "asr_stream_step"
COMPONENT_NAMES = (*TTS_COMPONENTS, *ASR_COMPONENTS, STREAM_COMPONENT)
"""Every exported graph, one per component."""

ACCENTS = ("en-us", "en-us-nyc", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan")
"""espeak-ng English accents the reference checkpoints are trained and tested on."""

AUGMENTATIONS = ("speed", "reverb", "noise", "babble", "telephone", "gain")
"""ASR training's waveform augmentations in the order they are applied; SpecAugment is always on when augmenting."""


def _choice(value: str, allowed: Iterable[str], what: str, flag: str | None) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        where = f" ({flag})" if flag else ""
        raise InputError(f"unknown {what} {value!r}{where}: choose one of {', '.join(allowed)}")
    return value


def check_backend(name: str, flag: str | None = "--backend") -> str:
    return _choice(name, BACKENDS, "backend", flag)


def check_precision(name: str, backend: str | None = None, flag: str | None = "--precision") -> str:
    """``name`` when it is a precision (that ``backend`` runs, when given), else an InputError naming the flag."""
    _choice(name, PRECISIONS, "precision", flag)
    if backend is not None and name not in BACKEND_PRECISIONS[check_backend(backend, None)]:
        runs = ", ".join(BACKEND_PRECISIONS[backend])
        raise InputError(f"precision {name!r}{f' ({flag})' if flag else ''}: the {backend} backend runs {runs}")
    return name


def check_model(name: str, flag: str | None = "--model", allow_all: bool = False) -> str:
    return _choice(name, (*MODEL_NAMES, *(("all",) if allow_all else ())), "model", flag)


def check_component(name: str, flag: str | None = None) -> str:
    return _choice(name, COMPONENT_NAMES, "component", flag)


def parse_list(text: str, allowed: Iterable[str], flag: str, what: str = "value") -> tuple[str, ...]:
    """A comma-separated flag value as a tuple of known names, in the order given, without repeats.

    An empty list or an unknown name is an InputError naming ``flag`` and the choices (a typo must not turn into
    an empty run).
    """
    allowed = tuple(allowed)
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise InputError(f"{flag} is empty: give one or more of {', '.join(allowed)} (comma-separated)")
    unknown = [x for x in items if x not in allowed]
    if unknown:
        raise InputError(f"{flag} {','.join(unknown)}: unknown {what}(s); choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(items))
