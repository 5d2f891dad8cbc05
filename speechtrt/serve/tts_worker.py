"""The thread that owns one :class:`~speechtrt.tts.service.TTSService`'s ``step()``, and per-request part streams.

HTTP handlers never run inference: they :meth:`TTSWorker.stream` a text and iterate its :class:`PartStream`, which
yields each part's audio in order as the vocoder finishes it (parts decode concurrently and may finish out of
order; a later part waits until the earlier ones were sent). Every request that is stepped joins the same in-flight
decode batch. Cancelling a stream (the client went away) cancels the request in the service, so its slot frees at
the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np

from speechtrt.serve.metrics import ServerMetrics
from speechtrt.tts.service import TTSHandle, TTSService

log = logging.getLogger("speechtrt.serve")

_STATS_KEPT = 4096  # scheduler statistics kept by a long-running worker (read into metrics, then dropped)


class PartStream:
    """The audio parts of one request, in order, as an async iterator on the event loop that created it."""

    def __init__(self, worker: "TTSWorker", loop: asyncio.AbstractEventLoop):
        self.worker = worker
        self.loop = loop
        self.handle: TTSHandle | None = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pending: dict[int, np.ndarray] = {}
        self._next = 0

    # called on the vocoder thread
    def _on_part(self, index: int, audio: np.ndarray) -> None:
        self.loop.call_soon_threadsafe(self._queue.put_nowait, (index, audio))

    def _on_done(self, future) -> None:
        if future.cancelled():
            item = (None, asyncio.CancelledError("request cancelled"))
        elif future.exception() is not None:
            item = (None, future.exception())
        else:
            item = (None, None)
        try:
            self.loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    @property
    def parts(self) -> int:
        return len(self.handle.parts)

    @property
    def total_frames(self) -> int | None:
        """Frames the request will decode when its length is fixed in advance (frame rule), else None."""
        reqs = self.handle.parts
        return None if any(r.use_stop for r in reqs) else sum(r.frame_budget for r in reqs)

    def __aiter__(self):
        return self

    async def __anext__(self) -> np.ndarray:
        while self._next not in self._pending:
            if self._next >= self.parts:
                raise StopAsyncIteration
            index, payload = await self._queue.get()
            if index is None:
                if payload is None:  # the whole request is done: every part has been queued before this
                    continue
                raise payload
            self._pending[index] = payload
        audio = self._pending.pop(self._next)
        self._next += 1
        return audio

    def cancel(self) -> bool:
        """Cancel the request if it is still running (its slot frees at the next step)."""
        if self.handle is None or self.handle.done():
            return False
        return self.worker.service.cancel(self.handle.request_id)


class TTSWorker:
    """Steps one TTS service on a thread while there is work; submissions wake it."""

    def __init__(self, name: str, service: TTSService, metrics: ServerMetrics | None = None):
        self.name = name
        self.service = service
        self.metrics = metrics
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._seen_steps = 0
        self.error: BaseException | None = None

    @property
    def sample_rate(self) -> int:
        return self.service.model_config.sample_rate

    def start(self) -> "TTSWorker":
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name=f"speechtrt-tts-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop stepping (after the current step) and close the service."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.service.close()

    def stream(self, text: str, split: str = "sentences", lead_chars: int | None = None) -> PartStream:
        """Submit ``text`` (InputError / CapacityError as :meth:`TTSService.submit`: every sentence a part, the first
        one's lead of up to ``lead_chars`` a part of its own); iterate the result for audio.

        Must be called on the event loop the stream is iterated on.
        """
        parts = PartStream(self, asyncio.get_running_loop())
        parts.handle = self.service.submit(text, split=split, lead_chars=lead_chars, on_part=parts._on_part)
        parts.handle.future.add_done_callback(parts._on_done)
        self._wake.set()
        return parts

    def submit(self, text: str, split: str = "fit") -> TTSHandle:
        """Submit from any thread without streaming; ``handle.result()`` is the whole :class:`TTSResult`."""
        handle = self.service.submit(text, split=split)
        self._wake.set()
        return handle

    @property
    def queued(self) -> int:
        return self.service.scheduler.num_queued

    @property
    def active(self) -> int:
        return self.service.scheduler.num_active

    def _loop(self) -> None:
        service = self.service
        while not self._stop:
            self._wake.clear()  # before the step: a submission after this point is seen by it or wakes the wait
            try:
                busy = service.step()
            except Exception as exc:  # a failed step fails its requests, not the server
                log.exception("TTS step of %s failed", self.name)
                self.error = exc
                self.service.abort_all(exc)
                busy = False
            self._observe()
            if not busy:
                self._wake.wait(0.05)

    def _observe(self) -> None:
        stats = self.service.scheduler.stats
        if self.metrics is not None:
            for s in stats[self._seen_steps:]:
                if s.active:
                    self.metrics.batch_size.labels(f"tts:{self.name}").observe(s.active)
        self._seen_steps = len(stats)
        if len(stats) > _STATS_KEPT:  # this thread is the only one stepping, so it may trim the history
            del stats[:]
            del self.service.step_times_s[:]
            self._seen_steps = 0
