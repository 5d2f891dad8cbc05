"""TTS serving (layer 6): the in-flight service over the runtime, and the seed baseline it is measured against."""

from speechtrt.tts.service import ServiceConfig, TTSHandle, TTSResult, TTSService, split_text

__all__ = ["ServiceConfig", "TTSHandle", "TTSResult", "TTSService", "split_text"]
