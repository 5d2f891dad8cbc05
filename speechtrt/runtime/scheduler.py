"""In-flight (continuous) batching for an autoregressive decoder, in pure Python.

The scheduler decides; the :class:`~speechtrt.runtime.kv_pool.KVCachePool` holds tensors. Between two decode steps
:meth:`Scheduler.schedule` evicts cancelled requests, compacts the active set onto slots ``0..n-1`` and admits
queued requests into the free slots; after a step :meth:`Scheduler.record_step` counts the frame, finishes requests
that reached their stop condition or frame budget, and compacts again. Both return the slot moves the pool must
apply, so the pool and the scheduler never disagree about who sits where.

Admission answers OK / LATER / NEVER: a request that can never fit (more frames or text than a slot holds) is
refused at submission with the limit stated; one that fits waits in a bounded FIFO queue until a slot is free; a full
queue refuses new work with a :class:`~speechtrt.errors.CapacityError` that says why.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from speechtrt.errors import CapacityError, InputError


class Admission(enum.Enum):
    OK = "ok"  # a slot is free now
    LATER = "later"  # fits a slot, but none is free: queue it
    NEVER = "never"  # exceeds what a slot holds: refuse


class RequestState(enum.Enum):
    QUEUED = "queued"
    ACTIVE = "active"
    FINISHED = "finished"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class SchedulerConfig:
    """Budgets of one decoder: slots (the pool's), queue length, and what one slot holds."""

    max_slots: int
    max_frames: int
    max_text: int
    max_queue: int = 1024
    max_admit_per_step: int | None = None  # cap on joins per step (bounds the encoder's batch); None: no cap
    stop_threshold: float = 0.5


@dataclass(eq=False)
class DecodeRequest:
    """The scheduler's view of one request: sizes, progress and where it sits. ``payload`` is the caller's."""

    text_len: int
    frame_budget: int  # frames to decode at most (fixed-length mode: exactly)
    use_stop: bool = False  # also finish when the stop probability exceeds the threshold
    request_id: str = ""
    payload: object = None
    frames: int = 0
    slot: int | None = None
    state: RequestState = RequestState.QUEUED
    finish_reason: str | None = None
    submitted_step: int = 0
    admitted_step: int | None = None
    cancel_requested: bool = False


@dataclass(frozen=True)
class Move:
    """Slot ``src``'s state goes to ``dst`` (``dst`` was freed)."""

    src: int
    dst: int


@dataclass
class StepPlan:
    """What to do before the next step: apply ``moves``, load ``admitted`` into their slots, then step ``active``."""

    step: int
    admitted: list[DecodeRequest]
    evicted: list[tuple[DecodeRequest, int]]  # cancelled (request, slot it occupied)
    moves: list[Move]
    active: list[DecodeRequest]  # in slot order: active[i].slot == i


@dataclass
class StepOutcome:
    """After a step: requests that finished (with the slot they held during the step) and the compaction moves."""

    finished: list[tuple[DecodeRequest, int]]
    moves: list[Move]


@dataclass(frozen=True)
class IterationStats:
    step: int
    active: int
    queued: int
    admitted: int
    finished: int
    step_ms: float


@dataclass
class Scheduler:
    config: SchedulerConfig
    stats: list[IterationStats] = field(default_factory=list)

    def __post_init__(self):
        if self.config.max_slots < 1:
            raise InputError(f"max_slots must be >= 1, got {self.config.max_slots}")
        self._queue: deque[DecodeRequest] = deque()
        self._active: list[DecodeRequest] = []
        self._step = 0
        self._ids = itertools.count()
        self._pending_admitted = 0

    # ---- state

    @property
    def active(self) -> list[DecodeRequest]:
        return list(self._active)

    @property
    def num_active(self) -> int:
        return len(self._active)

    @property
    def num_queued(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._active and not self._queue

    # ---- admission

    def can_admit(self, req: DecodeRequest) -> tuple[Admission, str]:
        """Whether ``req`` could join now, later, or never, and why."""
        c = self.config
        if req.frame_budget < 1:
            return Admission.NEVER, f"frame budget must be >= 1, got {req.frame_budget}"
        if req.frame_budget > c.max_frames:
            return Admission.NEVER, (f"{req.frame_budget} frames exceed the {c.max_frames} frames a slot holds; "
                                     "shorten the text or raise max_frames")
        if req.text_len < 1 or req.text_len > c.max_text:
            return Admission.NEVER, (f"{req.text_len} text tokens outside 1..{c.max_text} (the most a slot "
                                     "holds); split the text or raise max_text")
        if len(self._active) < c.max_slots:
            return Admission.OK, "a slot is free"
        return Admission.LATER, f"all {c.max_slots} slots busy"

    def submit(self, req: DecodeRequest) -> DecodeRequest:
        """Queue a request. Raises InputError when it can never fit, CapacityError when the queue is full."""
        verdict, reason = self.can_admit(req)
        if verdict is Admission.NEVER:
            raise InputError(f"request refused: {reason}")
        if len(self._queue) >= self.config.max_queue:
            raise CapacityError(f"request refused: the queue is full ({self.config.max_queue} waiting, "
                                f"{len(self._active)} decoding); retry later or raise max_queue")
        if not req.request_id:
            req.request_id = f"r{next(self._ids)}"
        req.state = RequestState.QUEUED
        req.submitted_step = self._step
        self._queue.append(req)
        return req

    def cancel(self, request_id: str) -> bool:
        """Cancel a queued request at once, an active one at the next :meth:`schedule`. False if unknown/done."""
        for req in self._queue:
            if req.request_id == request_id:
                self._queue.remove(req)
                req.state, req.finish_reason = RequestState.CANCELLED, "cancelled"
                return True
        for req in self._active:
            if req.request_id == request_id:
                req.cancel_requested = True
                return True
        return False

    # ---- the step boundary

    def schedule(self) -> StepPlan:
        """Evict cancelled requests, compact, then admit queued requests (FIFO) into free slots."""
        evicted = [(r, r.slot) for r in self._active if r.cancel_requested]
        for r, _ in evicted:
            r.state, r.finish_reason = RequestState.CANCELLED, "cancelled"
        moves = self._remove({slot for _, slot in evicted})

        admitted: list[DecodeRequest] = []
        cap = self.config.max_admit_per_step
        while self._queue and len(self._active) < self.config.max_slots and (cap is None or len(admitted) < cap):
            req = self._queue.popleft()
            req.slot = len(self._active)
            req.state = RequestState.ACTIVE
            req.admitted_step = self._step
            self._active.append(req)
            admitted.append(req)
        self._pending_admitted = len(admitted)
        return StepPlan(self._step, admitted, evicted, moves, list(self._active))

    def record_step(self, stop_flags: Sequence[bool] | None = None, step_s: float = 0.0) -> StepOutcome:
        """Count one frame for every active request; finish those at their budget or stop; compact.

        ``stop_flags[i]`` is whether slot i's stop probability crossed the threshold (ignored for fixed-length
        requests). Returns the finished requests with the slot they held, and the moves to apply afterwards.
        """
        n = len(self._active)
        if stop_flags is not None and len(stop_flags) < n:
            raise ValueError(f"{len(stop_flags)} stop flags for {n} active slots")
        finished: list[tuple[DecodeRequest, int]] = []
        for i, req in enumerate(self._active):
            req.frames += 1
            if req.frames >= req.frame_budget:
                req.finish_reason = "frame_budget"
            elif req.use_stop and stop_flags is not None and stop_flags[i]:
                req.finish_reason = "stop_token"
            else:
                continue
            req.state = RequestState.FINISHED
            finished.append((req, i))
        moves = self._remove({slot for _, slot in finished})
        self.stats.append(IterationStats(self._step, n, len(self._queue), self._pending_admitted, len(finished),
                                         step_s * 1e3))
        self._pending_admitted = 0
        self._step += 1
        return StepOutcome(finished, moves)

    def _remove(self, slots: set[int]) -> list[Move]:
        """Drop the requests in ``slots``; fill each hole (lowest first) with the highest remaining slot above it."""
        if not slots:
            return []
        survivors = {i: r for i, r in enumerate(self._active) if i not in slots}
        for i in slots:
            self._active[i].slot = None
        holes = sorted(slots)
        tail = sorted(survivors, reverse=True)
        moves = []
        while holes and tail and tail[0] > holes[0]:
            src, dst = tail.pop(0), holes.pop(0)
            moves.append(Move(src, dst))
            survivors[dst] = survivors.pop(src)
        self._active = [survivors[i] for i in sorted(survivors)]
        for i, r in enumerate(self._active):
            r.slot = i
        return moves
