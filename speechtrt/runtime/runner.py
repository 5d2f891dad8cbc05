"""The ``Runner`` protocol: named tensors in, named tensors out, on a stream — one per exported component.

Three implementations share it: :class:`TorchRunner` (the reference modules, eager, any device and dtype),
:class:`~speechtrt.runtime.ort.OrtRunner` (ONNX Runtime with I/O binding) and
:class:`~speechtrt.runtime.trt.TrtRunner` (a TensorRT or TensorRT-RTX plan). Tensors crossing the protocol are
``torch.Tensor`` on the runner's device; a runner may return views of buffers it reuses, valid until its next call.

The decoder step has one more contract on top (:class:`DecoderStep`): it reads its inputs from a
:class:`~speechtrt.runtime.kv_pool.KVCachePool` and writes its results back, so a backend that can do both in one
captured graph (:mod:`speechtrt.runtime.torch_cuda`) replaces the generic :class:`RunnerDecoderStep`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

import torch

from speechtrt.errors import InputError
from speechtrt.export.components import Component
from speechtrt.runtime.kv_pool import KVCachePool

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}
"""Activation dtype per precision on the torch backend (int8 = INT8 weights, FP32 activations)."""


@runtime_checkable
class Runner(Protocol):
    """One component on one backend. ``infer`` is called with every input name; it returns every output name."""

    component: str
    backend: str
    precision: str
    device: torch.device
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def infer(self, feeds: Mapping[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]: ...

    def close(self) -> None: ...


def check_feeds(runner: Runner, feeds: Mapping[str, torch.Tensor]) -> None:
    """Raise an InputError naming missing or unexpected input tensors."""
    missing = [n for n in runner.input_names if n not in feeds]
    extra = [n for n in feeds if n not in runner.input_names]
    if missing or extra:
        raise InputError(f"{runner.component} ({runner.backend}) takes inputs {list(runner.input_names)}; "
                         f"missing {missing}, unexpected {extra}")


class TorchRunner:
    """A component's reference module on ``device`` in ``precision``, eager.

    fp32 | fp16 | bf16: the module's weights in that dtype (a copy; the caller's model is never cast in place).
    int8: dynamic quantization of the ``Linear`` and ``LSTM`` weights (``torch.ao``, CPU only), activations FP32;
    a component with ``int8_keeps_fp32`` (the TTS encoder) stays FP32.
    Float inputs are cast to the runner's dtype; outputs keep it. On CUDA the call runs on ``stream`` when given.
    Construct through :func:`speechtrt.runtime.open.open_runner`.
    """

    backend = "torch"

    def __init__(self, comp: Component, model: torch.nn.Module, device: str | torch.device = "cpu",
                 precision: str = "fp32"):
        if precision not in TORCH_DTYPES:
            raise InputError(f"the torch backend runs {', '.join(TORCH_DTYPES)}, not {precision!r}")
        self.component = comp.name
        self.precision = precision
        self.dtype = TORCH_DTYPES[precision]
        self.device = torch.device(device)
        self.input_names = tuple(s.name for s in comp.inputs)
        self.output_names = tuple(s.name for s in comp.outputs)
        self._int_inputs = {s.name for s in comp.inputs if s.dtype == "int64"}
        if precision == "int8":
            if self.device.type != "cpu":
                raise InputError("torch INT8 (dynamic quantization) runs on the CPU only; on CUDA use fp16 or the "
                                 "trt backend's INT8 plans")
            if not comp.int8_keeps_fp32:
                model = _dynamic_int8(model)
        elif self.dtype != torch.float32 or self.device.type != "cpu":
            model = copy.deepcopy(model)
        self.module = comp.wrap(model.to(device=self.device, dtype=self.dtype)).eval()

    def dtype_of(self, name: str) -> torch.dtype:
        """The dtype this runner takes for input ``name`` (floats in its dtype, integers as given)."""
        return torch.int64 if name in self._int_inputs else self.dtype

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.device, non_blocking=True)
        return t.to(self.dtype) if t.is_floating_point() and t.dtype != self.dtype else t

    @torch.inference_mode()
    def infer(self, feeds: Mapping[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        check_feeds(self, feeds)
        args = [self._cast(feeds[n]) for n in self.input_names]
        if stream is not None and self.device.type == "cuda":
            with torch.cuda.stream(stream):
                outs = self.module(*args)
        else:
            outs = self.module(*args)
        if isinstance(outs, torch.Tensor):
            outs = (outs,)
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.module = None


def _dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with INT8 ``Linear``/``LSTM`` weights (activations quantized per call)."""
    import warnings

    with warnings.catch_warnings():  # torch's deprecation notice for quantized tensor creation
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).float().eval(),
                                                      {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)


class DecoderStep(Protocol):
    """Advance every active slot of a pool by one frame, writing K/V rows, frame, stop probability and lengths."""

    def step(self, pool: KVCachePool, n: int, stream=None) -> None: ...


@dataclass
class RunnerDecoderStep:
    """The generic decoder step: feed the pool's views to any runner, then commit its outputs into the pool."""

    runner: Runner

    def step(self, pool: KVCachePool, n: int, stream=None) -> None:
        out = self.runner.infer(pool.step_inputs(n), stream=stream)
        pool.commit(n, out["frame"], out["stop_prob"], out["new_k"], out["new_v"])
