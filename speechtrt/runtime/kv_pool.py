"""Preallocated per-request decoder state for in-flight TTS decoding: the ``KVCachePool``.

Every tensor a decode step reads or writes lives here and is allocated once, for ``max_slots`` requests of up to
``max_frames`` mel frames and ``max_text`` tokens:

* self-attention K/V ``[L, slots, H, max_frames, D]`` (one new row per step and slot),
* cross-attention K/V ``[L, slots, H, max_text, D]`` (written once, at admission, from the encoder),
* per-slot ``past_len`` / ``text_len`` (int64), the previous frame, the stop probability and the decoded mel.

Active requests always occupy slots ``0 .. n-1`` (the scheduler compacts holes by moving the last active slot into
a freed one), and rows ``>= past_len`` are masked in attention. A step over ``n`` active slots therefore reads the
views ``self_k[:, :n, :, :P]`` with ``P = max(1, max past_len)`` and ``cross_k[:, :n, :, :S]`` with ``S = max
text_len``: it sees only the active prefix, and no tensor is allocated to assemble its inputs.

The pool knows nothing about requests; it holds tensors and host-side mirrors of the lengths (so choosing ``P``
and ``S`` never synchronises with a device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechtrt.config import TTSConfig
from speechtrt.errors import CapacityError, InputError


@dataclass(frozen=True)
class PoolShape:
    """Geometry of a pool. ``max_frames`` / ``max_text`` bound what one request may decode / condition on."""

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
        """Bytes one slot holds: self K/V, cross K/V and the mel buffer (lengths are negligible)."""
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


class KVCachePool:
    """All decoder state for ``shape.max_slots`` in-flight requests, allocated once on ``device`` in ``dtype``."""

    def __init__(self, shape: PoolShape, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        self.shape = shape
        self.dtype = dtype
        self.device = torch.device(device)
        L, N, H, D = shape.layers, shape.max_slots, shape.heads, shape.head_dim
        F, S, M = shape.max_frames, shape.max_text, shape.mel_dim
        kw = dict(dtype=dtype, device=self.device)
        self.self_k = torch.zeros(L, N, H, F, D, **kw)
        self.self_v = torch.zeros(L, N, H, F, D, **kw)
        self.cross_k = torch.zeros(L, N, H, S, D, **kw)
        self.cross_v = torch.zeros(L, N, H, S, D, **kw)
        self.prev_frame = torch.zeros(N, M, **kw)
        self.stop_prob = torch.zeros(N, **kw)
        self.mel = torch.zeros(N, F, M, **kw)
        ikw = dict(dtype=torch.int64, device=self.device)
        self.past_len = torch.zeros(N, **ikw)
        self.text_len = torch.ones(N, **ikw)  # >= 1 so an idle slot in a padded batch never attends to nothing
        self.slot_index = torch.arange(N, **ikw)
        self._past_host = [0] * N
        self._text_host = [1] * N

    @property
    def max_slots(self) -> int:
        return self.shape.max_slots

    def nbytes(self) -> int:
        tensors = (self.self_k, self.self_v, self.cross_k, self.cross_v, self.prev_frame, self.stop_prob, self.mel,
                   self.past_len, self.text_len, self.slot_index)
        return sum(t.numel() * t.element_size() for t in tensors)

    # ---- host-side lengths

    def past_of(self, slot: int) -> int:
        return self._past_host[slot]

    def step_extent(self, n: int) -> tuple[int, int]:
        """``(P, S)`` for a step over slots ``0..n-1``: the longest past (at least 1) and the longest text."""
        if n < 1 or n > self.max_slots:
            raise ValueError(f"active slot count {n} outside 1..{self.max_slots}")
        return max(1, max(self._past_host[:n])), max(self._text_host[:n])

    # ---- admission, steps, compaction

    def load(self, slots: list[int], cross_k: torch.Tensor, cross_v: torch.Tensor, text_lengths: list[int]) -> None:
        """Start requests in ``slots``: their cross K/V (``[L, b, H, s, D]``, row j → ``slots[j]``), empty past.

        Rows beyond a request's text length may hold another request's values; they are masked by ``text_len``.
        """
        s = cross_k.shape[3]
        if s > self.shape.max_text:
            raise CapacityError(f"text of {s} tokens exceeds the pool's max_text={self.shape.max_text}")
        for j, slot in enumerate(slots):
            self.cross_k[:, slot, :, :s].copy_(cross_k[:, j])
            self.cross_v[:, slot, :, :s].copy_(cross_v[:, j])
            self.past_len[slot] = 0
            self.text_len[slot] = int(text_lengths[j])
            self.prev_frame[slot].zero_()
            self.stop_prob[slot] = 0
            self._past_host[slot] = 0
            self._text_host[slot] = int(text_lengths[j])

    def step_inputs(self, n: int) -> dict[str, torch.Tensor]:
        """The decoder step's named inputs for slots ``0..n-1``: views into the pool, nothing allocated."""
        p, s = self.step_extent(n)
        return {
            "prev_frame": self.prev_frame[:n],
            "past_len": self.past_len[:n],
            "past_k": self.self_k[:, :n, :, :p],
            "past_v": self.self_v[:, :n, :, :p],
            "cross_k": self.cross_k[:, :n, :, :s],
            "cross_v": self.cross_v[:, :n, :, :s],
            "text_lengths": self.text_len[:n],
        }

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
        self.self_k[:, dst, :, :p].copy_(self.self_k[:, src, :, :p])
        self.self_v[:, dst, :, :p].copy_(self.self_v[:, src, :, :p])
        self.cross_k[:, dst, :, :s].copy_(self.cross_k[:, src, :, :s])
        self.cross_v[:, dst, :, :s].copy_(self.cross_v[:, src, :, :s])
        self.mel[dst, :p].copy_(self.mel[src, :p])
        for t in (self.prev_frame, self.stop_prob, self.past_len, self.text_len):
            t[dst] = t[src]
        self._past_host[dst], self._text_host[dst] = p, s
        self.release(src)

    def release(self, slot: int) -> None:
        """Mark a slot idle: zero lengths on the host, a harmless text length of 1 on the device."""
        self.past_len[slot] = 0
        self.text_len[slot] = 1
        self._past_host[slot] = 0
        self._text_host[slot] = 1

    def mel_of(self, slot: int, frames: int | None = None) -> torch.Tensor:
        """A copy of the first ``frames`` (default: all decoded) mel frames of ``slot``: ``[frames, M]``."""
        frames = self._past_host[slot] if frames is None else frames
        if frames > self._past_host[slot]:
            raise InputError(f"slot {slot} has {self._past_host[slot]} frames, asked for {frames}")
        return self.mel[slot, :frames].clone()


def write_rows(pool: KVCachePool, n: int, frame: torch.Tensor, stop_prob: torch.Tensor, new_k: torch.Tensor,
               new_v: torch.Tensor) -> None:
    """Device-side part of a commit: scatter the new rows at each slot's ``past_len`` and advance ``past_len``.

    Only tensor ops with static shapes for a given ``n``, so a CUDA graph can capture it together with the step.
    """
    idx = pool.slot_index[:n]
    pos = pool.past_len[:n]
    # advanced indices on dims 1 and 3 put the indexed dim first: [n, L, H, D]
    pool.self_k[:, idx, :, pos] = new_k[:, :, :, 0].transpose(0, 1).to(pool.dtype)
    pool.self_v[:, idx, :, pos] = new_v[:, :, :, 0].transpose(0, 1).to(pool.dtype)
    pool.mel[idx, pos] = frame.to(pool.dtype)
    pool.prev_frame[:n].copy_(frame)
    pool.stop_prob[:n].copy_(stop_prob)
    pool.past_len[:n] += 1
