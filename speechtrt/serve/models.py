"""Which models the server can serve, by id: a table per kind, so a new voice or ASR size drops in as one row.

TTS: ``tts`` is the seeded reference model (random weights: it decodes a fixed number of frames by the frame rule,
22.05 kHz); ``voice-en`` is a trained voice (decodes until its stop token) loaded from ``checkpoints/voice-en.pt``.
ASR: each size loads ``checkpoints/asr-<size>.pt`` when it exists, else the seeded model (and says so: its
transcripts are not words).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from speechtrt.config import FrameRule
from speechtrt.errors import InputError

log = logging.getLogger("speechtrt.serve")

# Voices a client may name. Every model here has one voice; OpenAI's names all map onto it.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar")


@dataclass(frozen=True)
class TTSModelSpec:
    name: str
    load: Callable[[Path], object]  # checkpoints folder -> model
    frame_rule: FrameRule | None  # fixed-length decoding; None: until the stop token
    description: str
    voices: tuple[str, ...] = ("default",)


def _seeded_tts(checkpoints: Path):
    from speechtrt.models import build_tts

    return build_tts(seed=0)


def _checkpoint(file: str) -> Callable[[Path], object]:
    def load(checkpoints: Path):
        from speechtrt.models.loading import resolve_model

        path = Path(checkpoints) / file
        if not path.is_file():
            raise InputError(f"model checkpoint {path} does not exist: train it (speechtrt train) or serve another "
                             "model")
        return resolve_model(str(path), kind="tts").model  # with its own text front end (a voice reads phonemes)

    return load


TTS_MODELS: dict[str, TTSModelSpec] = {
    "tts": TTSModelSpec("tts", _seeded_tts, FrameRule(), "seeded reference TTS (random weights, fixed-length "
                        "frames by the frame rule), 22.05 kHz"),
    "voice-en": TTSModelSpec("voice-en", _checkpoint("voice-en.pt"), None, "trained English voice (decodes to its "
                             "stop token)"),
}

ASR_MODELS = ("asr-small", "asr-medium", "asr-large")
STREAM_MODELS = ("asr-stream",)


def load_asr(name: str, checkpoints: Path):
    """``(model, description)`` of an ASR model id: its checkpoint when present, else the seeded init."""
    from speechtrt.models import build_model, load_checkpoint

    if name not in (*ASR_MODELS, *STREAM_MODELS):
        raise InputError(f"unknown ASR model {name!r}: choose from {', '.join((*ASR_MODELS, *STREAM_MODELS))}")
    path = Path(checkpoints) / f"{name}.pt"
    if path.is_file():
        model, _ = load_checkpoint(path)
        if model.config.size != name.removeprefix("asr-"):
            raise InputError(f"checkpoint {path} holds an asr-{model.config.size} model, not {name}")
        return model, f"{name} from {path}"
    log.warning("no checkpoint %s: serving the seeded %s (its transcripts are not words)", path, name)
    return build_model(name), f"{name}, seeded init (no checkpoint: transcripts are not words)"


def tts_spec(name: str) -> TTSModelSpec:
    if name not in TTS_MODELS:
        raise InputError(f"unknown TTS model {name!r}: choose from {', '.join(TTS_MODELS)}")
    return TTS_MODELS[name]
