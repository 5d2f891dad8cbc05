"""TensorRT / TensorRT-RTX runner: a plan from ``speechtrt build``, checked against its manifest, then executed.

Loading: :func:`speechtrt.engines.manifest.check_engine` refuses a plan that is missing, corrupt, built by another
TensorRT flavour or version, or built for another compute capability, with the rebuild command in the message. The
plan is then deserialized by the flavour that built it.

Execution: one execution context per CUDA stream (contexts are not safe to share across concurrent streams); I/O
buffers are torch tensors allocated once per context at the profile's largest shapes (torch owns the memory, so
outputs hand over without copies); each call sets the input shapes (``set_input_shape``), binds addresses
(``set_tensor_address``) — a contiguous input of the right dtype on the device is bound in place, anything else is
copied into its buffer — and enqueues with ``execute_async_v3`` on the stream. Outputs are views into the context's
buffers, valid until its next call. :meth:`TrtRunner.layer_times` turns on TensorRT's per-layer profiler.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Mapping

import torch

from speechtrt.errors import EngineLoadError, InputError
from speechtrt.runtime.runner import check_feeds


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool}
    for name, tdt in (("INT64", torch.int64), ("BF16", torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdt
    if dtype not in table:
        raise EngineLoadError(f"engine I/O dtype {dtype} has no torch equivalent")
    return table[dtype]


class _Context:
    """An execution context and its preallocated I/O buffers (flat, sized for the largest profile shape)."""

    def __init__(self, engine, runner: "TrtRunner"):
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineLoadError(f"TensorRT could not create an execution context for {runner.path} "
                                  "(out of GPU memory?)")
        for name in runner.input_names:
            self.context.set_input_shape(name, runner.max_shapes[name])
        self.buffers = {}
        for name in (*runner.input_names, *runner.output_names):
            shape = runner.max_shapes.get(name) or tuple(self.context.get_tensor_shape(name))
            numel = 1
            for d in shape:
                numel *= max(int(d), 1)
            self.buffers[name] = torch.empty(numel, dtype=runner.dtypes[name], device=runner.device)


class TrtRunner:
    """One engine plan as a :class:`~speechtrt.runtime.runner.Runner` (CUDA only)."""

    backend = "trt"

    def __init__(self, plan_path: str | Path, device: str | torch.device = "cuda", check: bool = True):
        from speechtrt.engines.flavour import import_flavour

        self.path = Path(plan_path)
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise EngineLoadError("the trt backend needs a CUDA GPU; use --backend ort or torch here")
        if check:
            from speechtrt.engines.manifest import check_engine

            entry = check_engine(self.path)
        else:
            entry = {"tensorrt": {"flavour": "tensorrt"}, "precision": self.path.name.split(".")[-2]}
        backend = import_flavour(entry["tensorrt"]["flavour"])
        if backend is None:
            raise EngineLoadError(f"{entry['tensorrt']['flavour']} is not installed; install it to run {self.path}")
        self.trt = trt = backend.trt
        self.precision = entry.get("precision", "fp32")
        self.component = self.path.name.split(".")[0]
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineLoadError(f"TensorRT could not deserialize {self.path}; rebuild it with `speechtrt build`")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.max_shapes = {n: tuple(self.engine.get_tensor_profile_shape(n, 0)[2]) for n in self.input_names}
        self._contexts: dict[int, _Context] = {}
        self._profiler = None

    def dtype_of(self, name: str) -> torch.dtype:
        return self.dtypes[name]

    def _context_for(self, stream: torch.cuda.Stream) -> _Context:
        key = stream.cuda_stream
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = _Context(self.engine, self)
            if self._profiler is not None:
                ctx.context.profiler = self._profiler
        return ctx

    def infer(self, feeds: Mapping[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        check_feeds(self, feeds)
        stream = stream or torch.cuda.current_stream(self.device)
        ctx = self._context_for(stream)
        c = ctx.context
        with torch.cuda.stream(stream):
            for name in self.input_names:
                t = feeds[name]
                shape = tuple(t.shape)
                if any(s > m for s, m in zip(shape, self.max_shapes[name])):
                    raise InputError(f"{self.component}: input {name} has shape {list(shape)}, beyond the engine's "
                                     f"profile maximum {list(self.max_shapes[name])}; rebuild with a larger range")
                if t.device == self.device and t.dtype == self.dtypes[name] and t.is_contiguous():
                    ptr = t.data_ptr()
                else:
                    view = ctx.buffers[name][: t.numel()].view(shape)
                    view.copy_(t, non_blocking=True)
                    ptr = view.data_ptr()
                c.set_input_shape(name, shape)
                c.set_tensor_address(name, ptr)
            outs = {}
            for name in self.output_names:
                shape = tuple(c.get_tensor_shape(name))
                numel = 1
                for d in shape:
                    numel *= d
                view = ctx.buffers[name][:numel].view(shape)
                c.set_tensor_address(name, view.data_ptr())
                outs[name] = view
            if not c.execute_async_v3(stream.cuda_stream):
                raise EngineLoadError(f"TensorRT failed to enqueue {self.component} ({self.path})")
        return outs

    def layer_times(self) -> dict[str, list[float]]:
        """Turn on TensorRT's per-layer profiler for every context; returns the live ``layer → [ms]`` dict.

        TensorRT reports a layer's time after the enqueue it belongs to has completed (synchronise first).
        """
        trt = self.trt
        times: dict[str, list[float]] = defaultdict(list)

        class _LayerTimes(trt.IProfiler):
            def __init__(self):
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name, ms):
                times[layer_name].append(float(ms))

        self._profiler = _LayerTimes()
        for ctx in self._contexts.values():
            ctx.context.profiler = self._profiler
        return times

    def close(self) -> None:
        self._contexts.clear()
        self.engine = None
