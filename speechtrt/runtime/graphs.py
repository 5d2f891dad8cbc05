"""CUDA graphs by shape bucket: the one capture helper every torch CUDA path uses.

A small step (a streaming ASR chunk, a TTS decoder step) is tens to hundreds of tiny kernels, so on a GPU the
launches cost more than the math; replaying a captured graph removes them. A graph has fixed shapes and addresses,
so a batch of ``n`` runs in the smallest bucket ``b >= n`` (powers of two up to a limit): inputs are copied into
static buffers of that bucket, padded rows are zero, and their outputs are ignored. Graphs are captured lazily on
first use, after warm-up runs on a side stream (as capture requires), and share one memory pool.

:func:`capture` is the mechanism; :class:`GraphedRunner` applies it to any component runner whose batch axis is
named ``batch`` in its spec; :class:`~speechtrt.runtime.torch_cuda.GraphedDecoderStep` applies it to the decoder
step over the KV pool.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from speechtrt.export.components import Component
from speechtrt.runtime.runner import TorchRunner, check_feeds


def buckets(limit: int, start: int = 1) -> list[int]:
    """Powers of two from ``start`` below ``limit``, then ``limit`` itself."""
    out, b = [], start
    while b < limit:
        out.append(b)
        b *= 2
    return out + [limit]


def bucket_for(sizes: list[int], x: int) -> int:
    """The smallest bucket holding ``x``; ValueError beyond the largest."""
    for b in sizes:
        if b >= x:
            return b
    raise ValueError(f"{x} exceeds the largest bucket {sizes[-1]}")


def capture(body: Callable[[], object], device: torch.device, pool=None, warmup_iters: int = 2,
            after_warmup: Callable[[], None] | None = None) -> tuple[torch.cuda.CUDAGraph, object]:
    """Warm ``body`` up on a side stream, then capture it; returns the graph and what the captured call returned.

    ``after_warmup`` runs after each warm-up call (to undo state a warm-up changed, e.g. lengths it advanced).
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(warmup_iters):
            body()
            if after_warmup is not None:
                after_warmup()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool), torch.inference_mode():
        out = body()
    return graph, out


class GraphedRunner:
    """A :class:`~speechtrt.runtime.runner.TorchRunner` replayed as one CUDA graph per (batch bucket, other dims).

    The batch axis of every input and output is where its spec says ``batch``. Outputs are views of static
    buffers, valid until the next call (the Runner contract allows it).
    """

    backend = "torch"

    def __init__(self, runner: TorchRunner, comp: Component, max_batch: int):
        self.runner = runner
        self.component, self.precision, self.device = runner.component, runner.precision, runner.device
        self.dtype = runner.dtype
        self.input_names, self.output_names = runner.input_names, runner.output_names
        self._batch_dim = {s.name: s.shape.index("batch") for s in (*comp.inputs, *comp.outputs)
                           if "batch" in s.shape}
        self.buckets = buckets(max_batch)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict, dict]] = {}
        self._pool = torch.cuda.graph_pool_handle()

    def dtype_of(self, name: str) -> torch.dtype:
        return self.runner.dtype_of(name)

    def _graph_for(self, key: tuple, shapes: dict[str, tuple[int, ...]]):
        if key not in self._graphs:
            static_in = {n: torch.zeros(shapes[n], dtype=self.dtype_of(n), device=self.device)
                         for n in self.input_names}
            graph, out = capture(lambda: self.runner.module(*(static_in[n] for n in self.input_names)),
                                 self.device, self._pool, warmup_iters=3)
            out = (out,) if isinstance(out, torch.Tensor) else out
            self._graphs[key] = (graph, static_in, dict(zip(self.output_names, out)))
        return self._graphs[key]

    def infer(self, feeds: Mapping[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        check_feeds(self, feeds)
        first = self.input_names[0]
        n = feeds[first].shape[self._batch_dim.get(first, 0)]
        if n > self.buckets[-1]:
            return self.runner.infer(feeds, stream)
        b = bucket_for(self.buckets, n)
        shapes = {}
        for name in self.input_names:
            shape = list(feeds[name].shape)
            if name in self._batch_dim:
                shape[self._batch_dim[name]] = b
            shapes[name] = tuple(shape)
        graph, static_in, static_out = self._graph_for((b, *shapes.values()), shapes)
        for name in self.input_names:
            dst = static_in[name]
            d = self._batch_dim.get(name)
            if d is None:
                dst.copy_(feeds[name])
                continue
            dst.narrow(d, 0, n).copy_(feeds[name])
            if b > n:
                dst.narrow(d, n, b - n).zero_()
        if stream is not None:
            with torch.cuda.stream(stream):
                graph.replay()
        else:
            graph.replay()
        return {name: (t.narrow(self._batch_dim[name], 0, n) if name in self._batch_dim else t)
                for name, t in static_out.items()}

    def close(self) -> None:
        self._graphs.clear()
        self.runner.close()
