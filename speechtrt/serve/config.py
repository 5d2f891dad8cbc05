"""What ``speechtrt serve`` runs: models, limits, admission — one frozen config the CLI fills from its flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from speechtrt.errors import InputError
from speechtrt.vocab import check_backend, check_precision

API_KEY_ENV = "SPEECHTRT_API_KEY"


@dataclass(frozen=True)
class Limits:
    """Every bound a request can hit. A refusal names the field and its value (``max_text_chars=4096``)."""

    max_body_bytes: int = 25 * 2**20  # one HTTP request body (OpenAI's upload limit)
    max_text_chars: int = 4096  # /v1/audio/speech ``input`` (OpenAI's limit)
    max_audio_s: float = 120.0  # one transcription upload, or one stream's total audio
    max_frame_bytes: int = 2**20  # one WebSocket message
    stream_idle_s: float = 15.0  # a stream that sends nothing this long is closed (its audio so far is decoded)
    admission_wait_s: float = 1.0  # how long a request waits for a slot before it is refused
    retry_after_s: int = 1  # the Retry-After a refusal carries

    def __post_init__(self):
        for name in ("max_body_bytes", "max_text_chars", "max_audio_s", "max_frame_bytes", "stream_idle_s"):
            if getattr(self, name) <= 0:
                raise InputError(f"limit {name}={getattr(self, name)} must be > 0")
        if self.admission_wait_s < 0:
            raise InputError(f"admission_wait_s={self.admission_wait_s} must be >= 0")


@dataclass(frozen=True)
class TTSServeConfig:
    """The TTS service the server runs per model (see :data:`speechtrt.serve.models.TTS_MODELS`)."""

    models: tuple[str, ...] = ("tts",)
    backend: str = "torch"
    precision: str = "fp32"
    max_slots: int = 8  # decode slots (KV cache rows) per model
    max_concurrent: int = 16  # requests admitted at once per model (the rest wait, then are refused)
    max_frames: int = 1000  # frames one slot holds; longer texts are split at sentences
    max_text: int = 256  # text tokens one slot holds
    lead_chars: int = 12  # streamed requests: part 0 is the first sentence's first words (at least this many chars)


@dataclass(frozen=True)
class ASRServeConfig:
    """Offline transcription: one batcher per served model; ``default`` answers requests without a dialect."""

    models: tuple[str, ...] = ("asr-small", "asr-medium")
    default: str | None = None  # None: the selection's overall pick, else the first of ``models``
    backend: str = "torch"
    precision: str = "fp32"
    decoder: str = "greedy"  # greedy | lexicon | lm
    max_batch: int = 8  # uploads per model call
    max_wait_ms: float = 20.0  # how long the first upload of a batch waits for company
    max_batch_frames: int = 12000  # padded feature frames per call (10 ms each)
    max_concurrent: int = 32  # uploads admitted at once per model
    degrade_after_s: float = 0.5  # a model saturated this long hands auto-routed uploads to the fastest model


@dataclass(frozen=True)
class StreamServeConfig:
    """Streaming ASR: one engine over one streaming model."""

    model: str = "asr-stream"
    backend: str = "torch"
    max_streams: int = 64
    max_batch: int = 64
    max_wait_ms: float = 10.0
    chunk_ms: int = 160
    max_buffer_ms: float = 2000.0


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    device: str = "cpu"
    threads: int | None = None  # torch / ONNX Runtime intra-op threads (None: library default)
    checkpoints: Path = Path("checkpoints")
    onnx_dir: Path = Path("out/onnx")
    engine_dir: Path = Path("engines")
    select: Path | None = None  # reports/asr_eval.json: per-dialect model choice
    drain_timeout_s: float = 30.0
    limits: Limits = field(default_factory=Limits)
    tts: TTSServeConfig | None = field(default_factory=TTSServeConfig)
    asr: ASRServeConfig | None = field(default_factory=ASRServeConfig)
    stream: StreamServeConfig | None = field(default_factory=StreamServeConfig)

    def __post_init__(self):
        if self.tts is None and self.asr is None and self.stream is None:
            raise InputError("nothing to serve: enable at least one of TTS, transcription or streaming")
        for part in (self.tts, self.asr):
            if part is not None:
                check_backend(part.backend)
                check_precision(part.precision, part.backend)
        if self.stream is not None:
            check_backend(self.stream.backend)
            if self.stream.chunk_ms % 40:
                raise InputError(f"stream chunk of {self.stream.chunk_ms} ms: use a multiple of 40 ms")
        if self.asr is not None and self.asr.decoder not in ("greedy", "lexicon", "lm"):
            raise InputError(f"unknown decoder {self.asr.decoder!r} (--decoder): choose greedy, lexicon or lm")
        if not 0 <= self.port <= 65535:
            raise InputError(f"port {self.port} is outside 0..65535")

    @property
    def effective_api_key(self) -> str | None:
        """``api_key``, else the ``SPEECHTRT_API_KEY`` environment variable, else None (no authentication)."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None
