"""The streaming ASR engine: many concurrent streams, one batched model step at a time, no lost audio.

Life of a stream::

    sid = engine.open()                 # takes a state slot, or raises CapacityError with the reason
    engine.push(sid, samples)           # any number of samples; blocks (or raises BackpressureError) when full
    engine.partial(sid)                 # transcript so far
    text = engine.finalize(sid)         # flushes the last partial chunk, returns the final transcript
    engine.cancel(sid)                  # or: drop the stream and free its slot

Contract:

* Every sample :meth:`StreamingEngine.push` accepts is processed. A push either accepts its samples or raises;
  a stream's buffer is bounded (``max_buffer_ms``), and a producer that outruns the model is blocked (or told so
  with :class:`BackpressureError`), never silently dropped. When every slot is taken, :meth:`open` refuses the new
  stream with a :class:`~speechtrt.errors.CapacityError` that says why.
* Producers only copy samples into the stream's bounded buffer. Each scheduler step cuts one chunk's sample
  window per stream and computes the log-mel frames of the whole batch at once (on the backend's device) with the
  offline front end's framing; each stream's model state lives in a preallocated slot; the final partial chunk is
  padded (the model is causal, so frames after the end change no valid output); CTC greedy decoding is incremental.
  The final transcript therefore equals the offline transcript of the same backend on the same audio.
* Bad input (NaN/Inf, wrong dtype or rate, empty chunk, push after finalize, unknown id) raises an
  :class:`~speechtrt.errors.InputError` for that call only; the stream keeps its accepted audio and every other
  stream keeps going. A failure inside a batched step fails the streams of that batch, not the engine.
* A stream that receives nothing for ``idle_timeout_s`` is finalized on its own (its audio is processed) and its
  slot freed.

Threading: one scheduler thread (:meth:`start`) forms batches; producers call :meth:`push` from any thread. Tests may
drive the engine without the thread through :meth:`run_step` / :meth:`run_until_idle`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch

from speechtrt.errors import CapacityError, InputError, SpeechTRTError
from speechtrt.models.audio import FEATURES
from speechtrt.models.text import BLANK, asr_decode
from speechtrt.stream.backends import STATE_BATCH_DIMS, STATE_NAMES, StepBackend
from speechtrt.stream.scheduler import decide
from speechtrt.stream.slots import ChunkFeaturizer, SampleBuffer, StreamSlotPool


class BackpressureError(CapacityError):
    """A stream's buffer is full: nothing (or only ``accepted`` samples) of the push was taken; push the rest later."""

    def __init__(self, message: str, accepted: int = 0):
        super().__init__(message)
        self.accepted = accepted


class UnknownStreamError(InputError):
    """No stream with this id was ever opened (or it was closed long ago)."""


class StreamClosedError(InputError):
    """The stream was finalized, cancelled or timed out: it takes no more audio."""


class StreamFailedError(SpeechTRTError):
    """The model step that carried this stream failed; the message holds the cause."""


class StreamStatus(str, Enum):
    OPEN = "open"
    FINALIZING = "finalizing"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class StreamConfig:
    """Engine limits. ``chunk_frames`` is the model chunk (10 ms frames, a multiple of 4: the front end's stride)."""

    max_streams: int = 64
    max_batch: int = 64
    max_wait_ms: float = 10.0
    chunk_frames: int = 16
    max_buffer_ms: float = 2000.0
    idle_timeout_s: float = 30.0
    sample_rate: int = FEATURES.sample_rate
    metrics_window: int = 1_000_000  # latency / batch samples kept (most recent)

    def __post_init__(self):
        if self.chunk_frames <= 0 or self.chunk_frames % 4:
            raise InputError(f"chunk of {self.chunk_frames} frames: the model needs a positive multiple of 4 frames "
                             f"(40 ms); use --chunk-ms 160 or another multiple of 40")
        if self.max_streams < 1 or self.max_batch < 1:
            raise InputError(f"max_streams={self.max_streams} and max_batch={self.max_batch} must both be >= 1")
        if self.max_wait_ms < 0 or self.idle_timeout_s <= 0:
            raise InputError("max_wait_ms must be >= 0 and idle_timeout_s > 0")

    @property
    def chunk_ms(self) -> float:
        return self.chunk_frames * FEATURES.hop * 1000.0 / FEATURES.sample_rate

    @property
    def buffer_frames(self) -> int:
        """Frames a stream may hold unprocessed: ``max_buffer_ms`` rounded up to whole chunks (at least one)."""
        chunks = max(1, math.ceil(self.max_buffer_ms / self.chunk_ms))
        return chunks * self.chunk_frames


@dataclass
class EngineMetrics:
    """Counters and samples the engine records; the load generator turns them into a report."""

    window: int = 1_000_000  # samples kept per series (the most recent); bounds memory of a long-running engine
    latencies_s: deque = field(init=False)  # per model chunk: chunk arrival -> partial updated, seconds
    batch_sizes: deque = field(init=False)
    step_seconds: deque = field(init=False)
    chunks_processed: int = 0
    frames_decoded: int = 0  # feature frames (10 ms) that went through the model
    streams_opened: int = 0
    streams_finished: int = 0
    streams_failed: int = 0
    refused_opens: int = 0
    backpressure_events: int = 0
    timed_out: int = 0
    rejected_pushes: int = 0

    def __post_init__(self):
        self.latencies_s = deque(maxlen=self.window)
        self.batch_sizes = deque(maxlen=self.window)
        self.step_seconds = deque(maxlen=self.window)


@dataclass(frozen=True)
class FinalTranscript:
    """What a finished stream produced: text, the CTC token ids behind it, and the feature frames it decoded
    (equal to the frames its accepted audio makes: nothing is dropped)."""

    stream_id: str
    text: str
    token_ids: tuple[int, ...]
    frames: int
    timed_out: bool = False


class _Stream:
    __slots__ = ("id", "slot", "buffer", "status", "arrivals", "prev_id", "chars", "last_activity", "in_flight",
                 "future", "timed_out", "valid_out", "tokens", "frames_decoded")

    def __init__(self, stream_id: str, slot: int, buffer: SampleBuffer, now: float):
        self.id = stream_id
        self.slot = slot
        self.buffer = buffer
        self.status = StreamStatus.OPEN
        self.arrivals: deque[float] = deque()  # arrival time of each chunk not yet processed
        self.prev_id = -1  # CTC: last argmax id, carried across chunks
        self.chars: list[str] = []
        self.tokens: list[int] = []
        self.frames_decoded = 0
        self.last_activity = now
        self.in_flight = False
        self.future: Future | None = None
        self.timed_out = False
        self.valid_out = 0


def validate_samples(stream_id: str, samples, sample_rate: int | None, expected_rate: int) -> np.ndarray:
    """Check one pushed chunk; returns mono float32 samples [N] or raises :class:`InputError` saying what to fix."""
    if sample_rate is not None and sample_rate != expected_rate:
        raise InputError(f"stream {stream_id!r}: audio at {sample_rate} Hz, the engine runs at {expected_rate} Hz; "
                         "resample before pushing (speechtrt.models.audio.resample)")
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    if not isinstance(samples, np.ndarray):
        raise InputError(f"stream {stream_id!r}: samples must be a NumPy float32 array, got {type(samples).__name__}")
    if samples.dtype not in (np.float32, np.float64):
        raise InputError(f"stream {stream_id!r}: samples have dtype {samples.dtype}; push float32 in [-1, 1] "
                         "(16-bit PCM: divide by 32768)")
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1:
        raise InputError(f"stream {stream_id!r}: samples have shape {samples.shape}; push mono audio [N]")
    if samples.shape[0] == 0:
        raise InputError(f"stream {stream_id!r}: empty chunk; push at least one sample (finalize() ends a stream)")
    finite = np.isfinite(samples)
    if not finite.all():
        raise InputError(f"stream {stream_id!r}: chunk has {int((~finite).sum())} NaN/Inf samples of "
                         f"{samples.shape[0]}; nothing was accepted, clean the audio and push again")
    return np.ascontiguousarray(samples, dtype=np.float32)


class _Tombstones:
    """Why recently closed streams closed, in a fixed ring (no per-stream growth, no table churn).

    Only error paths look ids up, so a linear scan over ``size`` entries is cheap enough.
    """

    def __init__(self, size: int):
        self._ids: list[str | None] = [None] * size
        self._why: list[str | None] = [None] * size
        self._next = 0

    def add(self, stream_id: str, why: str) -> None:
        self._ids[self._next] = stream_id
        self._why[self._next] = why
        self._next = (self._next + 1) % len(self._ids)

    def get(self, stream_id: str) -> str | None:
        n = len(self._ids)
        for k in range(1, n + 1):  # newest first
            i = (self._next - k) % n
            if self._ids[i] == stream_id:
                return self._why[i]
        return None

    def forget(self, stream_id: str) -> None:
        for i, sid in enumerate(self._ids):
            if sid == stream_id:
                self._ids[i] = self._why[i] = None

    def __len__(self) -> int:
        return sum(sid is not None for sid in self._ids)


class StreamingEngine:
    """Concurrent streams over one :class:`~speechtrt.stream.backends.StepBackend`, batched across streams."""

    TOMBSTONES = 1024  # recently closed ids remembered for precise error messages (bounded)

    def __init__(self, backend: StepBackend, config: StreamConfig | None = None, clock=time.monotonic):
        self.backend = backend
        self.config = config = config or StreamConfig()
        self.clock = clock
        self.pool = StreamSlotPool(config.max_streams, backend.zero_state(1), STATE_BATCH_DIMS,
                                   max_frames=config.buffer_frames, device=backend.device,
                                   dtype=backend.state_dtype)
        self.metrics = EngineMetrics(window=config.metrics_window)
        self._cond = threading.Condition(threading.RLock())
        self._streams: dict[str, _Stream] = {}
        self._ready: OrderedDict[str, None] = OrderedDict()  # FIFO of streams holding a chunk, not in flight
        self._closed = _Tombstones(self.TOMBSTONES)  # recently closed id -> why
        self._in_flight = 0
        self._next_id = 0
        self.featurizer = ChunkFeaturizer(config.chunk_frames, backend.device)
        # host staging for one batch of chunk windows: [max_batch, (chunk-1)*hop + n_fft] samples
        self._staging = np.zeros((config.max_batch, self.featurizer.window_samples), dtype=np.float32)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_reap = clock()
        self.step_observer = None  # optional f(stream_ids, log_probs [B, chunk/4, V], valid_out list), no lock held

    # ------------------------------------------------------------------ stream API

    def open(self, stream_id: str | None = None, sample_rate: int | None = None) -> str:
        """Open a stream and give it a state slot. Raises :class:`CapacityError` when every slot is taken."""
        if sample_rate is not None and sample_rate != self.config.sample_rate:
            raise InputError(f"cannot open a stream at {sample_rate} Hz: the engine runs at "
                             f"{self.config.sample_rate} Hz; resample the audio first")
        with self._cond:
            if self._stopping:
                raise CapacityError("the engine is shutting down and accepts no new streams")
            if stream_id is None:
                stream_id = f"s{self._next_id}"
                self._next_id += 1
            elif stream_id in self._streams:
                raise InputError(f"stream id {stream_id!r} is already open; pick another id")
            else:
                self._closed.forget(stream_id)  # a reused id starts a new life
            slot = self.pool.acquire()
            if slot is None:
                self.metrics.refused_opens += 1
                raise CapacityError(
                    f"stream {stream_id!r} refused: all {self.pool.capacity} stream slots are in use "
                    f"({len(self._streams)} open streams); retry when one finishes, or raise max_streams")
            buf = self.pool.sample_buffer(slot)
            self._streams[stream_id] = _Stream(stream_id, slot, buf, self.clock())
            self.metrics.streams_opened += 1
            return stream_id

    def push(self, stream_id: str, samples, sample_rate: int | None = None, block: bool = True,
             timeout: float | None = None) -> int:
        """Append samples (mono float32 at the engine's rate, any length) to a stream; returns samples accepted.

        When the stream's buffer is full: with ``block`` wait for room (up to ``timeout`` seconds, then raise
        :class:`BackpressureError` whose ``accepted`` says how many samples went in); without ``block`` accept all
        or nothing and raise :class:`BackpressureError` at once.
        """
        arrival = self.clock()
        try:
            x = validate_samples(stream_id, samples, sample_rate, self.config.sample_rate)
        except InputError:
            with self._cond:
                self.metrics.rejected_pushes += 1
            raise
        deadline = None if timeout is None else arrival + timeout
        chunk = self.config.chunk_frames
        with self._cond:
            s = self._open_stream(stream_id)
            buf = s.buffer
            if not block and x.shape[0] > buf.samples_that_fit():
                self.metrics.backpressure_events += 1
                raise BackpressureError(
                    f"stream {stream_id!r}: buffer holds {buf.count} of {buf.capacity} samples "
                    f"({self.config.max_buffer_ms:.0f} ms limit); nothing was accepted, push again shortly", 0)
            pos, n = 0, x.shape[0]
            while pos < n:
                room = buf.samples_that_fit()
                if room == 0:
                    self.metrics.backpressure_events += 1
                    wait = None if deadline is None else deadline - self.clock()
                    if wait is not None and wait <= 0:
                        raise BackpressureError(
                            f"stream {stream_id!r}: buffer full for {timeout:.3f} s; {pos} of {n} samples were "
                            "accepted, push the rest again", pos)
                    s.last_activity = self.clock()
                    self._cond.wait(wait if wait is not None else 0.5)
                    if self._streams.get(stream_id) is not s or s.status is not StreamStatus.OPEN:
                        raise StreamClosedError(f"stream {stream_id!r} was {s.status.value} while this push waited "
                                                f"for room; {pos} of {n} samples had been accepted")
                    continue
                piece = x[pos: pos + room]
                before = buf.total_frames // chunk
                buf.append(piece)
                pos += piece.shape[0]
                for _ in range(buf.total_frames // chunk - before):
                    s.arrivals.append(arrival)
                self._mark_ready(s)
            s.last_activity = self.clock()
            return n

    def partial(self, stream_id: str) -> str:
        """The stream's transcript so far (grows as chunks are processed; greedy CTC never revises it)."""
        with self._cond:
            return "".join(self._live_stream(stream_id).chars)

    def finalize_async(self, stream_id: str) -> Future:
        """End the stream's audio; the future resolves to a :class:`FinalTranscript` once all audio is decoded."""
        with self._cond:
            s = self._open_stream(stream_id)
            s.status = StreamStatus.FINALIZING
            s.future = Future()
            s.last_activity = self.clock()
            if s.buffer.total_frames % self.config.chunk_frames:
                s.arrivals.append(self.clock())  # the zero-padded last chunk arrives now
            fut = s.future
            done = None
            if s.buffer.frames_ready == 0 and not s.in_flight:
                done = self._finish(s)
            else:
                self._mark_ready(s)
        if done:
            done()
        return fut

    def finalize(self, stream_id: str, timeout: float | None = None) -> str:
        """End the stream and wait for its final transcript (needs the scheduler thread, or another thread that
        drives :meth:`run_step`)."""
        return self.finalize_async(stream_id).result(timeout).text

    def cancel(self, stream_id: str) -> None:
        """Drop a stream and its unprocessed audio; its slot is freed (after the step it is in, if any)."""
        with self._cond:
            s = self._live_stream(stream_id)
            s.status = StreamStatus.CANCELLED
            self._ready.pop(stream_id, None)
            fut = s.future
            if not s.in_flight:
                self._release(s, "cancelled")
        if fut is not None and not fut.done():
            fut.set_exception(StreamClosedError(f"stream {stream_id!r} was cancelled before its final transcript"))

    def status(self, stream_id: str) -> StreamStatus:
        with self._cond:
            return self._live_stream(stream_id).status

    @property
    def open_streams(self) -> int:
        with self._cond:
            return len(self._streams)

    def warmup(self, batch_sizes: tuple[int, ...] | None = None) -> None:
        """Run the backend once per batch size on zero inputs (first-call allocations, kernel selection, CUDA
        graph capture) without touching any stream slot."""
        c = self.config
        # every power-of-two bucket up to max_batch (the CUDA graph buckets), and max_batch itself
        sizes = batch_sizes or tuple(sorted({*(2 ** k for k in range(c.max_batch.bit_length())), c.max_batch}))
        for b in sizes:
            feats = self.featurizer(torch.zeros(b, self.featurizer.window_samples, device=self.backend.device))
            self.backend.step({"features": feats, **self.backend.zero_state(b)})

    # ------------------------------------------------------------------ scheduling

    def start(self) -> "StreamingEngine":
        """Run the scheduler on a background thread."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="speechtrt-stream-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the scheduler thread (open streams stay; :meth:`close` also cancels them)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._stopping = False

    def close(self) -> None:
        """Stop the scheduler and cancel every open stream."""
        self.stop()
        for sid in list(self._streams):
            self.cancel(sid)

    def __enter__(self) -> "StreamingEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def run_step(self, force: bool = True) -> int:
        """Run at most one batch now from the calling thread; returns its size (0: nothing was ready).

        ``force`` ignores ``max_wait_ms`` (a synchronous driver has nothing to wait for).
        """
        with self._cond:
            self._reap(self.clock())
            n = len(self._ready)
            take = min(n, self.config.max_batch) if force else self._decision(self.clock()).take
            if take == 0:
                return 0
            batch = self._gather(take)
        self._run_batch(batch)
        return len(batch)

    def run_until_idle(self) -> int:
        """Run batches until no stream holds a full chunk (or a finalizing remainder); returns batches run."""
        steps = 0
        while self.run_step(force=True):
            steps += 1
        return steps

    def _loop(self) -> None:
        reap_every = min(1.0, self.config.idle_timeout_s / 4)
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = self.clock()
                if now - self._last_reap >= reap_every:
                    self._reap(now)
                d = self._decision(now)
                if d.take == 0:
                    self._cond.wait(min(reap_every, d.wait_s) if d.wait_s is not None else reap_every)
                    continue
                batch = self._gather(d.take)
            self._run_batch(batch)

    def _decision(self, now: float):
        n_ready = len(self._ready)
        if n_ready == 0:
            return decide(0, 0.0, 0, self.config.max_batch, self.config.max_wait_ms / 1000)
        first = self._streams[next(iter(self._ready))]
        age = now - first.arrivals[0] if first.arrivals else 0.0
        n_live = len(self._streams) - self._in_flight
        return decide(n_ready, age, n_live, self.config.max_batch, self.config.max_wait_ms / 1000)

    def _gather(self, take: int) -> list[_Stream]:
        """Under the lock: move one chunk of each of the first ``take`` ready streams into the staging buffer."""
        chunk = self.config.chunk_frames
        batch = []
        for i in range(take):
            sid, _ = self._ready.popitem(last=False)
            s = self._streams[sid]
            got = s.buffer.take(chunk, self._staging[i])
            s.frames_decoded += got
            self.metrics.frames_decoded += got
            s.valid_out = math.ceil(got / 4)  # a full chunk gives chunk/4 outputs; a padded last chunk fewer
            s.in_flight = True
            batch.append(s)
        self._in_flight += len(batch)
        self._cond.notify_all()  # room was freed in these buffers
        return batch

    def _run_batch(self, batch: list[_Stream]) -> None:
        b = len(batch)
        device = self.backend.device
        t0 = time.perf_counter()
        error: Exception | None = None
        ids = None
        try:
            feats = self.featurizer(torch.from_numpy(self._staging[:b]).to(device))  # [B, chunk, n_mels]
            slots = torch.tensor([s.slot for s in batch], dtype=torch.long, device=device)
            state = self.pool.gather(slots)
            out = self.backend.step({"features": feats, **state})
            ids = out["log_probs"].argmax(dim=-1).cpu().numpy()  # [B, chunk/4]
            if self.step_observer is not None:
                self.step_observer([s.id for s in batch], out["log_probs"], [s.valid_out for s in batch])
            self.pool.scatter(slots, {k: out[f"{k}_out"] for k in STATE_NAMES})
        except Exception as exc:  # a failed step fails its streams, not the engine
            error = exc
        step_s = time.perf_counter() - t0
        resolutions = []
        with self._cond:
            now = self.clock()
            self._in_flight -= b
            m = self.metrics
            m.batch_sizes.append(b)
            m.step_seconds.append(step_s)
            for i, s in enumerate(batch):
                s.in_flight = False
                if error is not None:
                    s.status = StreamStatus.FAILED
                    m.streams_failed += 1
                    fut = s.future
                    self._release(s, f"failed in a batched step: {error.__class__.__name__}: {error}")
                    if fut is not None:
                        resolutions.append(lambda f=fut, sid=s.id, e=error: f.set_exception(
                            StreamFailedError(f"stream {sid!r} failed: {e.__class__.__name__}: {e}")))
                    continue
                prev, chars, tokens = s.prev_id, s.chars, s.tokens
                for tok in ids[i, : s.valid_out].tolist():
                    if tok != prev and tok != BLANK:
                        tokens.append(tok)
                        chars.append(asr_decode((tok,)))
                    prev = tok
                s.prev_id = prev
                m.chunks_processed += 1
                if s.arrivals:
                    m.latencies_s.append(now - s.arrivals.popleft())
                if s.status is StreamStatus.CANCELLED:
                    self._release(s, "cancelled")
                elif s.status is StreamStatus.FINALIZING and s.buffer.frames_ready == 0:
                    resolutions.append(self._finish(s))
                else:
                    self._mark_ready(s)
            self._cond.notify_all()
        for r in resolutions:
            r()

    # ------------------------------------------------------------------ internals (called under the lock)

    def _mark_ready(self, s: _Stream) -> None:
        if s.in_flight or s.id in self._ready:
            return
        ready = s.buffer.frames_ready
        if ready >= self.config.chunk_frames or (s.status is StreamStatus.FINALIZING and ready):
            self._ready[s.id] = None
            self._cond.notify_all()

    def _finish(self, s: _Stream):
        """Mark a finalized stream done and free its slot; returns the call that resolves its future."""
        s.status = StreamStatus.DONE
        result = FinalTranscript(s.id, "".join(s.chars), tuple(s.tokens), s.frames_decoded, s.timed_out)
        self.metrics.streams_finished += 1
        self._release(s, "timed out (idle); its audio was processed" if s.timed_out else "finalized")
        fut = s.future
        return lambda: fut.set_result(result) if fut is not None and not fut.done() else None

    def _release(self, s: _Stream, why: str) -> None:
        self._ready.pop(s.id, None)
        if self._streams.pop(s.id, None) is not None:
            s.buffer.reset()
            self.pool.release(s.slot)
        self._closed.add(s.id, why)
        self._cond.notify_all()

    def _reap(self, now: float) -> None:
        """Finalize streams idle for longer than ``idle_timeout_s`` (their audio is still decoded)."""
        self._last_reap = now
        limit = self.config.idle_timeout_s
        resolutions = []
        for s in list(self._streams.values()):
            if s.status is StreamStatus.OPEN and not s.in_flight and now - s.last_activity > limit:
                s.status = StreamStatus.FINALIZING
                s.timed_out = True
                self.metrics.timed_out += 1
                if s.buffer.total_frames % self.config.chunk_frames:
                    s.arrivals.append(now)
                if s.buffer.frames_ready == 0:
                    resolutions.append(self._finish(s))
                else:
                    self._mark_ready(s)
        for r in resolutions:
            r()

    def _live_stream(self, stream_id: str) -> _Stream:
        s = self._streams.get(stream_id)
        if s is not None:
            return s
        if not isinstance(stream_id, str):
            raise UnknownStreamError(f"stream ids are strings, got {type(stream_id).__name__} {stream_id!r}")
        why = self._closed.get(stream_id)
        if why is not None:
            raise StreamClosedError(f"stream {stream_id!r} is closed ({why}); open a new stream")
        raise UnknownStreamError(f"unknown stream id {stream_id!r}: open() it first")

    def _open_stream(self, stream_id: str) -> _Stream:
        s = self._live_stream(stream_id)
        if s.status is not StreamStatus.OPEN:
            raise StreamClosedError(f"stream {stream_id!r} is {s.status.value}: it takes no more audio; "
                                    "open a new stream")
        return s
