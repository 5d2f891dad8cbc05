"""Preallocated per-request decoder state for in-flight TTS decoding: the ``KVCachePool``.

Every tensor a decode step reads or writes lives here and is allocated once, for ``max_slots`` requests of up to
``max_frames`` decoder frames and ``max_text`` tokens:

* self-attention K/V, one buffer per layer, viewed as ``[slots, H, past_cap, D]`` (one new row per step and slot),
* cross-attention K/V, one buffer per layer, viewed as ``[slots, H, text_cap, D]`` (written once, at admission),
* per-slot ``past_len`` / ``text_len`` (int64), the previous frame, the stop probability and the decoded frames.

**The cache is read where it lies.** Active requests always occupy slots ``0 .. n-1`` (the scheduler compacts holes
by moving the last active slot into a freed one), and each layer's buffer is laid out slot-major with a row
capacity (``past_cap``, ``text_cap``) instead of the maximum: so a step's view ``k[:n]`` of each layer is one
contiguous block. A runtime binds it in place (ONNX Runtime's I/O binding, TensorRT's tensor addresses, a CUDA
graph's static input); nothing is staged, split or concatenated per step. Rows beyond a slot's length are masked.
The capacities grow in steps (``past_step`` rows, ``text_step`` tokens) when a request needs more — the rows
already written are re-laid to the new stride once (amortised over ``past_step`` steps) — and shrink back when the
pool empties. A step therefore reads at most ``past_step - 1`` masked rows more than the longest active past.

The pool knows nothing about requests; it holds tensors and host-side mirrors of the lengths (so choosing the
extent of a step never synchronises with a device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechtrt.config import TTSConfig
from speechtrt.errors import CapacityError, InputError


@dataclass(frozen=True)
class PoolShape:
    """Geometry of a pool. ``max_frames`` / ``max_text`` bound what one request may decode / condition on;
    ``mel_dim`` is the width of one decoder frame (``reduction × mel bins`` for a model that emits several mel
    frames per step)."""

    layers: int
    heads: int
    head_dim: int
    mel_dim: int
    max_slots: int
    max_frames: int
    max_text: int

    @classmethod
    def for_model(cls, config: TTSConfig, max_slots: int, max_frames: int | None = None,
                  max_text: int | None = None) -> "PoolShape":
        return cls(config.num_layers, config.num_heads, config.head_dim, config.mel_dim, max_slots,
                   max_frames or config.max_frames, max_text or config.max_text_len)

    def bytes_per_slot(self, dtype: torch.dtype) -> int:
        """Bytes one slot holds: self K/V, cross K/V and the frame buffer (lengths are negligible)."""
        elt = torch.empty((), dtype=dtype).element_size()
        kv = 2 * self.layers * self.heads * self.head_dim * (self.max_frames + self.max_text)
        mel = (self.max_frames + 2) * self.mel_dim
        return elt * (kv + mel) + 2 * 8

    def total_bytes(self, dtype: torch.dtype) -> int:
        return self.max_slots * self.bytes_per_slot(dtype)


def slots_for_budget(config: TTSConfig, budget_bytes: int, max_frames: int, max_text: int,
                     dtype: torch.dtype, cap: int | None = None) -> int:
    """How many slots a memory budget holds at this geometry (at most ``cap``). Raises if not even one fits."""
    per_slot = PoolShape.for_model(config, 1, max_frames, max_text).bytes_per_slot(dtype)
    slots = budget_bytes // per_slot
    if slots < 1:
        raise CapacityError(
            f"a KV-cache budget of {budget_bytes / 2**20:.1f} MiB holds no slot: one slot of {max_frames} frames and "
            f"{max_text} tokens needs {per_slot / 2**20:.1f} MiB; raise the budget or lower max_frames/max_text"
        )
    return int(min(slots, cap) if cap else slots)


class LayerRows:
    """Per-layer row buffers ``[slots, H, rows, D]`` whose row capacity can change (see the module docstring).

    ``flat[l]`` is layer ``l``'s storage, allocated once for ``max_rows``; ``view(l)`` is its ``[slots, H, cap, D]``
    reading at the current capacity, so ``view(l)[:n]`` is contiguous.
    """

    def __init__(self, layers: int, slots: int, heads: int, max_rows: int, dim: int, step: int,
                 dtype: torch.dtype, device: torch.device):
        self.slots, self.heads, self.max_rows, self.dim, self.step = slots, heads, max_rows, dim, step
        self.flat = [torch.zeros(slots * heads * max_rows * dim, dtype=dtype, device=device) for _ in range(layers)]
        self.cap = min(step, max_rows)

    def view(self, layer: int, cap: int | None = None) -> torch.Tensor:
        cap = self.cap if cap is None else cap
        return self.flat[layer][: self.slots * self.heads * cap * self.dim].view(self.slots, self.heads, cap, self.dim)

    def views(self, n: int) -> list[torch.Tensor]:
        """Every layer's ``[n, H, cap, D]`` block: contiguous, nothing copied."""
        return [self.view(layer)[:n] for layer in range(len(self.flat))]

    def capacity_for(self, rows: int) -> int:
        """The capacity a view needs to hold ``rows`` rows: the next multiple of ``step`` (at most ``max_rows``)."""
        if rows > self.max_rows:
            raise CapacityError(f"{rows} rows exceed the {self.max_rows} a slot holds")
        return min(self.max_rows, max(self.step, -(-rows // self.step) * self.step))

    def relayout(self, cap: int, n: int) -> None:
        """Change the row capacity to ``cap``, keeping rows ``[0, min(cap, old cap))`` of slots ``0..n-1``."""
        if cap == self.cap:
            return
        keep = min(cap, self.cap)
        for layer in range(len(self.flat)):
            rows = self.view(layer)[:n, :, :keep].clone()  # old stride; the new stride overlaps it
            self.view(layer, cap)[:n, :, :keep].copy_(rows)
        self.cap = cap

    def copy_slot(self, src: int, dst: int, rows: int) -> None:
        for layer in range(len(self.flat)):
            v = self.view(layer)
            v[dst, :, :rows].copy_(v[src, :, :rows])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.flat)


class KVCachePool:
    """All decoder state for ``shape.max_slots`` in-flight requests, allocated once on ``device`` in ``dtype``."""

    def __init__(self, shape: PoolShape, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 past_step: int = 64, text_step: int = 16):
        if past_step < 1 or text_step < 1:
            raise InputError(f"past_step={past_step} and text_step={text_step} must be >= 1")
        self.shape = shape
        self.dtype = dtype
        self.device = torch.device(device)
        L, N, H, D = shape.layers, shape.max_slots, shape.heads, shape.head_dim
        F, S, M = shape.max_frames, shape.max_text, shape.mel_dim
        self.past_k = LayerRows(L, N, H, F, D, past_step, dtype, self.device)
        self.past_v = LayerRows(L, N, H, F, D, past_step, dtype, self.device)
        self.cross_k = LayerRows(L, N, H, S, D, text_step, dtype, self.device)
        self.cross_v = LayerRows(L, N, H, S, D, text_step, dtype, self.device)
        kw = dict(dtype=dtype, device=self.device)
        self.prev_frame = torch.zeros(N, M, **kw)
        self.stop_prob = torch.zeros(N, **kw)
        self.mel = torch.zeros(N, F, M, **kw)
        ikw = dict(dtype=torch.int64, device=self.device)
        self.past_len = torch.zeros(N, **ikw)
        self.text_len = torch.ones(N, **ikw)  # >= 1 so an idle slot in a padded batch never attends to nothing
        self.slot_index = torch.arange(N, **ikw)
        self._past_host = [0] * N
        self._text_host = [1] * N
        self._used = [False] * N  # slots holding a request (the scheduler's compaction keeps them in front)

    @property
    def max_slots(self) -> int:
        return self.shape.max_slots

    @property
    def layers(self) -> int:
        return self.shape.layers

    def nbytes(self) -> int:
        rows = sum(r.nbytes() for r in (self.past_k, self.past_v, self.cross_k, self.cross_v))
        tensors = (self.prev_frame, self.stop_prob, self.mel, self.past_len, self.text_len, self.slot_index)
        return rows + sum(t.numel() * t.element_size() for t in tensors)

    # ---- host-side lengths

    def past_of(self, slot: int) -> int:
        return self._past_host[slot]

    def step_extent(self, n: int) -> tuple[int, int]:
        """``(P, S)`` a step over slots ``0..n-1`` reads: the row capacities, which hold every active past plus the
        row this step writes, and every active text. Grows a capacity (one re-layout) when a request needs it."""
        if n < 1 or n > self.max_slots:
            raise ValueError(f"active slot count {n} outside 1..{self.max_slots}")
        need = max(self._past_host[:n]) + 1
        if need > self.shape.max_frames:
            raise CapacityError(f"a slot is full ({self.shape.max_frames} frames); the scheduler should have "
                                "finished its request")
        if need > self.past_k.cap:
            cap = self.past_k.capacity_for(need)
            self.past_k.relayout(cap, self._in_use())
            self.past_v.relayout(cap, self._in_use())
        return self.past_k.cap, self.cross_k.cap

    def _in_use(self) -> int:
        """One past the highest slot holding a request: the slots a re-layout must keep."""
        return max((i + 1 for i, used in enumerate(self._used) if used), default=0)

    # ---- admission, steps, compaction

    def load(self, slots: list[int], cross_k: torch.Tensor, cross_v: torch.Tensor, text_lengths: list[int]) -> None:
        """Start requests in ``slots``: their cross K/V (``[L, b, H, s, D]``, row j → ``slots[j]``), empty past.

        Rows beyond a request's text length may hold another request's values; they are masked by ``text_len``.
        """
        s = cross_k.shape[3]
        if s > self.shape.max_text:
            raise CapacityError(f"text of {s} tokens exceeds the pool's max_text={self.shape.max_text}")
        if s > self.cross_k.cap:
            cap = self.cross_k.capacity_for(s)
            self.cross_k.relayout(cap, self._in_use())
            self.cross_v.relayout(cap, self._in_use())
        idx = torch.as_tensor(slots, dtype=torch.int64, device=self.device)
        for layer in range(self.layers):
            self.cross_k.view(layer)[idx, :, :s] = cross_k[layer].to(self.dtype)
            self.cross_v.view(layer)[idx, :, :s] = cross_v[layer].to(self.dtype)
        for j, slot in enumerate(slots):
            self.past_len[slot] = 0
            self.text_len[slot] = int(text_lengths[j])
            self.prev_frame[slot].zero_()
            self.stop_prob[slot] = 0
            self._past_host[slot] = 0
            self._text_host[slot] = int(text_lengths[j])
            self._used[slot] = True

    def step_inputs(self, n: int) -> dict[str, torch.Tensor]:
        """The decoder step's named inputs for slots ``0..n-1``: contiguous views into the pool, nothing copied."""
        self.step_extent(n)
        feeds = {"prev_frame": self.prev_frame[:n], "past_len": self.past_len[:n], "text_lengths": self.text_len[:n]}
        for kind, rows in (("past_k", self.past_k), ("past_v", self.past_v), ("cross_k", self.cross_k),
                           ("cross_v", self.cross_v)):
            for layer, view in enumerate(rows.views(n)):
                feeds[f"{kind}_{layer}"] = view
        return feeds

    def commit(self, n: int, frame: torch.Tensor, stop_prob: torch.Tensor, new_k: torch.Tensor,
               new_v: torch.Tensor) -> None:
        """Write a step's results for slots ``0..n-1``: K/V rows and the frame at ``past_len``, then advance.

        frame: [n, M]; stop_prob: [n]; new_k / new_v: [L, n, H, 1, D].
        """
        for i in range(n):
            if self._past_host[i] >= self.shape.max_frames:
                raise CapacityError(f"slot {i} is full ({self.shape.max_frames} frames); the scheduler should "
                                    "have finished its request")
        write_rows(self, n, frame, stop_prob, new_k, new_v)
        self.advance(n)

    def advance(self, n: int) -> None:
        """Count one decoded frame for slots ``0..n-1`` (device lengths are advanced by :func:`write_rows`)."""
        for i in range(n):
            self._past_host[i] += 1

    def move(self, src: int, dst: int) -> None:
        """Copy slot ``src``'s state into ``dst`` (compaction after a request leaves); ``src`` becomes free."""
        p, s = self._past_host[src], self._text_host[src]
        self.past_k.copy_slot(src, dst, p)
        self.past_v.copy_slot(src, dst, p)
        self.cross_k.copy_slot(src, dst, s)
        self.cross_v.copy_slot(src, dst, s)
        self.mel[dst, :p].copy_(self.mel[src, :p])
        for t in (self.prev_frame, self.stop_prob, self.past_len, self.text_len):
            t[dst] = t[src]
        self._past_host[dst], self._text_host[dst] = p, s
        self._used[dst] = True
        self.release(src)

    def release(self, slot: int) -> None:
        """Mark a slot idle: zero lengths on the host, a harmless text length of 1 on the device. When the pool
        empties, the row capacities shrink back to one step (the next requests read no stale width)."""
        self.past_len[slot] = 0
        self.text_len[slot] = 1
        self._past_host[slot] = 0
        self._text_host[slot] = 1
        self._used[slot] = False
        if not any(self._used):
            for rows in (self.past_k, self.past_v, self.cross_k, self.cross_v):
                rows.cap = min(rows.step, rows.max_rows)

    def mel_of(self, slot: int, frames: int | None = None) -> torch.Tensor:
        """A copy of the first ``frames`` (default: all decoded) frames of ``slot``: ``[frames, M]``."""
        frames = self._past_host[slot] if frames is None else frames
        if frames > self._past_host[slot]:
            raise InputError(f"slot {slot} has {self._past_host[slot]} frames, asked for {frames}")
        return self.mel[slot, :frames].clone()


def write_rows(pool: KVCachePool, n: int, frame: torch.Tensor, stop_prob: torch.Tensor, new_k: torch.Tensor,
               new_v: torch.Tensor) -> None:
    """Device-side part of a commit: scatter the new rows at each slot's ``past_len`` and advance ``past_len``.

    Only tensor ops with static shapes for a given ``n`` and capacity, so a CUDA graph can capture it together
    with the step.
    """
    idx = pool.slot_index[:n]
    pos = pool.past_len[:n]
    for layer in range(pool.layers):
        # advanced indices on dims 0 and 2 of [N, H, cap, D] put the indexed dim first: [n, H, D]
        pool.past_k.view(layer)[idx, :, pos] = new_k[layer, :, :, 0].to(pool.dtype)
        pool.past_v.view(layer)[idx, :, pos] = new_v[layer, :, :, 0].to(pool.dtype)
    pool.mel[idx, pos] = frame.to(pool.dtype)
    pool.prev_frame[:n].copy_(frame)
    pool.stop_prob[:n].copy_(stop_prob)
    pool.past_len[:n] += 1
