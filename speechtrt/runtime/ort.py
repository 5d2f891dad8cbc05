"""ONNX Runtime runner with I/O binding: CPU everywhere, the CUDA provider where onnxruntime-gpu is installed.

Graphs are found by :func:`speechtrt.runtime.open.graph_path` and opened by
:func:`~speechtrt.runtime.open.open_runner`; this module is the only one that creates ONNX Runtime sessions
(:func:`ort_session`). Inputs are bound by name. On CPU a contiguous input is bound in place (zero copy); a
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

from speechtrt.errors import EngineLoadError
from speechtrt.runtime.runner import check_feeds

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
}
_NUMPY_TO_TORCH = {np.float32: torch.float32, np.float16: torch.float16, np.int64: torch.int64,
                   np.int32: torch.int32, np.bool_: torch.bool}


def ort_session(onnx_path: str | Path, threads: int | None = None, device: torch.device | None = None,
                profile_prefix: str | None = None):
    """An ONNX Runtime inference session (all graph optimizations, quiet log), CPU unless ``device`` is CUDA."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    providers = ort_providers(device or torch.device("cpu"))
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)


def optimized_graph(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Write the graph as ONNX Runtime's CPU optimizer leaves it (constant folding, fusions) to ``out_path``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(out_path)
    ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    return Path(out_path)


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
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise EngineLoadError(f"ONNX graph {str(self.path)!r} not found; run `speechtrt export` first")
        self.device = torch.device(device)
        sidecar = self.path.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        self.component = meta.get("component", self.path.name.split(".")[0])
        self.precision = meta.get("precision", "fp32")
        try:
            self.session = ort_session(self.path, threads, self.device, profile_prefix)
        except EngineLoadError:
            raise
        except Exception as exc:  # ORT's own errors (a graph it has no kernel for, a corrupt file)
            raise EngineLoadError(f"ONNX Runtime cannot load {self.path}: {str(exc).splitlines()[0][:300]}") from exc
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


class ReferenceRunner:
    """A graph in ONNX's reference evaluator (pure NumPy): slow but kernel-free, for fidelity checks of graphs
    ONNX Runtime's CPU kernels cannot run (some FP16 graphs crash it; see :func:`ort_runs`)."""

    backend = "onnx-reference"

    def __init__(self, onnx_path: str | Path):
        import onnx
        from onnx.reference import ReferenceEvaluator

        self.path = Path(onnx_path)
        graph = onnx.load(str(self.path))
        self._eval = ReferenceEvaluator(graph)
        self.device = torch.device("cpu")
        sidecar = self.path.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        self.component = meta.get("component", self.path.name.split(".")[0])
        self.precision = meta.get("precision", "fp32")
        self.input_names = tuple(i.name for i in graph.graph.input)
        self.output_names = tuple(o.name for o in graph.graph.output)

    def infer(self, feeds: Mapping[str, torch.Tensor], stream=None) -> dict[str, torch.Tensor]:
        check_feeds(self, feeds)
        outs = self._eval.run(None, {k: np.asarray(v.detach().cpu().numpy()) for k, v in feeds.items()})
        return {n: torch.from_numpy(np.asarray(v)) for n, v in zip(self.output_names, outs)}

    def close(self) -> None:
        self._eval = None


_PROBE = """
import sys, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.log_severity_level = 3; o.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], sess_options=o, providers=["CPUExecutionProvider"])
with np.load(sys.argv[2]) as d:
    s.run(None, {k: d[k] for k in d.files})
print("ok")
"""


def ort_runs(onnx_path: str | Path, feed: Mapping[str, np.ndarray]) -> bool:
    """Whether ONNX Runtime (CPU) runs the graph on ``feed`` without crashing, tried in a child process."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="speechtrt-probe-") as tmp:
        feed_path = Path(tmp) / "feed.npz"
        np.savez(feed_path, **{k: np.asarray(v) for k, v in feed.items()})
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(onnx_path), str(feed_path)],
                              capture_output=True, text=True, timeout=600)
    return proc.returncode == 0 and proc.stdout.strip().endswith("ok")
