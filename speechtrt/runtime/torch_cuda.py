"""The torch CUDA decoder step: FP16/BF16 weights, the static KV pool, one CUDA graph per shape bucket.

At batch 1 a decoder step is ~100 small kernels, so launch overhead dominates; replaying a captured graph removes
it (DESIGN.md: 0.36 ms/step on an H100). A graph needs static shapes and addresses, so each graph is captured for a
``(batch bucket, past capacity, text capacity)`` over fixed views of the
:class:`~speechtrt.runtime.kv_pool.KVCachePool`: ``n`` active slots run in the smallest batch bucket ``b >= n``
(slots ``n..b-1`` are idle: text length 1, past 0, their outputs ignored), the past and the text at the pool's
current row capacities (rows beyond a slot's length are masked). The pool's buffers never move, so a graph captured
at one capacity stays valid whenever the pool is at that capacity again. The graph includes the K/V row scatter, the frame
write and the length update (:func:`~speechtrt.runtime.kv_pool.write_rows`), so a step is one replay plus an O(n)
host-side length update. Graphs are captured lazily on first use and share one memory pool (the capture itself
is :func:`speechtrt.runtime.graphs.capture`, shared with every other graphed runner).
"""

from __future__ import annotations

import copy

import torch

from speechtrt.errors import InputError
from speechtrt.runtime.graphs import bucket_for, buckets, capture
from speechtrt.runtime.kv_pool import KVCachePool, write_rows


class GraphedDecoderStep:
    """A :class:`~speechtrt.runtime.runner.DecoderStep` that replays CUDA graphs of the reference decoder step."""

    def __init__(self, model: torch.nn.Module, pool: KVCachePool, dtype: torch.dtype = torch.float16,
                 batch_buckets: list[int] | None = None, warmup_iters: int = 2, use_graphs: bool = True):
        if use_graphs and pool.device.type != "cuda":
            raise InputError("CUDA graphs need the KV pool on a CUDA device")
        self.use_graphs = use_graphs  # False: run the same bucketed body eagerly (any device; for checking)
        if pool.dtype != dtype:
            raise InputError(f"pool dtype {pool.dtype} differs from the step's {dtype}")
        self.model = copy.deepcopy(model).to(device=pool.device, dtype=dtype).eval()
        self.pool = pool
        self.batch_buckets = batch_buckets or buckets(pool.max_slots, 1)
        self.warmup_iters = warmup_iters
        self.graphs: dict[tuple[int, int, int], torch.cuda.CUDAGraph] = {}
        self._mempool = torch.cuda.graph_pool_handle() if use_graphs else None

    def _body(self, b: int) -> None:
        pool = self.pool
        frame, stop, new_k, new_v = self.model.decode_step(
            pool.prev_frame[:b], pool.past_len[:b], pool.past_k.views(b), pool.past_v.views(b),
            pool.cross_k.views(b), pool.cross_v.views(b), pool.text_len[:b],
        )
        write_rows(pool, b, frame, stop, new_k, new_v)

    def capture(self, b: int, key: tuple[int, int, int]) -> torch.cuda.CUDAGraph:
        """Warm up and capture the step for batch bucket ``b`` at the pool's current capacities (``key``); pool
        state is preserved.

        Warm-up runs really execute: they write K/V rows and frames at each slot's next position (which the real
        step overwrites) and change ``prev_frame``, ``stop_prob`` and ``past_len``, which are restored after each.
        """
        pool = self.pool
        saved = [t[:b].clone() for t in (pool.prev_frame, pool.stop_prob, pool.past_len)]

        def restore():
            for t, v in zip((pool.prev_frame, pool.stop_prob, pool.past_len), saved):
                t[:b].copy_(v)

        graph, _ = capture(lambda: self._body(b), pool.device, self._mempool, self.warmup_iters, restore)
        self.graphs[key] = graph
        return graph

    def step(self, pool: KVCachePool, n: int, stream=None) -> None:
        if pool is not self.pool:
            raise InputError("a graphed decoder step is bound to the pool it was captured on")
        p, s = pool.step_extent(n)  # may grow a capacity (one re-layout) before the step
        b = bucket_for(self.batch_buckets, n)
        if not self.use_graphs:
            with torch.inference_mode():
                self._body(b)
            if b > n:
                pool.past_len[n:b].zero_()
            pool.advance(n)
            return
        graph = self.graphs.get((b, p, s)) or self.capture(b, (b, p, s))
        if stream is not None:
            with torch.cuda.stream(stream):
                graph.replay()
        else:
            graph.replay()
        if b > n:
            pool.past_len[n:b].zero_()  # idle slots in the padded batch stay empty
        pool.advance(n)
