"""Backends that run one batched step of the streaming ASR model: ``step(feeds) -> outputs``.

The streaming engine talks to every backend through the names of the exported ``asr_stream_step`` graph:
inputs ``features [B, T, 80]``, ``ctx1``, ``ctx2``, ``h``, ``c``; outputs ``log_probs [B, ceil(T/4), V]``,
``ctx1_out``, ``ctx2_out``, ``h_out``, ``c_out``. Tensors are torch tensors on the backend's ``device``.

* ``torch``: the PyTorch module through :class:`~speechtrt.runtime.runner.TorchRunner` on ``cpu`` or ``cuda``
  (optionally FP16 on CUDA, and CUDA graphs captured per batch-size bucket with static input/output buffers,
  batches padded up to the bucket).
* ``ort``: the exported graph through :class:`~speechtrt.runtime.ort.OrtRunner` (I/O binding; CPU tensors are
  bound in place).
* ``trt``: a TensorRT / TensorRT-RTX plan through :class:`~speechtrt.runtime.trt.TrtRunner`, which refuses a plan
  that does not match its build manifest (missing, truncated, corrupt, another TensorRT version, another GPU).

Outputs of :meth:`StepBackend.step` may be buffers the backend reuses (CUDA-graph outputs, TensorRT context
buffers): they are valid until the backend's next ``step``. The engine consumes them before that (argmax to host,
``index_copy_`` of the new state into its slots). ``offline(features)`` runs a whole utterance from the start state
and returns a tensor the caller owns: the reference a streamed transcript must equal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import torch

from speechtrt.errors import EngineLoadError, InputError
from speechtrt.runtime.runner import Runner, TorchRunner

COMPONENT = "asr_stream_step"
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


def offline_in_chunks(backend: StepBackend, features: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
    """Log-probs ``[B, ceil(T/4), V]`` of whole utterances ``features [B, T, 80]`` from the zero state.

    With ``chunk_frames`` (a multiple of 4, the front end's stride) the utterance runs as consecutive chunks with the
    state carried across, as a backend whose shapes are bounded (a TensorRT profile) must; the model is causal, so
    this equals one pass. Each chunk's outputs are copied before the next step: a backend may reuse its output
    buffers, and feeding such a buffer back as the next input would alias an input with an output.
    """
    features = features.to(backend.device)
    state = backend.zero_state(features.shape[0])
    if chunk_frames is None or features.shape[1] <= chunk_frames:
        return backend.step({"features": features, **state})["log_probs"].clone()
    if chunk_frames <= 0 or chunk_frames % 4:
        raise InputError(f"offline chunks of {chunk_frames} frames: the model needs a positive multiple of 4")
    outs = []
    for start in range(0, features.shape[1], chunk_frames):
        r = backend.step({"features": features[:, start:start + chunk_frames].contiguous(), **state})
        outs.append(r["log_probs"].clone())
        state = {k: r[f"{k}_out"].clone() for k in STATE_NAMES}
    return torch.cat(outs, dim=1)


class TorchStepBackend:
    """The PyTorch :class:`StreamingASRModel` as a step backend.

    The eager path is a :class:`~speechtrt.runtime.runner.TorchRunner` of ``asr_stream_step`` (it casts features to
    the backend's dtype; on CUDA or in FP16 it runs a copy of ``model``, leaving the caller's model untouched). On
    CUDA with ``cuda_graphs`` each batch-size bucket (powers of two up to ``max_batch``) is captured once as a CUDA
    graph of the same module over static buffers; a batch of ``B`` streams is copied into the smallest bucket
    ``>= B`` (the padded rows are zero state and zero features, and their outputs are ignored). The chunk length is
    fixed per engine, so one graph per bucket covers every step. Graph outputs are the static buffers, valid until
    the next step.
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "cpu", fp16: bool = False, cuda_graphs: bool = False,
                 max_batch: int = 64, chunk_frames: int = 16):
        from speechtrt.export.components import component

        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
        if fp16 and self.device.type != "cuda":
            raise InputError("FP16 streaming needs --device cuda (CPU kernels run FP32)")
        self.runner = TorchRunner(component(COMPONENT), model, self.device, "fp16" if fp16 else "fp32")
        self.dtype = self.state_dtype = self.runner.dtype
        self.module = self.runner.module  # forward(features, ctx1, ctx2, h, c) -> OUTPUT_NAMES
        self.model = self.module.model
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.max_batch = max_batch
        self.chunk_frames = chunk_frames
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, dict, dict]] = {}

    def _bucket(self, batch: int) -> int:
        b = 1
        while b < batch:
            b *= 2
        return min(b, max(self.max_batch, batch))

    def _graph_for(self, bucket: int):
        if bucket not in self._graphs:
            static_in = {"features": torch.zeros(bucket, self.chunk_frames, self.model.config.input_dim,
                                                 device=self.device, dtype=self.dtype),
                         **self.zero_state(bucket)}
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):  # warm-up on a side stream, as CUDA graph capture requires
                    self.module(*(static_in[k] for k in INPUT_NAMES))
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = dict(zip(OUTPUT_NAMES, self.module(*(static_in[k] for k in INPUT_NAMES))))
            self._graphs[bucket] = (graph, static_in, static_out)
        return self._graphs[bucket]

    def step(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch, frames = feeds["features"].shape[:2]
        if not self.cuda_graphs or frames != self.chunk_frames:
            return self.runner.infer(feeds)
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
        return {k: v.to(device=self.device, dtype=self.dtype) for k, v in self.model.initial_state(batch).items()}

    def offline(self, features: torch.Tensor) -> torch.Tensor:
        state = self.zero_state(features.shape[0])
        return self.runner.infer({"features": features.to(self.device), **state})["log_probs"]

    def describe(self) -> dict:
        return {"backend": "torch", "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "cuda_graphs": self.cuda_graphs}


class _RunnerStepBackend:
    """A step backend over a :class:`~speechtrt.runtime.runner.Runner` of ``asr_stream_step``.

    ``step`` hands the engine the runner's outputs without copying them: a runner may return views of buffers it
    reuses until its next call (TensorRT does), and the engine consumes each step's outputs before the next one.
    ``offline`` copies (see :func:`offline_in_chunks`).
    """

    name: str
    offline_chunk: int | None = None  # longest chunk one call takes; None: any length

    def __init__(self, runner: Runner):
        if set(runner.input_names) != set(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(runner.output_names):
            source = getattr(runner, "path", runner.component)
            raise EngineLoadError(
                f"{source} has inputs {list(runner.input_names)} and outputs {list(runner.output_names)}, expected "
                f"{list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}: export (and build) the {COMPONENT} component with "
                "`speechtrt export --model asr-stream`")
        self.runner = runner
        self.device = runner.device
        self.state_dtype = runner.dtype_of("h")
        self._state_shapes: dict[str, list] = {}  # per state input; a non-int or negative entry is the batch axis

    def step(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # on CUDA, run on the stream the engine produced the inputs on and consumes the outputs on
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        return self.runner.infer(feeds, stream=stream)

    def zero_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {k: torch.zeros([d if isinstance(d, int) and d >= 0 else batch for d in shape], device=self.device,
                               dtype=self.state_dtype) for k, shape in self._state_shapes.items()}

    def offline(self, features: torch.Tensor) -> torch.Tensor:
        return offline_in_chunks(self, features, self.offline_chunk)


class OrtStepBackend(_RunnerStepBackend):
    """An ``asr_stream_step`` ONNX graph in an :class:`~speechtrt.runtime.ort.OrtRunner`.

    The runner binds its outputs without preallocated buffers, so ONNX Runtime hands back new arrays on every call.
    """

    name = "ort"

    def __init__(self, runner):
        super().__init__(runner)
        self._state_shapes = {i.name: list(i.shape) for i in runner.session.get_inputs() if i.name in STATE_NAMES}

    @classmethod
    def open(cls, onnx_path: str | Path, device: str = "cpu", threads: int | None = None) -> "OrtStepBackend":
        from speechtrt.runtime.ort import OrtRunner

        path = Path(onnx_path)
        if not path.is_file():
            raise InputError(f"ONNX graph {path} does not exist: run `speechtrt export --model asr-stream`")
        return cls(OrtRunner(path, device=device, threads=threads))

    def describe(self) -> dict:
        return {"backend": "ort", "device": str(self.device), "dtype": str(self.state_dtype).removeprefix("torch."),
                "onnx": str(self.runner.path), "precision": self.runner.precision}


class TrtStepBackend(_RunnerStepBackend):
    """An ``asr_stream_step`` plan (FP32/FP16/INT8 as built) in a :class:`~speechtrt.runtime.trt.TrtRunner`.

    The runner checks the plan against its build manifest before deserializing it. The engine's optimization
    profile must cover the batch sizes and chunk length used; ``offline`` runs longer utterances as consecutive
    chunks of the profile's longest chunk. State is kept in the engine's state input dtype.
    """

    name = "trt"

    def __init__(self, runner):
        super().__init__(runner)
        self._state_shapes = {k: list(runner.engine.get_tensor_shape(k)) for k in STATE_NAMES}  # -1: the batch
        max_chunk = runner.max_shapes["features"][1]
        self.offline_chunk = max_chunk - max_chunk % 4

    @classmethod
    def open(cls, plan_path: str | Path, device: str = "cuda") -> "TrtStepBackend":
        from speechtrt.runtime.trt import TrtRunner

        return cls(TrtRunner(plan_path, device))

    @classmethod
    def from_engine_dir(cls, engine_dir: str | Path, precision: str = "fp32", device: str = "cuda"):
        """The plan ``<engine_dir>/<sm_XX>/asr-stream/asr_stream_step.<precision>.plan`` for the GPU present."""
        from speechtrt.runtime.trt import make_trt_runner

        return cls(make_trt_runner(engine_dir, COMPONENT, precision, device))

    def describe(self) -> dict:
        trt = self.runner.trt
        return {"backend": "trt", "device": torch.cuda.get_device_name(self.device), "engine": str(self.runner.path),
                "precision": self.runner.precision,
                "tensorrt": f"{trt.__name__} {getattr(trt, '__version__', 'unknown')}"}


def default_onnx_for(model: torch.nn.Module, cache_dir: str | Path) -> Path:
    """Export ``model``'s streaming step to a cache folder keyed by its weights (reused on later runs)."""
    from speechtrt.export.components import component
    from speechtrt.export.onnx import export_component

    digest = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    out = Path(cache_dir) / digest.hexdigest()[:16]
    path = out / f"{COMPONENT}.onnx"
    if not path.is_file():
        export_component(component(COMPONENT), model, out, check=False)
    return path


def make_backend(name: str, model: torch.nn.Module, *, device: str = "cpu", fp16: bool = False,
                 cuda_graphs: bool = False, max_batch: int = 64, chunk_frames: int = 16,
                 onnx_path: str | Path | None = None, engine_path: str | Path | None = None,
                 engine_dir: str | Path | None = None, precision: str = "fp32", threads: int | None = None,
                 cache_dir: str | Path = "tmp/cache/stream/onnx") -> StepBackend:
    """Build the backend the CLI names.

    ``ort`` exports ``model`` when no ``onnx_path`` is given. ``trt`` opens ``engine_path`` when given, else the
    ``precision`` plan for the GPU present under ``engine_dir`` (laid out as ``speechtrt build`` writes it); it runs
    on ``device`` when that is a CUDA device, else on ``cuda``.
    """
    if name == "torch":
        return TorchStepBackend(model, device=device, fp16=fp16, cuda_graphs=cuda_graphs, max_batch=max_batch,
                                chunk_frames=chunk_frames)
    if name == "ort":
        return OrtStepBackend.open(onnx_path or default_onnx_for(model, cache_dir), device=device, threads=threads)
    if name == "trt":
        gpu = device if str(device).startswith("cuda") else "cuda"
        if engine_path is not None:
            return TrtStepBackend.open(engine_path, gpu)
        if engine_dir is not None:
            return TrtStepBackend.from_engine_dir(engine_dir, precision, gpu)
        raise InputError("--backend trt needs --engine PATH or --engine-dir DIR (an asr_stream_step plan built by "
                         "`speechtrt build --model asr-stream`)")
    raise InputError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
