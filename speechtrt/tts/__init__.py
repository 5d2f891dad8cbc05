"""TTS serving (layer 6): the in-flight service over the runtime, and the seed baseline it is measured against."""

from typing import TYPE_CHECKING

from speechtrt.lazy import lazy_exports

if TYPE_CHECKING:
    from speechtrt.tts.service import ServiceConfig, TTSHandle, TTSResult, TTSService, split_text

__getattr__, __dir__ = lazy_exports(__name__, {
    "service": ("ServiceConfig", "TTSHandle", "TTSResult", "TTSService", "split_text"),
})

__all__ = ["ServiceConfig", "TTSHandle", "TTSResult", "TTSService", "split_text"]
