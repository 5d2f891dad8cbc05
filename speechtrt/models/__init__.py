"""Reference PyTorch models (layer 1): TTS, ASR sizes, the streaming ASR variant, text and checkpoint helpers."""

from typing import TYPE_CHECKING

from speechtrt.lazy import lazy_exports

if TYPE_CHECKING:
    from speechtrt.models.asr import SimpleASRModel, StreamingASRModel, build_asr
    from speechtrt.models.checkpoints import load_checkpoint, save_checkpoint
    from speechtrt.models.tts import SimpleTTSModel, build_tts

__getattr__, __dir__ = lazy_exports(__name__, {
    "asr": ("SimpleASRModel", "StreamingASRModel", "build_asr"),
    "checkpoints": ("load_checkpoint", "save_checkpoint"),
    "tts": ("SimpleTTSModel", "build_tts"),
})

MODEL_NAMES = ("tts", "asr-small", "asr-medium", "asr-large", "asr-stream")


def build_model(name: str, seed: int = 0):
    """A deterministically initialised model by CLI name (``tts``, ``asr-small`` ... ``asr-stream``)."""
    from speechtrt.errors import InputError
    from speechtrt.models.asr import build_asr
    from speechtrt.models.tts import build_tts

    if name == "tts":
        return build_tts(seed=seed)
    if name in MODEL_NAMES:
        return build_asr(name.removeprefix("asr-"), seed=seed)
    raise InputError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)} (or 'all')")


__all__ = [
    "MODEL_NAMES", "SimpleASRModel", "SimpleTTSModel", "StreamingASRModel", "build_asr", "build_model",
    "build_tts", "load_checkpoint", "save_checkpoint",
]
