"""The stream table: which streams exist, which state slot each holds, and why recently closed ones closed.

Opening a stream takes a slot of the :class:`~speechtrt.stream.slots.StreamSlotPool` (or is refused with the reason);
a stream that ends frees its slot at once, keeps its record (and final result) until its owner closes it, and leaves
a tombstone: a bounded ring of ``id -> why`` that turns a later call on that id into a precise error ("closed
(finalized)") rather than "unknown". No locks here: the caller (the core, under the engine's lock) serialises calls.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from speechtrt.asr.decode import IncrementalGreedy
from speechtrt.errors import CapacityError, InputError, SpeechTRTError
from speechtrt.stream.slots import SampleBuffer, StreamSlotPool


class UnknownStreamError(InputError):
    """No stream with this id was ever opened (or it was closed long ago)."""


class StreamClosedError(InputError):
    """The stream was finalized, cancelled, failed or timed out: it takes no more audio."""


class StreamFailedError(SpeechTRTError):
    """The model step that carried this stream failed; the message holds the cause."""


class StreamStatus(str, Enum):
    OPEN = "open"  # takes audio
    FINALIZING = "finalizing"  # input ended; the rest of its audio is still being decoded
    DONE = "done"  # final result ready; slot freed
    CANCELLED = "cancelled"
    FAILED = "failed"  # a step carrying it failed; slot freed


class Stream:
    """One stream's record. ``arrivals`` holds the arrival time of each model chunk not yet decoded (seconds on the
    core's clock); ``ctc`` the transcript so far."""

    __slots__ = ("id", "slot", "buffer", "status", "arrivals", "ctc", "frames_decoded", "last_activity", "in_flight",
                 "timed_out", "valid_out", "error")

    def __init__(self, stream_id: str, slot: int, buffer: SampleBuffer, now: float):
        self.id = stream_id
        self.slot = slot
        self.buffer = buffer
        self.status = StreamStatus.OPEN
        self.arrivals: deque[float] = deque()
        self.ctc = IncrementalGreedy()
        self.frames_decoded = 0  # feature frames (10 ms) that went through the model
        self.last_activity = now
        self.in_flight = False  # in a gathered batch whose results are not committed yet
        self.timed_out = False
        self.valid_out = 0  # output frames of the chunk in flight that belong to the stream's audio
        self.error: str | None = None


class Tombstones:
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


class StreamTable:
    """Streams by id over a slot pool. Ids are strings; ``open(None)`` names the stream ``s<n>``."""

    TOMBSTONES = 1024  # recently closed ids remembered for precise error messages (bounded)

    def __init__(self, pool: StreamSlotPool, tombstones: int = TOMBSTONES):
        self.pool = pool
        self.streams: dict[str, Stream] = {}
        self.tombstones = Tombstones(tombstones)
        self._next_id = 0
        self.live = 0  # streams holding a slot

    def open(self, stream_id: str | None, now: float) -> Stream:
        """A new stream with a free slot; :class:`CapacityError` (saying why) when every slot is taken."""
        if stream_id is None:
            stream_id = f"s{self._next_id}"
            self._next_id += 1
        elif not isinstance(stream_id, str):
            raise InputError(f"stream ids are strings, got {type(stream_id).__name__} {stream_id!r}")
        elif stream_id in self.streams:
            raise InputError(f"stream id {stream_id!r} is already open; pick another id")
        slot = self.pool.acquire()
        if slot is None:
            raise CapacityError(
                f"stream {stream_id!r} refused: all {self.pool.capacity} stream slots are in use "
                f"({self.live} open streams); retry when one finishes, or raise max_streams")
        self.tombstones.forget(stream_id)  # a reused id starts a new life
        s = Stream(stream_id, slot, self.pool.sample_buffer(slot), now)
        self.streams[stream_id] = s
        self.live += 1
        return s

    def get(self, stream_id: str) -> Stream:
        """The stream's record (any status), or the precise error for an id that is closed or unknown."""
        s = self.streams.get(stream_id)
        if s is not None:
            return s
        if not isinstance(stream_id, str):
            raise UnknownStreamError(f"stream ids are strings, got {type(stream_id).__name__} {stream_id!r}")
        why = self.tombstones.get(stream_id)
        if why is not None:
            raise StreamClosedError(f"stream {stream_id!r} is closed ({why}); open a new stream")
        raise UnknownStreamError(f"unknown stream id {stream_id!r}: open() it first")

    def get_open(self, stream_id: str) -> Stream:
        """The stream, if it still takes audio; else :class:`StreamClosedError` saying what it is."""
        s = self.get(stream_id)
        if s.status is not StreamStatus.OPEN:
            what = "finalized" if s.status is StreamStatus.DONE else s.status.value
            raise StreamClosedError(f"stream {stream_id!r} is {what}: it takes no more audio; open a new stream")
        return s

    def end(self, s: Stream, status: StreamStatus, now: float) -> None:
        """The stream stops being live: its slot (state zeroed) and buffer go back to the pool; the record stays
        (with ``status``) until :meth:`close`. Never call it for a stream in flight: the step still writes its slot."""
        if s.slot >= 0:
            s.buffer.reset()
            self.pool.release(s.slot)
            s.slot = -1
            self.live -= 1
        s.status = status
        s.last_activity = now

    def close(self, s: Stream, why: str) -> None:
        """Forget the stream (freeing its slot if it still holds one); later calls on its id get ``why``."""
        if s.slot >= 0:
            self.end(s, StreamStatus.CANCELLED, s.last_activity)
        if self.streams.get(s.id) is s:
            del self.streams[s.id]
        self.tombstones.add(s.id, why)

    def __len__(self) -> int:
        return len(self.streams)

    def __iter__(self):
        return iter(list(self.streams.values()))
