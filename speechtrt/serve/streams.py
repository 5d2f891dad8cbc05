"""The server's one seam to streaming ASR (:mod:`speechtrt.stream`): open a stream, push audio, hear partials,
finalize, cancel.

Only the engine's public API is used here (``StreamingEngine`` open with ``on_update`` / push / finalize_async /
cancel / start / stop / counts, ``StepModel``, ``StreamConfig``). Partials come from the engine's per-stream
``on_update`` callback: a :class:`~speechtrt.stream.core.StreamResult` with the text so far, its token ids and the
time each token was emitted, and the audio decoded so far (``frames`` × 10 ms). Finals are the engine's (equal to the
offline transcript of the same model); their word timings come from the same token times
(:func:`speechtrt.serve.timing.words_of`).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from speechtrt.models.audio import FEATURES, log_mel
from speechtrt.models.text import asr_decode, ctc_greedy
from speechtrt.serve.config import StreamServeConfig
from speechtrt.serve.timing import OUTPUT_S, Word, words_of
from speechtrt.stream import StepConfig, StepModel, StreamConfig, StreamingEngine
from speechtrt.stream.core import StreamResult
from speechtrt.stream.engine import BackpressureError

log = logging.getLogger("speechtrt.serve")

__all__ = ["BackpressureError", "Final", "Partial", "StreamSession", "StreamingASR"]


@dataclass(frozen=True)
class Partial:
    text: str
    end_s: float  # audio decoded so far, seconds from the stream's start


@dataclass(frozen=True)
class Final:
    text: str
    samples: int  # 16 kHz samples the stream received
    words: list[Word]
    timed_out: bool = False

    @property
    def duration_s(self) -> float:
        return self.samples / FEATURES.sample_rate


@dataclass(eq=False)
class StreamSession:
    """One open stream. ``on_partial`` is called on the engine's thread after each step that carried it."""

    asr: "StreamingASR"
    id: str
    on_partial: Callable[[Partial], None] | None = None
    pushed: int = 0  # samples accepted

    def push(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono float32 samples; all or nothing. Raises BackpressureError when the stream's buffer is
        full (push again shortly), InputError for bad samples or a closed stream."""
        self.asr.engine.push(self.id, samples, block=False)
        self.pushed += len(samples)

    def finalize(self) -> Future:
        """End the audio; the future resolves to a :class:`Final` once every chunk is decoded."""
        inner = self.asr.engine.finalize_async(self.id)
        outer: Future = Future()

        def done(f):
            self.asr._sessions.pop(self.id, None)
            if f.cancelled() or f.exception() is not None:
                outer.set_exception(f.exception() if not f.cancelled() else RuntimeError("stream cancelled"))
                return
            ft = f.result()
            words = words_of(_emitted(ft))
            if " ".join(w.word for w in words) != " ".join(ft.text.split()):
                words = []  # token times that do not spell the text: no word timings rather than wrong ones
            outer.set_result(Final(ft.text, self.pushed, words, ft.timed_out))

        inner.add_done_callback(done)
        return outer

    def cancel(self) -> None:
        """Drop the stream and its unprocessed audio; its slot frees at once (or after the step it is in)."""
        self.asr._sessions.pop(self.id, None)
        try:
            self.asr.engine.cancel(self.id)
        except Exception:  # already finished or reaped
            pass

    def _update(self, result: StreamResult) -> None:  # the engine's scheduler thread
        if self.on_partial is not None and not result.final:
            self.on_partial(Partial(result.text, result.frames * FEATURES.hop / FEATURES.sample_rate))


def _emitted(result: StreamResult) -> list[tuple[int, int]]:
    """``(token, output index)`` pairs of a result (its token times back on the model's 40 ms output grid)."""
    return [(tok, int(round(t / OUTPUT_S))) for tok, t in zip(result.token_ids, result.timestamps_s)]


class StreamingASR:
    """A streaming engine over one streaming model, started and shared by every connection."""

    sample_rate = FEATURES.sample_rate

    def __init__(self, name: str, model, config: StreamServeConfig = StreamServeConfig(), *, device: str = "cpu",
                 threads: int | None = None, idle_timeout_s: float = 60.0,
                 cache_dir: str | Path = "tmp/cache/stream/onnx", on_batch: Callable[[int], None] | None = None):
        self.name = name
        self.config = config
        chunk_frames = config.chunk_ms // 10
        self.backend = StepModel.open(StepConfig(backend=config.backend, device=device, max_batch=config.max_batch,
                                                 threads=threads, cache_dir=Path(cache_dir)), model)
        self.engine = StreamingEngine(self.backend, StreamConfig(
            max_streams=config.max_streams, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
            chunk_frames=chunk_frames, max_buffer_ms=config.max_buffer_ms, idle_timeout_s=idle_timeout_s))
        self.engine.step_observer = self._observe
        self._sessions: dict[str, StreamSession] = {}
        self._on_batch = on_batch

    @property
    def capacity(self) -> int:
        return self.config.max_streams

    @property
    def open_streams(self) -> int:
        return self.engine.open_streams

    def start(self) -> "StreamingASR":
        self.engine.warmup()
        self.engine.start()
        return self

    def close(self) -> None:
        self.engine.close()

    def open(self, on_partial: Callable[[Partial], None] | None = None) -> StreamSession:
        """A new stream, or CapacityError (every slot taken) / its shutdown refusal."""
        session = StreamSession(self, "", on_partial)
        session.id = self.engine.open(sample_rate=self.sample_rate, on_update=session._update)
        self._sessions[session.id] = session
        return session

    def offline_text(self, samples: np.ndarray) -> str:
        """The same model's offline transcript of a whole utterance (what a stream's final equals)."""
        log_probs = self.backend.offline(log_mel(samples)[None])[0]
        return asr_decode(ctc_greedy(log_probs.argmax(-1).tolist()))

    def _observe(self, stream_ids, log_probs, valid_out) -> None:  # the engine's scheduler thread: batch sizes
        if self._on_batch is not None:
            self._on_batch(len(stream_ids))
