"""ONNX Runtime runner with I/O binding: CPU everywhere, the CUDA provider where onnxruntime-gpu is installed.

Graphs follow the export naming contract: ``<dir>/<component>.onnx`` (fp32) and ``<dir>/<component>.<fp16|int8>.onnx``
from ``speechtrt calibrate``. Inputs are bound by name. On CPU a contiguous input is bound in place (zero copy); a
strided one (the KV pool's active prefix) is packed into a staging buffer the runner keeps and grows, so steady-state
decoding allocates nothing on the input side. On CUDA, inputs are bound by device pointer and outputs come back to
torch through DLPack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from speechtrt.errors import EngineLoadError, InputError
from speechtrt.runtime.runner import check_feeds

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
}
_NUMPY_TO_TORCH = {np.float32: torch.float32, np.float16: torch.float16, np.int64: torch.int64,
                   np.int32: torch.int32, np.bool_: torch.bool}


def onnx_path_for(onnx_dir: str | Path, component: str, precision: str = "fp32") -> Path:
    """Where ``component`` at ``precision`` lives in ``onnx_dir``; raises EngineLoadError naming the fix if absent."""
    name = f"{component}.onnx" if precision == "fp32" else f"{component}.{precision}.onnx"
    path = Path(onnx_dir) / name
    if not path.is_file():
        hint = "speechtrt export" if precision == "fp32" else f"speechtrt calibrate --precision {precision}"
        raise EngineLoadError(f"no ONNX graph {str(path)!r}; create it with `{hint}` (or pass --onnx-dir)")
    return path


def ort_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise EngineLoadError("ONNX Runtime has no CUDA provider here (onnxruntime-gpu not installed); "
                                  "use --device cpu or --backend torch")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtRunner:
    """One ONNX graph as a :class:`~speechtrt.runtime.runner.Runner`."""

    backend = "ort"

    def __init__(self, onnx_path: str | Path, device: str | torch.device = "cpu", threads: int | None = None,
                 profile_prefix: str | None = None):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise EngineLoadError(f"ONNX graph {str(self.path)!r} not found; run `speechtrt export` first")
        self.device = torch.device(device)
        sidecar = self.path.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        self.component = meta.get("component", self.path.name.split(".")[0])
        self.precision = meta.get("precision", "fp32")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=ort_providers(self.device))
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self._in_dtype = {i.name: _ORT_TO_NUMPY.get(i.type, np.float32) for i in self.session.get_inputs()}
        self._binding = self.session.io_binding()
        self._staging: dict[str, np.ndarray] = {}

    def dtype_of(self, name: str) -> torch.dtype:
        """The torch dtype the graph takes for input ``name``."""
        return _NUMPY_TO_TORCH[self._in_dtype[name]]

    def _host_array(self, name: str, t: torch.Tensor) -> np.ndarray:
        want = self._in_dtype[name]
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.is_contiguous() and _NUMPY_TO_TORCH[want] == t.dtype:
            return t.numpy()
        flat = self._staging.get(name)
        if flat is None or flat.size < t.numel():
            flat = self._staging[name] = np.empty(max(t.numel(), 1), dtype=want)
        view = flat[: t.numel()].reshape(t.shape)
        torch.from_numpy(view).copy_(t)  # one strided copy; the cast happens in the same pass
        return view

    def infer(self, feeds: Mapping[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        check_feeds(self, feeds)
        b = self._binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        if self.device.type == "cuda":
            for name in self.input_names:
                t = feeds[name].to(self.device).to(_NUMPY_TO_TORCH[self._in_dtype[name]]).contiguous()
                b.bind_input(name, "cuda", self.device.index or 0, self._in_dtype[name], list(t.shape), t.data_ptr())
            for name in self.output_names:
                b.bind_output(name, "cuda", self.device.index or 0)
            if stream is not None:
                stream.synchronize()
            self.session.run_with_iobinding(b)
            return {n: torch.from_dlpack(v.to_dlpack()) for n, v in zip(self.output_names, b.get_outputs())}
        for name in self.input_names:
            b.bind_cpu_input(name, self._host_array(name, feeds[name]))
        for name in self.output_names:
            b.bind_output(name, "cpu")
        self.session.run_with_iobinding(b)
        return {n: torch.from_numpy(v.numpy()) for n, v in zip(self.output_names, b.get_outputs())}

    def end_profiling(self) -> str:
        """Stop ONNX Runtime's profiler and return the JSON trace path it wrote."""
        return self.session.end_profiling()

    def close(self) -> None:
        self.session = None
        self._binding = None


def make_ort_runner(onnx_dir: str | Path, component: str, precision: str = "fp32",
                    device: str | torch.device = "cpu", threads: int | None = None, **kw) -> OrtRunner:
    if precision == "bf16":
        raise InputError("ONNX graphs come in fp32, fp16 and int8; bf16 runs on the torch backend")
    return OrtRunner(onnx_path_for(onnx_dir, component, precision), device=device, threads=threads, **kw)
