"""Text to audio files: what ``speechtrt tts`` does, as a library.

:func:`check_texts` applies the text rules with the model's own tokenizer before any work (empty → refused;
characters the model cannot read → refused, named, with the line; a sentence longer than one request holds →
refused with the maximum), :func:`prepare_backend` makes the graphs or plans the backend opens (export → calibrate →
build, into a folder keyed by the weights), and :func:`synthesize_texts` runs every text through one in-flight
:class:`~speechtrt.tts.service.TTSService` — a trained voice to its stop token, one request per sentence, so a long
text is split at sentence boundaries — and :func:`write_audio` writes each result with libsndfile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from speechtrt.config import FrameRule
from speechtrt.errors import InputError
from speechtrt.models.text import tokenizer_of

OUTPUT_FORMATS = ("wav", "flac")
"""What ``speechtrt tts`` writes, chosen by the output file's suffix (16-bit PCM)."""

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


@dataclass(frozen=True)
class SynthesisOptions:
    """How texts become audio. ``stop_token``: decode each sentence until the model's stop token (trained models);
    otherwise the seed's fixed-length ``FrameRule``."""

    backend: str = "torch"
    precision: str = "fp32"
    device: str = "cpu"
    stop_token: bool = True
    max_slots: int = 8
    max_frames: int | None = None  # cap of decoder frames per request (None: the model's max_frames)
    threads: int | None = None
    onnx_dir: str = "out/onnx"
    engine_dir: str = "engines"


def check_texts(model, texts: list[str], what: str = "text") -> list[list[str]]:
    """The sentences of every text, each tokenised once by the model's tokenizer to check it.

    Raises InputError naming the text (``what`` and its line number when there are several) for an empty text, a
    character the model cannot read, or a sentence with more tokens than the model's ``max_text_len``.
    """
    tok = tokenizer_of(model)
    limit = model.config.max_text_len
    out = []
    for i, text in enumerate(texts, start=1):
        where = f"{what} line {i}"
        try:
            norm = tok.normalize(text)
            if not norm.strip():
                raise InputError("text is empty (or only whitespace): give at least one word to synthesize")
            sentences = [s for s in _SENTENCE_END.split(norm) if s.strip()]
            for s in sentences:
                n = len(tok.tokens(s))
                if n > limit:
                    raise InputError(f"a sentence has {n} tokens, more than the {limit} one request holds, and no "
                                     f"sentence boundary to split at: {s[:40]!r}...; shorten it")
        except InputError as exc:
            raise InputError(f"{where}: {exc}" if len(texts) > 1 else str(exc)) from None
        out.append(sentences)
    return out


def prepare_backend(model, options: SynthesisOptions, calib_dir: str | Path = "calib_data",
                    log: Callable[[str], None] = lambda msg: None) -> None:
    """Make the encoder, decoder-step and vocoder artifacts ``options.backend`` opens, when missing."""
    if options.backend == "torch":
        return
    from speechtrt.export.components import component
    from speechtrt.pipeline import ensure_artifact
    from speechtrt.runtime.open import Artifacts

    name = getattr(model, "name", None)
    artifacts = Artifacts(onnx_dir=Path(options.onnx_dir), engine_dir=Path(options.engine_dir), model=model,
                          model_name=name)
    for part in ("tts_encoder", "tts_decoder_step", "tts_vocoder"):
        ensure_artifact(component(part, model.config, name or "tts"), options.precision, options.backend, artifacts,
                        calib_dir=calib_dir, log=log)


def synthesize_texts(model, texts: list[str], options: SynthesisOptions,
                     on_done: Callable[[int, object], None] | None = None) -> list:
    """Every text through one in-flight service (all submitted at once); returns the
    :class:`~speechtrt.tts.service.TTSResult` of each, in order. ``on_done(index, result)`` is called as each
    finishes (for progress)."""
    from speechtrt.tts.service import ServiceConfig, TTSService

    c = model.config
    cap = min(c.max_frames, options.max_frames or c.max_frames)
    rule = FrameRule(max_frames=cap, min_frames=min(10, cap))
    cfg = ServiceConfig(backend=options.backend, precision=options.precision, device=options.device,
                        max_slots=options.max_slots, max_frames=cap, max_text=c.max_text_len,
                        frame_rule=None if options.stop_token else rule,
                        onnx_dir=options.onnx_dir, engine_dir=options.engine_dir, threads=options.threads)
    service = TTSService(model, cfg)
    results: list = [None] * len(texts)
    try:
        split = "sentences" if options.stop_token else "fit"
        handles = [service.submit(t, split=split) for t in texts]
        pending = set(range(len(texts)))
        while pending:
            busy = service.step()
            for i in sorted(pending):
                if handles[i].done():
                    results[i] = handles[i].result()
                    pending.discard(i)
                    if on_done is not None:
                        on_done(i, results[i])
            if not busy and pending:
                service.run_until_idle()
    finally:
        service.close()
    return results


def output_format(path: Path, flag: str = "-o") -> str:
    """``wav`` or ``flac`` from ``path``'s suffix; InputError for anything else."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"{flag} {path}: the file's suffix picks the format; use .wav or .flac")
    return fmt


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono audio as 16-bit PCM WAV or FLAC (by suffix), through libsndfile."""
    from speechtrt.models.audio import write_wav

    return write_wav(path, np.clip(np.nan_to_num(np.asarray(audio, np.float32)), -1.0, 1.0), sample_rate)
