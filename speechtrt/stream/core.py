"""The streaming core: many streams, one batched model step at a time, driven by its caller (no threads, no locks).

The shape is sherpa-onnx's (``create_stream → accept_waveform → is_ready → decode_streams → get_result``)::

    core = StreamCore(StepModel.open(StepConfig(...), model), StreamConfig(...))
    sid = core.open()                    # takes a state slot, or raises CapacityError with the reason
    core.accept(sid, samples)            # samples accepted (as many as the stream's bounded buffer holds)
    core.ready_streams()                 # streams holding a full chunk, oldest first
    core.decode_ready(ids)               # one batched step: one chunk of each of those streams
    core.result(sid)                     # text, token ids, per-token times (s), frames decoded, final flag
    core.finalize(sid)                   # end of input: later decode_ready calls decode the rest
    core.close(sid)                      # forget a finished stream (cancel() drops a live one)

Contract:

* Accepted audio is decoded: ``accept`` takes what fits and says how much; nothing it took is ever dropped. When every
  slot is taken, ``open`` refuses with a :class:`~speechtrt.errors.CapacityError` that says why.
* Each step cuts one chunk's sample window per stream and computes the log-mel frames of the whole batch at once with
  the offline front end's framing; state lives in preallocated slots; the last partial chunk is zero-padded (the model
  is causal, so padding changes no valid output); CTC is greedy and incremental. The final transcript therefore equals
  the offline transcript of the same backend on the same audio.
* Bad input (NaN/Inf, wrong dtype, rate or shape, empty chunk, audio after finalize, unknown id) raises an
  :class:`~speechtrt.errors.InputError` for that call only. A failing step fails the streams it carried (status
  ``failed``, slot freed), not the core.
* ``reap(now)`` finalizes streams idle for ``idle_timeout_s`` (their audio is still decoded) and forgets finished
  records nobody closed within that time.

A threaded caller splits :meth:`decode_ready` into :meth:`gather` (under its lock), :meth:`compute` (the model, no
lock) and :meth:`commit` (under its lock) — see :mod:`speechtrt.stream.engine`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Sequence

import numpy as np
import torch

from speechtrt.errors import CapacityError, InputError
from speechtrt.models.audio import FEATURES
from speechtrt.stream.slots import ChunkFeaturizer, StreamSlotPool, validate_samples
from speechtrt.stream.step import OUTPUT_SHIFT_S, STATE_BATCH_DIMS, STATE_NAMES, SUBSAMPLING, StepModel
from speechtrt.stream.table import Stream, StreamStatus, StreamTable


@dataclass(frozen=True)
class StreamConfig:
    """Limits. ``chunk_frames`` is the model chunk (10 ms frames, a multiple of 4: the front end's stride)."""

    max_streams: int = 64
    max_batch: int = 64
    max_wait_ms: float = 10.0
    chunk_frames: int = 16
    max_buffer_ms: float = 2000.0
    idle_timeout_s: float = 30.0
    sample_rate: int = FEATURES.sample_rate
    metrics_window: int = 1_000_000  # latency / batch samples kept (most recent)

    def __post_init__(self):
        if self.chunk_frames <= 0 or self.chunk_frames % SUBSAMPLING:
            raise InputError(f"chunk of {self.chunk_frames} frames: the model needs a positive multiple of 4 frames "
                             f"(40 ms); use --chunk-ms 160 or another multiple of 40")
        if self.max_streams < 1 or self.max_batch < 1:
            raise InputError(f"max_streams={self.max_streams} and max_batch={self.max_batch} must both be >= 1")
        if self.max_wait_ms < 0 or self.idle_timeout_s <= 0 or self.max_buffer_ms <= 0:
            raise InputError("max_wait_ms must be >= 0, idle_timeout_s > 0 and max_buffer_ms > 0")

    @property
    def chunk_ms(self) -> float:
        return self.chunk_frames * FEATURES.hop * 1000.0 / FEATURES.sample_rate

    @property
    def buffer_frames(self) -> int:
        """Frames a stream may hold unprocessed: ``max_buffer_ms`` rounded up to whole chunks (at least one)."""
        return max(1, math.ceil(self.max_buffer_ms / self.chunk_ms)) * self.chunk_frames


@dataclass
class StreamMetrics:
    """Counters and samples of the core (and the engine over it); the load generator turns them into a report."""

    window: int = 1_000_000  # samples kept per series (the most recent); bounds memory of a long-running core
    latencies_s: deque = field(init=False)  # per model chunk: chunk arrival -> partial updated, seconds
    batch_sizes: deque = field(init=False)
    step_seconds: deque = field(init=False)
    chunks_processed: int = 0
    frames_decoded: int = 0  # feature frames (10 ms) that went through the model
    streams_opened: int = 0
    streams_finished: int = 0
    streams_failed: int = 0
    refused_opens: int = 0
    backpressure_events: int = 0  # counted by the engine (the core never blocks)
    timed_out: int = 0
    rejected_pushes: int = 0

    def __post_init__(self):
        self.latencies_s = deque(maxlen=self.window)
        self.batch_sizes = deque(maxlen=self.window)
        self.step_seconds = deque(maxlen=self.window)


@dataclass(frozen=True)
class StreamResult:
    """A stream's transcript so far (``final``: all its audio is decoded). ``timestamps_s[k]`` is where token ``k``
    was emitted, in seconds of the stream's audio; ``frames`` the feature frames decoded (at the end: exactly the
    frames its accepted audio makes)."""

    stream_id: str
    text: str
    token_ids: tuple[int, ...]
    timestamps_s: tuple[float, ...]
    frames: int
    final: bool
    timed_out: bool = False
    status: str = "open"
    error: str | None = None


@dataclass(frozen=True)
class StepOutcome:
    """What one batched step did: the streams it carried, those whose transcript grew, those it finished or failed."""

    stream_ids: tuple[str, ...]
    updated: tuple[str, ...]
    finished: tuple[str, ...]
    failed: tuple[str, ...]
    seconds: float
    error: str | None = None


@dataclass
class _Batch:
    streams: list[Stream]
    ids: np.ndarray | None = None  # argmax ids [B, chunk/4] on the host
    error: Exception | None = None
    seconds: float = 0.0


class StreamCore:
    """Concurrent streams over one :class:`~speechtrt.stream.step.StepModel`, batched across streams by the caller."""

    def __init__(self, model: StepModel, config: StreamConfig | None = None, clock=time.monotonic):
        self.model = model
        self.config = config = config or StreamConfig()
        self.clock = clock
        self.pool = StreamSlotPool(config.max_streams, model.zero_state(1), STATE_BATCH_DIMS,
                                   max_frames=config.buffer_frames, device=model.device, dtype=model.state_dtype)
        self.table = StreamTable(self.pool)
        self.metrics = StreamMetrics(window=config.metrics_window)
        self.featurizer = ChunkFeaturizer(config.chunk_frames, model.device)
        # host staging for one batch of chunk windows: [max_batch, (chunk-1)*hop + n_fft] samples
        self._staging = np.zeros((config.max_batch, self.featurizer.window_samples), dtype=np.float32)
        self._ready: OrderedDict[str, None] = OrderedDict()  # streams holding a chunk, not in flight; FIFO
        self.in_flight = 0  # streams in the gathered, uncommitted batch
        self.step_observer = None  # optional f(stream_ids, log_probs [B, chunk/4, V], valid_out list)

    # ------------------------------------------------------------------ streams

    def open(self, stream_id: str | None = None, sample_rate: int | None = None) -> str:
        """Open a stream and give it a state slot; returns its id. :class:`CapacityError` when all are taken."""
        if sample_rate is not None and sample_rate != self.config.sample_rate:
            raise InputError(f"cannot open a stream at {sample_rate} Hz: the engine runs at "
                             f"{self.config.sample_rate} Hz; resample the audio first")
        try:
            s = self.table.open(stream_id, self.clock())
        except CapacityError:
            self.metrics.refused_opens += 1
            raise
        self.metrics.streams_opened += 1
        return s.id

    def accept(self, stream_id: str, samples, sample_rate: int | None = None, now: float | None = None) -> int:
        """Check and append audio (mono float32 at the core's rate); returns samples accepted (fewer than given when
        the stream's buffer fills: push the rest after a :meth:`decode_ready`)."""
        try:
            x = validate_samples(stream_id, samples, sample_rate, self.config.sample_rate)
        except InputError:
            self.metrics.rejected_pushes += 1
            raise
        return self.append(stream_id, x, now)

    def append(self, stream_id: str, x: np.ndarray, now: float | None = None) -> int:
        """:meth:`accept` for samples already checked by :func:`validate_samples`. ``now`` is the arrival time the
        chunks this completes are measured from (default: the clock)."""
        s = self.table.get_open(stream_id)
        now = self.clock() if now is None else now
        buf, chunk = s.buffer, self.config.chunk_frames
        piece = x[: buf.samples_that_fit()]
        if piece.shape[0]:
            before = buf.total_frames // chunk
            buf.append(piece)
            s.arrivals.extend([now] * (buf.total_frames // chunk - before))
            self._mark_ready(s)
        s.last_activity = self.clock()
        return piece.shape[0]

    def room(self, stream_id: str) -> int:
        """Samples the stream's buffer takes now."""
        return self.table.get_open(stream_id).buffer.samples_that_fit()

    def finalize(self, stream_id: str) -> bool:
        """End the stream's input. Returns True when it is final at once (nothing left to decode)."""
        s = self.table.get_open(stream_id)
        now = self.clock()
        s.status = StreamStatus.FINALIZING
        s.last_activity = now
        return self._flush(s, now)

    def cancel(self, stream_id: str) -> None:
        """Drop a live stream and its undecoded audio; its slot is freed (after the step it is in, if any)."""
        s = self.table.get(stream_id)
        self._ready.pop(stream_id, None)
        if s.in_flight:
            s.status = StreamStatus.CANCELLED  # commit() frees it
        else:
            self.table.close(s, "cancelled")

    def close(self, stream_id: str, why: str | None = None) -> None:
        """Forget a stream: a finished one is gone, a live one is cancelled."""
        s = self.table.get(stream_id)
        if s.status in (StreamStatus.OPEN, StreamStatus.FINALIZING) or s.in_flight:
            self.cancel(stream_id)
        else:
            self.table.close(s, why or _why_closed(s))

    def status(self, stream_id: str) -> StreamStatus:
        return self.table.get(stream_id).status

    def result(self, stream_id: str) -> StreamResult:
        """The stream's transcript so far (final once its status is done); greedy CTC never revises it."""
        s = self.table.get(stream_id)
        ctc = s.ctc
        times = tuple(round(f * OUTPUT_SHIFT_S, 3) for f in ctc.token_frames)  # output frame -> seconds
        return StreamResult(s.id, ctc.text, tuple(ctc.tokens), times, s.frames_decoded,
                            s.status is StreamStatus.DONE, s.timed_out, s.status.value, s.error)

    def partial(self, stream_id: str) -> str:
        """The text so far (cheap: no result record)."""
        return self.table.get(stream_id).ctc.text

    def reap(self, now: float | None = None) -> list[str]:
        """Finalize streams idle longer than ``idle_timeout_s`` (their audio is still decoded) and forget finished
        ones nobody closed within that time; returns the ids that timed out."""
        now = self.clock() if now is None else now
        limit = self.config.idle_timeout_s
        timed_out = []
        for s in self.table:
            if now - s.last_activity <= limit or s.in_flight:
                continue
            if s.status is StreamStatus.OPEN:
                s.status = StreamStatus.FINALIZING
                s.timed_out = True
                self.metrics.timed_out += 1
                timed_out.append(s.id)
                self._flush(s, now)
            elif s.slot < 0:
                self.table.close(s, _why_closed(s) + ", unclaimed")
        return timed_out

    # ------------------------------------------------------------------ scheduling state

    def ready(self, stream_id: str) -> bool:
        return stream_id in self._ready

    def ready_streams(self, limit: int | None = None) -> list[str]:
        """Streams holding a full chunk (or a finalizing remainder), the longest-waiting first."""
        return list(self._ready if limit is None else islice(self._ready, limit))

    @property
    def n_ready(self) -> int:
        return len(self._ready)

    @property
    def live_streams(self) -> int:
        """Streams holding a slot (open or finalizing)."""
        return self.table.live

    def oldest_ready_age(self, now: float) -> float:
        """Seconds the oldest ready chunk has waited (0 when none is ready)."""
        if not self._ready:
            return 0.0
        first = self.table.streams[next(iter(self._ready))]
        return now - first.arrivals[0] if first.arrivals else 0.0

    # ------------------------------------------------------------------ decoding

    def decode_ready(self, stream_ids: Sequence[str] | None = None) -> StepOutcome:
        """One batched step over ``stream_ids`` (default: the first ``max_batch`` ready streams): one chunk each."""
        ids = self.ready_streams(self.config.max_batch) if stream_ids is None else stream_ids
        return self.commit(self.compute(self.gather(ids)))

    def gather(self, stream_ids: Sequence[str]) -> _Batch:
        """Move one chunk of each stream into the staging buffer (they must be ready; at most ``max_batch``)."""
        if self.in_flight:
            raise RuntimeError("a batch is already in flight: commit() it before gathering the next")
        if len(stream_ids) > self.config.max_batch:
            raise InputError(f"{len(stream_ids)} streams in one step; max_batch is {self.config.max_batch}")
        for sid in stream_ids:
            if sid not in self._ready:
                self.table.get(sid)  # unknown or closed: that error
                raise InputError(f"stream {sid!r} holds no full chunk (ready_streams() lists those that do)")
        chunk, batch = self.config.chunk_frames, []
        for i, sid in enumerate(stream_ids):
            del self._ready[sid]
            s = self.table.streams[sid]
            got = s.buffer.take(chunk, self._staging[i])
            s.frames_decoded += got
            self.metrics.frames_decoded += got
            s.valid_out = math.ceil(got / SUBSAMPLING)  # a full chunk gives chunk/4 outputs; a padded last one fewer
            s.in_flight = True
            batch.append(s)
        self.in_flight = len(batch)
        return _Batch(batch)

    def compute(self, batch: _Batch) -> _Batch:
        """Run the model on a gathered batch (features, state gather, step, argmax, state scatter). Touches only the
        staging buffer and the batch's own slots, so producers may append meanwhile. Never raises: an error is kept
        for :meth:`commit`."""
        b, device = len(batch.streams), self.model.device
        t0 = time.perf_counter()
        try:
            if b:
                feats = self.featurizer(torch.from_numpy(self._staging[:b]).to(device))  # [B, chunk, n_mels]
                slots = torch.tensor([s.slot for s in batch.streams], dtype=torch.long, device=device)
                out = self.model.step({"features": feats, **self.pool.gather(slots)})
                batch.ids = out["log_probs"].argmax(dim=-1).cpu().numpy()  # [B, chunk/4]
                if self.step_observer is not None:
                    self.step_observer([s.id for s in batch.streams], out["log_probs"],
                                       [s.valid_out for s in batch.streams])
                self.pool.scatter(slots, {k: out[f"{k}_out"] for k in STATE_NAMES})
        except Exception as exc:  # a failed step fails its streams, not the core
            batch.error = exc
        batch.seconds = time.perf_counter() - t0
        return batch

    def commit(self, batch: _Batch) -> StepOutcome:
        """Extend each stream's transcript with its valid outputs; finish, fail or re-queue it."""
        now, m = self.clock(), self.metrics
        err = batch.error
        error = f"{err.__class__.__name__}: {err}" if err is not None else None
        updated, finished, failed = [], [], []
        self.in_flight = 0
        if batch.streams:
            m.batch_sizes.append(len(batch.streams))
            m.step_seconds.append(batch.seconds)
        for i, s in enumerate(batch.streams):
            s.in_flight = False
            if s.status is StreamStatus.CANCELLED:
                self.table.close(s, "cancelled")
                continue
            if error is not None:
                s.error = f"failed in a batched step: {error}"
                self.table.end(s, StreamStatus.FAILED, now)
                m.streams_failed += 1
                failed.append(s.id)
                continue
            if s.ctc.push(batch.ids[i, : s.valid_out]):
                updated.append(s.id)
            m.chunks_processed += 1
            if s.arrivals:
                m.latencies_s.append(now - s.arrivals.popleft())
            if s.status is StreamStatus.FINALIZING and s.buffer.frames_ready == 0:
                self._done(s, now)
                finished.append(s.id)
            else:
                self._mark_ready(s)
        return StepOutcome(tuple(s.id for s in batch.streams), tuple(updated), tuple(finished), tuple(failed),
                           batch.seconds, error)

    def warmup(self, batch_sizes: Sequence[int] | None = None) -> None:
        """Run the model once per batch size on zero inputs (first-call allocations, kernel selection, CUDA graph
        capture) without touching any stream slot. Default: every power of two up to ``max_batch``, and it."""
        c = self.config
        sizes = batch_sizes or sorted({*(2 ** k for k in range(c.max_batch.bit_length())), c.max_batch})
        for b in sizes:
            feats = self.featurizer(torch.zeros(b, self.featurizer.window_samples, device=self.model.device))
            self.model.step({"features": feats, **self.model.zero_state(b)})

    # ------------------------------------------------------------------ internals

    def _mark_ready(self, s: Stream) -> None:
        if s.in_flight or s.id in self._ready:
            return
        ready = s.buffer.frames_ready
        if ready >= self.config.chunk_frames or (s.status is StreamStatus.FINALIZING and ready):
            self._ready[s.id] = None

    def _flush(self, s: Stream, now: float) -> bool:
        """A stream whose input ended: queue its remainder, or finish it when nothing is left. True: finished."""
        if s.buffer.total_frames % self.config.chunk_frames:
            s.arrivals.append(now)  # the zero-padded last chunk arrives now
        if s.buffer.frames_ready == 0 and not s.in_flight:
            self._done(s, now)
            return True
        self._mark_ready(s)
        return False

    def _done(self, s: Stream, now: float) -> None:
        self.metrics.streams_finished += 1
        self.table.end(s, StreamStatus.DONE, now)


def _why_closed(s: Stream) -> str:
    if s.status is StreamStatus.FAILED:
        return s.error or "failed"
    if s.status is StreamStatus.DONE:
        return "timed out (idle); its audio was processed" if s.timed_out else "finalized"
    return s.status.value
