"""Backends that run one batched step of the streaming ASR model: ``step(feeds) -> outputs``.

The streaming engine talks to every backend through the names of the exported ``asr_stream_step`` graph:
inputs ``features [B, T, 80]``, ``ctx1``, ``ctx2``, ``h``, ``c``; outputs ``log_probs [B, ceil(T/4), V]``,
``ctx1_out``, ``ctx2_out``, ``h_out``, ``c_out``. Tensors are torch tensors on the backend's ``device``; the ORT
backend hands ONNX Runtime zero-copy NumPy views of CPU tensors.

* ``torch``: the PyTorch module on ``cpu`` or ``cuda`` (optionally FP16 on CUDA, and CUDA graphs captured per
  batch-size bucket with static input/output buffers, batches padded up to the bucket).
* ``ort``: the exported graph in ONNX Runtime (CPU).
* ``trt``: a TensorRT engine of the same graph (needs the ``tensorrt`` package and a GPU it supports).

``offline(features)`` runs a whole utterance from the start state, the reference a streamed transcript must equal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from speechtrt.errors import EngineLoadError, InputError

INPUT_NAMES = ("features", "ctx1", "ctx2", "h", "c")
STATE_NAMES = ("ctx1", "ctx2", "h", "c")
OUTPUT_NAMES = ("log_probs", "ctx1_out", "ctx2_out", "h_out", "c_out")
STATE_BATCH_DIMS = {"ctx1": 0, "ctx2": 0, "h": 1, "c": 1}
BACKENDS = ("torch", "ort", "trt")


class StepBackend(Protocol):
    """One batched streaming step. ``feeds`` holds :data:`INPUT_NAMES`; the result holds :data:`OUTPUT_NAMES`."""

    name: str
    device: torch.device
    state_dtype: torch.dtype

    def step(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def zero_state(self, batch: int) -> dict[str, torch.Tensor]: ...

    def offline(self, features: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict: ...


def _zero_state(model, batch: int, device, dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(device=device, dtype=dtype) for k, v in model.initial_state(batch).items()}


class TorchStepBackend:
    """The PyTorch :class:`StreamingASRModel` as a step backend.

    On CUDA with ``cuda_graphs`` each batch-size bucket (powers of two up to ``max_batch``) is captured once as a
    CUDA graph over static buffers; a batch of ``B`` streams is copied into the smallest bucket ``>= B`` (the padded
    rows are zero state and zero features, and their outputs are ignored). The chunk length is fixed per engine,
    so one graph per bucket covers every step.
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "cpu", fp16: bool = False, cuda_graphs: bool = False,
                 max_batch: int = 64, chunk_frames: int = 16):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
        if fp16 and self.device.type != "cuda":
            raise InputError("FP16 streaming needs --device cuda (CPU kernels run FP32)")
        self.dtype = torch.float16 if fp16 else torch.float32
        self.state_dtype = self.dtype
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.max_batch = max_batch
        self.chunk_frames = chunk_frames
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, dict, dict]] = {}

    def _eager(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = self.model.step(feeds["features"].to(self.dtype), *(feeds[k] for k in STATE_NAMES))
        return dict(zip(OUTPUT_NAMES, out))

    def _bucket(self, batch: int) -> int:
        b = 1
        while b < batch:
            b *= 2
        return min(b, max(self.max_batch, batch))

    def _graph_for(self, bucket: int):
        if bucket not in self._graphs:
            static_in = {"features": torch.zeros(bucket, self.chunk_frames, self.model.config.input_dim,
                                                 device=self.device, dtype=self.dtype),
                         **_zero_state(self.model, bucket, self.device, self.dtype)}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):  # warm-up on a side stream, as CUDA graph capture requires
                    self.model.step(*(static_in[k] for k in INPUT_NAMES))
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = dict(zip(OUTPUT_NAMES, self.model.step(*(static_in[k] for k in INPUT_NAMES))))
            self._graphs[bucket] = (graph, static_in, static_out)
        return self._graphs[bucket]

    def step(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch, frames = feeds["features"].shape[:2]
        if not self.cuda_graphs or frames != self.chunk_frames:
            return self._eager(feeds)
        graph, static_in, static_out = self._graph_for(self._bucket(batch))
        for name in INPUT_NAMES:
            dst = static_in[name]
            d = STATE_BATCH_DIMS.get(name, 0)
            dst.narrow(d, 0, batch).copy_(feeds[name])
            if dst.shape[d] > batch:
                dst.narrow(d, batch, dst.shape[d] - batch).zero_()
        graph.replay()
        return {name: t.narrow(STATE_BATCH_DIMS.get(name.removesuffix("_out"), 0), 0, batch)
                for name, t in static_out.items()}

    def zero_state(self, batch: int) -> dict[str, torch.Tensor]:
        return _zero_state(self.model, batch, self.device, self.dtype)

    def offline(self, features: torch.Tensor) -> torch.Tensor:
        state = self.zero_state(features.shape[0])
        return self._eager({"features": features.to(self.device), **state})["log_probs"]

    def describe(self) -> dict:
        return {"backend": "torch", "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "cuda_graphs": self.cuda_graphs}


class OrtStepBackend:
    """The exported ``asr_stream_step`` graph in ONNX Runtime on the CPU."""

    name = "ort"

    def __init__(self, onnx_path: str | Path, threads: int | None = None):
        from speechtrt.export.parity import ort_session

        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise InputError(f"ONNX graph {self.onnx_path} does not exist: run `speechtrt export --model asr-stream`")
        self.session = ort_session(self.onnx_path, threads=threads)
        names = {i.name for i in self.session.get_inputs()}
        if names != set(INPUT_NAMES):
            raise EngineLoadError(f"{self.onnx_path} has inputs {sorted(names)}, expected {list(INPUT_NAMES)}: "
                                  "export the asr_stream_step component")
        self.device = torch.device("cpu")
        self.state_dtype = torch.float32

    def step(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        arrays = {k: np.ascontiguousarray(feeds[k].numpy()) for k in INPUT_NAMES}
        outs = self.session.run(list(OUTPUT_NAMES), arrays)
        return {k: torch.from_numpy(v) for k, v in zip(OUTPUT_NAMES, outs)}

    def zero_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {i.name: torch.zeros([d if isinstance(d, int) else batch for d in i.shape])
                for i in self.session.get_inputs() if i.name in STATE_NAMES}  # string dims: the batch axis

    def offline(self, features: torch.Tensor) -> torch.Tensor:
        state = self.zero_state(features.shape[0])
        return self.step({"features": features.contiguous(), **state})["log_probs"]

    def describe(self) -> dict:
        return {"backend": "ort", "device": "cpu", "dtype": "float32", "onnx": str(self.onnx_path)}


class TrtStepBackend:
    """A TensorRT engine of ``asr_stream_step`` (FP32/FP16/INT8 as built), driven with torch CUDA tensors.

    The engine must have an optimization profile covering the batch sizes and the chunk length used. Inputs and
    outputs are bound by name with ``set_tensor_address``; outputs are allocated once per batch size.
    """

    name = "trt"

    def __init__(self, plan_path: str | Path):
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise EngineLoadError("--backend trt needs the `tensorrt` package (pip install tensorrt from "
                                  "NVIDIA's index) on a machine with a supported GPU") from exc
        if not torch.cuda.is_available():
            raise EngineLoadError("--backend trt needs a CUDA GPU; use --backend torch or ort here")
        plan_path = Path(plan_path)
        if not plan_path.is_file():
            raise EngineLoadError(f"engine {plan_path} does not exist: build it with `speechtrt build --model "
                                  "asr-stream`")
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise EngineLoadError(f"{plan_path} does not deserialize with TensorRT {trt.__version__} on "
                                  f"{torch.cuda.get_device_name()}: rebuild it for this GPU and TensorRT version")
        self.context = self.engine.create_execution_context()
        self.device = torch.device("cuda")
        self.state_dtype = torch.float32
        self.plan_path = plan_path
        self._outputs: dict[tuple, dict[str, torch.Tensor]] = {}

    def zero_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {k: torch.zeros([d if d >= 0 else batch for d in self.engine.get_tensor_shape(k)], device=self.device)
                for k in STATE_NAMES}  # -1 marks the dynamic batch axis

    def step(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ctx = self.context
        for name in INPUT_NAMES:
            t = feeds[name].contiguous()
            feeds[name] = t
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        key = tuple(feeds["features"].shape)
        if key not in self._outputs:
            self._outputs[key] = {n: torch.empty(tuple(ctx.get_tensor_shape(n)), device=self.device,
                                                 dtype=torch.float32) for n in OUTPUT_NAMES}
        outs = self._outputs[key]
        for name, t in outs.items():
            ctx.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.plan_path} failed for input shape {key}")
        stream.synchronize()
        return dict(outs)

    def offline(self, features: torch.Tensor) -> torch.Tensor:
        state = self.zero_state(features.shape[0])
        # The engine's chunk profile bounds T; longer utterances run as consecutive full chunks.
        max_t = self.engine.get_tensor_profile_shape("features", 0)[2][1]
        max_t -= max_t % 4
        outs = []
        for start in range(0, features.shape[1], max_t):
            r = self.step({"features": features[:, start:start + max_t].to(self.device), **state})
            outs.append(r["log_probs"].clone())
            state = {k: r[f"{k}_out"].clone() for k in STATE_NAMES}
        return torch.cat(outs, dim=1)

    def describe(self) -> dict:
        return {"backend": "trt", "device": torch.cuda.get_device_name(), "engine": str(self.plan_path),
                "tensorrt": self._trt.__version__}


def default_onnx_for(model: torch.nn.Module, cache_dir: str | Path) -> Path:
    """Export ``model``'s streaming step to a cache folder keyed by its weights (reused on later runs)."""
    from speechtrt.export.components import component
    from speechtrt.export.onnx import export_component

    digest = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    out = Path(cache_dir) / digest.hexdigest()[:16]
    path = out / "asr_stream_step.onnx"
    if not path.is_file():
        export_component(component("asr_stream_step"), model, out, check=False)
    return path


def make_backend(name: str, model: torch.nn.Module, *, device: str = "cpu", fp16: bool = False,
                 cuda_graphs: bool = False, max_batch: int = 64, chunk_frames: int = 16,
                 onnx_path: str | Path | None = None, engine_path: str | Path | None = None,
                 threads: int | None = None, cache_dir: str | Path = "tmp/cache/stream/onnx") -> StepBackend:
    """Build the backend the CLI names. ``ort`` exports ``model`` when no ``onnx_path`` is given."""
    if name == "torch":
        return TorchStepBackend(model, device=device, fp16=fp16, cuda_graphs=cuda_graphs, max_batch=max_batch,
                                chunk_frames=chunk_frames)
    if name == "ort":
        return OrtStepBackend(onnx_path or default_onnx_for(model, cache_dir), threads=threads)
    if name == "trt":
        if engine_path is None:
            raise InputError("--backend trt needs --engine PATH (an asr_stream_step plan built by `speechtrt build`)")
        return TrtStepBackend(engine_path)
    raise InputError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
