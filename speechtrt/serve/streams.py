"""The server's one seam to streaming ASR (:mod:`speechtrt.stream`): open a stream, push audio, hear partials,
finalize, cancel.

Only the engine's public API is used here (``StreamingEngine`` open / push / finalize_async / cancel / start /
stop, its ``step_observer``, ``make_backend``, ``StreamConfig``), so a new stream core drops in by changing this
module alone. Partials with timestamps come from the step observer: after every batched model step it sees each
stream's log-probabilities and how many outputs were valid, and the adapter follows the engine's own CTC best path
(the same rule, :func:`speechtrt.serve.timing.emissions`) to know the partial text and the audio time it covers
(``end_s`` = outputs × 40 ms). Finals are the engine's (equal to the offline transcript of the same model); their
word timings come from the same emissions.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from speechtrt.models.audio import FEATURES, log_mel
from speechtrt.models.text import asr_decode, ctc_greedy
from speechtrt.serve.config import StreamServeConfig
from speechtrt.serve.timing import OUTPUT_S, Word, emissions, words_of
from speechtrt.stream.backends import make_backend
from speechtrt.stream.engine import BackpressureError, StreamConfig, StreamingEngine

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
    _prev: int = -1
    _outputs: int = 0
    _emitted: list = field(default_factory=list)

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
            words = words_of(self._emitted)
            if " ".join(w.word for w in words) != " ".join(ft.text.split()):
                words = []  # the adapter lost track of the engine: no word timings rather than wrong ones
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

    def _observe(self, ids: np.ndarray, valid: int) -> None:
        emitted, self._prev = emissions(ids[:valid], self._prev, self._outputs)
        self._emitted.extend(emitted)
        self._outputs += valid
        if self.on_partial is not None:
            self.on_partial(Partial(asr_decode(t for t, _ in self._emitted), self._outputs * OUTPUT_S))


class StreamingASR:
    """A streaming engine over one streaming model, started and shared by every connection."""

    sample_rate = FEATURES.sample_rate

    def __init__(self, name: str, model, config: StreamServeConfig = StreamServeConfig(), *, device: str = "cpu",
                 threads: int | None = None, idle_timeout_s: float = 60.0,
                 cache_dir: str | Path = "tmp/cache/stream/onnx", on_batch: Callable[[int], None] | None = None):
        self.name = name
        self.config = config
        chunk_frames = config.chunk_ms // 10
        self.backend = make_backend(config.backend, model, device=device, max_batch=config.max_batch,
                                    chunk_frames=chunk_frames, threads=threads, cache_dir=cache_dir)
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
        sid = self.engine.open(sample_rate=self.sample_rate)
        session = StreamSession(self, sid, on_partial)
        self._sessions[sid] = session
        return session

    def offline_text(self, samples: np.ndarray) -> str:
        """The same model's offline transcript of a whole utterance (what a stream's final equals)."""
        log_probs = self.backend.offline(log_mel(samples)[None])[0]
        return asr_decode(ctc_greedy(log_probs.argmax(-1).tolist()))

    def _observe(self, stream_ids, log_probs, valid_out) -> None:  # the engine's scheduler thread
        ids = log_probs.argmax(dim=-1).cpu().numpy()  # [B, chunk/4]
        for i, (sid, valid) in enumerate(zip(stream_ids, valid_out)):
            session = self._sessions.get(sid)
            if session is not None:
                try:
                    session._observe(ids[i], valid)
                except Exception:  # a listener must not break the engine's step
                    log.exception("partial listener of stream %s failed", sid)
        if self._on_batch is not None:
            self._on_batch(len(stream_ids))
