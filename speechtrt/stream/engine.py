"""The threaded streaming engine: a scheduler thread, blocking pushes and futures over one :class:`StreamCore`.

Life of a stream::

    sid = engine.open(on_update=callback) # takes a state slot, or raises CapacityError with the reason
    engine.push(sid, samples)             # any number of samples; blocks (or raises BackpressureError) when full
    engine.partial(sid)                   # text so far; engine.result(sid): tokens and their times too
    text = engine.finalize(sid)           # flushes the last partial chunk, returns the final transcript
    engine.cancel(sid)                    # or: drop the stream and free its slot

Everything about streams — slots, buffers, batching one step, CTC, the final == offline guarantee, idle timeouts, bad
input failing one call — is the core's (:mod:`speechtrt.stream.core`). The engine adds what concurrent callers need:

* one lock around the core; the model step itself runs outside it, so producers keep pushing during a step;
* a scheduler thread (:meth:`start`) that asks :func:`~speechtrt.stream.batching.decide` when to run a batch;
* backpressure: a push into a full buffer blocks until the scheduler frees room (or, with ``block=False`` or a
  ``timeout``, raises :class:`BackpressureError` saying how much was accepted) — accepted audio is never dropped;
* a :class:`~concurrent.futures.Future` per finalize, and an optional per-stream ``on_update(StreamResult)``
  callback, called from the scheduler thread (no lock held) when the transcript grows and once at the end (with
  ``final`` True, or ``status`` ``failed``). An asyncio server passes
  ``lambda r: loop.call_soon_threadsafe(queue.put_nowait, r)``; a callback that raises is logged and ignored.

A finished stream is closed at once (its future holds the result); later calls on its id get "closed (finalized)".
Tests may drive the engine without the thread through :meth:`run_step` / :meth:`run_until_idle`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from typing import Callable

from speechtrt.errors import CapacityError, InputError
from speechtrt.stream.batching import decide
from speechtrt.stream.core import StepOutcome, StreamConfig, StreamCore, StreamMetrics, StreamResult
from speechtrt.stream.slots import validate_samples
from speechtrt.stream.step import StepModel
from speechtrt.stream.table import (StreamClosedError, StreamFailedError, StreamStatus, StreamTable,
                                    UnknownStreamError)

log = logging.getLogger("speechtrt.stream")

FinalTranscript = StreamResult
"""What ``finalize_async`` resolves to: the stream's final :class:`~speechtrt.stream.core.StreamResult`."""

__all__ = ["BackpressureError", "FinalTranscript", "StreamClosedError", "StreamConfig", "StreamFailedError",
           "StreamStatus", "StreamingEngine", "UnknownStreamError", "validate_samples"]


class BackpressureError(CapacityError):
    """A stream's buffer is full: nothing (or only ``accepted`` samples) of the push was taken; push the rest later."""

    def __init__(self, message: str, accepted: int = 0):
        super().__init__(message)
        self.accepted = accepted


class StreamingEngine:
    """Concurrent streams over one :class:`~speechtrt.stream.step.StepModel`, batched across streams."""

    TOMBSTONES = StreamTable.TOMBSTONES

    def __init__(self, model: StepModel, config: StreamConfig | None = None, clock=time.monotonic):
        self.core = StreamCore(model, config, clock)
        self.model = model
        self.config = self.core.config
        self.clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._futures: dict[str, Future] = {}
        self._listeners: dict[str, Callable[[StreamResult], None]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_reap = clock()

    @property
    def metrics(self) -> StreamMetrics:
        return self.core.metrics

    @property
    def pool(self):
        return self.core.pool

    @property
    def step_observer(self):
        return self.core.step_observer

    @step_observer.setter
    def step_observer(self, fn) -> None:
        """``fn(stream_ids, log_probs [B, chunk/4, V], valid_out list)`` after each step, no lock held."""
        self.core.step_observer = fn

    # ------------------------------------------------------------------ stream API

    def open(self, stream_id: str | None = None, sample_rate: int | None = None,
             on_update: Callable[[StreamResult], None] | None = None) -> str:
        """Open a stream and give it a state slot. Raises :class:`CapacityError` when every slot is taken."""
        with self._cond:
            if self._stopping:
                raise CapacityError("the engine is shutting down and accepts no new streams")
            sid = self.core.open(stream_id, sample_rate)
            if on_update is not None:
                self._listeners[sid] = on_update
            return sid

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
        n = x.shape[0]
        with self._cond:
            record = self.core.table.get_open(stream_id)
            buf = record.buffer
            if not block and n > buf.samples_that_fit():
                self.metrics.backpressure_events += 1
                raise BackpressureError(
                    f"stream {stream_id!r}: buffer holds {buf.count} of {buf.capacity} samples "
                    f"({self.config.max_buffer_ms:.0f} ms limit); nothing was accepted, push again shortly", 0)
            pos = 0
            while True:
                was_ready = self.core.ready(stream_id)
                pos += self.core.append(stream_id, x[pos:], arrival)  # also marks the stream active
                if not was_ready and self.core.ready(stream_id):
                    self._cond.notify_all()  # a new ready chunk: the scheduler may want to run a batch
                if pos >= n:
                    return n
                self.metrics.backpressure_events += 1
                wait = None if deadline is None else deadline - self.clock()
                if wait is not None and wait <= 0:
                    raise BackpressureError(f"stream {stream_id!r}: buffer full for {timeout:.3f} s; {pos} of {n} "
                                            "samples were accepted, push the rest again", pos)
                self._cond.wait(wait if wait is not None else 0.5)
                if self.core.table.streams.get(stream_id) is not record or record.status is not StreamStatus.OPEN:
                    raise StreamClosedError(f"stream {stream_id!r} was {record.status.value} while this push waited "
                                            f"for room; {pos} of {n} samples had been accepted")

    def partial(self, stream_id: str) -> str:
        """The stream's transcript so far (grows as chunks are processed; greedy CTC never revises it)."""
        with self._cond:
            return self.core.partial(stream_id)

    def result(self, stream_id: str) -> StreamResult:
        """The stream's transcript so far with token ids and per-token times (seconds)."""
        with self._cond:
            return self.core.result(stream_id)

    def finalize_async(self, stream_id: str) -> Future:
        """End the stream's audio; the future resolves to its final :class:`StreamResult` once all audio is decoded
        (or raises :class:`StreamFailedError` / :class:`StreamClosedError`)."""
        fut: Future = Future()
        with self._cond:
            if self.core.finalize(stream_id):
                todo = self._settle_finished(stream_id, fut)
            else:
                self._futures[stream_id] = fut
                todo = []
                self._cond.notify_all()
        _run(todo)
        return fut

    def finalize(self, stream_id: str, timeout: float | None = None) -> str:
        """End the stream and wait for its final transcript (needs the scheduler thread, or another thread that
        drives :meth:`run_step`)."""
        return self.finalize_async(stream_id).result(timeout).text

    def cancel(self, stream_id: str) -> None:
        """Drop a stream and its unprocessed audio; its slot is freed (after the step it is in, if any)."""
        with self._cond:
            self.core.cancel(stream_id)
            fut = self._futures.pop(stream_id, None)
            self._listeners.pop(stream_id, None)
            self._cond.notify_all()  # producers blocked on this stream give up
        if fut is not None and not fut.done():
            fut.set_exception(StreamClosedError(f"stream {stream_id!r} was cancelled before its final transcript"))

    def status(self, stream_id: str) -> StreamStatus:
        with self._cond:
            return self.core.status(stream_id)

    @property
    def open_streams(self) -> int:
        """Streams holding a slot (open, or finalizing with audio still to decode)."""
        with self._cond:
            return self.core.live_streams

    def counts(self) -> dict:
        """Gauges for a server's metrics: live streams, ready / in-flight streams, free slots."""
        with self._cond:
            c = self.core
            return {"live": c.live_streams, "ready": c.n_ready, "in_flight": c.in_flight,
                    "free_slots": c.pool.free_count, "capacity": c.pool.capacity}

    def warmup(self, batch_sizes: tuple[int, ...] | None = None) -> None:
        """Run the model once per batch size on zero inputs (see :meth:`StreamCore.warmup`)."""
        with self._cond:
            self.core.warmup(batch_sizes)

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
        for sid in list(self.core.table.streams):
            self.cancel(sid)

    def __enter__(self) -> "StreamingEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def run_step(self, force: bool = True) -> int:
        """Run at most one batch now from the calling thread; returns its size (0: nothing was ready).

        ``force`` ignores ``max_wait_ms`` (a synchronous driver has nothing to wait for).
        """
        self._reap(self.clock())
        with self._cond:
            take = min(self.core.n_ready, self.config.max_batch) if force else self._decision(self.clock()).take
            if take == 0:
                return 0
            batch = self._gather(take)
        self._run_batch(batch)
        return len(batch.streams)

    def run_until_idle(self) -> int:
        """Run batches until no stream holds a full chunk (or a finalizing remainder); returns batches run."""
        steps = 0
        while self.run_step(force=True):
            steps += 1
        return steps

    def _loop(self) -> None:
        reap_every = min(1.0, self.config.idle_timeout_s / 4)
        while True:
            now = self.clock()
            if now - self._last_reap >= reap_every:
                self._reap(now)
            with self._cond:
                if self._stopping:
                    return
                d = self._decision(self.clock())
                if d.take == 0:
                    self._cond.wait(min(reap_every, d.wait_s) if d.wait_s is not None else reap_every)
                    continue
                batch = self._gather(d.take)
            self._run_batch(batch)

    def _decision(self, now: float):
        c = self.core
        return decide(c.n_ready, c.oldest_ready_age(now), c.live_streams - c.in_flight, self.config.max_batch,
                      self.config.max_wait_ms / 1000)

    def _gather(self, take: int):
        """Under the lock: one chunk of each of the ``take`` longest-waiting ready streams into the staging buffer."""
        batch = self.core.gather(self.core.ready_streams(take))
        self._cond.notify_all()  # room was freed in these buffers
        return batch

    def _run_batch(self, batch) -> None:
        self.core.compute(batch)  # the model step, outside the lock
        with self._cond:
            todo = self._settle(self.core.commit(batch))
            self._cond.notify_all()
        _run(todo)

    def _reap(self, now: float) -> None:
        """Finalize idle streams (see :meth:`StreamCore.reap`); resolve those that finish at once."""
        with self._cond:
            self._last_reap = now
            todo = []
            for sid in self.core.reap(now):
                if self.core.status(sid) is StreamStatus.DONE:
                    todo += self._settle_finished(sid, self._futures.pop(sid, None))
        _run(todo)

    # ------------------------------------------------------------------ results (under the lock; run outside it)

    def _settle(self, outcome: StepOutcome) -> list[Callable[[], None]]:
        """Callbacks, future resolutions and closes for one committed step."""
        todo = []
        ended = set(outcome.finished) | set(outcome.failed)
        for sid in outcome.updated:
            listener = self._listeners.get(sid)
            if listener is not None and sid not in ended:
                todo.append(_call(listener, self.core.result(sid)))
        for sid in outcome.finished:
            todo += self._settle_finished(sid, self._futures.pop(sid, None))
        for sid in outcome.failed:
            result = self.core.result(sid)
            self.core.close(sid)
            fut, listener = self._futures.pop(sid, None), self._listeners.pop(sid, None)
            if listener is not None:
                todo.append(_call(listener, result))
            if fut is not None:
                err = StreamFailedError(f"stream {sid!r} failed: {outcome.error}")
                todo.append(lambda f=fut, e=err: f.done() or f.set_exception(e))
        return todo

    def _settle_finished(self, sid: str, fut: Future | None) -> list[Callable[[], None]]:
        result = self.core.result(sid)
        self.core.close(sid)
        todo = []
        listener = self._listeners.pop(sid, None)
        if listener is not None:
            todo.append(_call(listener, result))
        if fut is not None:
            todo.append(lambda: fut.done() or fut.set_result(result))
        return todo


def _call(listener: Callable[[StreamResult], None], result: StreamResult) -> Callable[[], None]:
    def run() -> None:
        try:
            listener(result)
        except Exception:  # a client's callback must not take the scheduler down
            log.exception("on_update callback of stream %r raised; ignored", result.stream_id)
    return run


def _run(todo: list[Callable[[], None]]) -> None:
    for fn in todo:
        fn()
