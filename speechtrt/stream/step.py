"""The streaming model step: one batched ``asr_stream_step`` call over any :class:`~speechtrt.runtime.runner.Runner`.

Every backend is opened the one way every job opens a component: :func:`speechtrt.pipeline.ensure_artifact` makes a
missing graph or plan, :func:`speechtrt.runtime.open.open_runner` opens it (the torch CUDA-graph path is
``open_runner(..., cuda_graphs=True)``). What the streaming core needs on top of a runner is small, so it lives in
one adapter, :class:`StepModel`:

* the names of the exported graph — inputs ``features [B, T, 80]``, ``ctx1``, ``ctx2``, ``h``, ``c``; outputs
  ``log_probs [B, ceil(T/4), V]``, ``ctx1_out``, ``ctx2_out``, ``h_out``, ``c_out`` — checked when opened, so a graph
  or plan of another component is refused with the command that makes the right one;
* the zero (start) state, shaped from the component spec;
* ``offline(features)``, the whole-utterance pass from the zero state that a streamed transcript must equal, run as
  consecutive chunks when the runner's shapes are bounded (a TensorRT profile).

Outputs of :meth:`StepModel.step` may be buffers the runner reuses (CUDA-graph outputs, TensorRT context buffers),
valid until its next call; the core consumes them before that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from speechtrt.errors import EngineLoadError, InputError
from speechtrt.export.components import component as component_spec
from speechtrt.models.audio import FEATURES
from speechtrt.runtime.graphs import GraphedRunner
from speechtrt.runtime.open import Artifacts, open_runner
from speechtrt.runtime.runner import Runner
from speechtrt.vocab import STREAM_COMPONENT, check_backend, check_precision

COMPONENT = STREAM_COMPONENT
INPUT_NAMES = ("features", "ctx1", "ctx2", "h", "c")
STATE_NAMES = ("ctx1", "ctx2", "h", "c")
OUTPUT_NAMES = ("log_probs", "ctx1_out", "ctx2_out", "h_out", "c_out")
SUBSAMPLING = 4  # feature frames per model output frame (the front end's stride)
OUTPUT_SHIFT_S = SUBSAMPLING * FEATURES.hop / FEATURES.sample_rate  # seconds per output frame (40 ms)

_SPEC = component_spec(COMPONENT)
STATE_SHAPES = {s.name: s.shape for s in _SPEC.inputs if s.name in STATE_NAMES}  # "batch" marks the batch axis
STATE_BATCH_DIMS = {name: shape.index("batch") for name, shape in STATE_SHAPES.items()}  # h/c: [L, B, H] -> 1


@dataclass(frozen=True)
class StepConfig:
    """Where and how the step runs. ``onnx_dir`` None: a cache folder under ``cache_dir`` keyed by the model's
    weights (exported on first use). ``make_missing`` False refuses a missing graph or plan (with the command that
    makes it) instead of making it."""

    backend: str = "torch"
    precision: str = "fp32"
    device: str = "cpu"
    cuda_graphs: bool = False
    max_batch: int = 64
    threads: int | None = None
    onnx_dir: Path | None = None
    engine_dir: Path = Path("engines")
    cache_dir: Path = Path("tmp/cache/stream/onnx")
    make_missing: bool = True

    def __post_init__(self):
        check_backend(self.backend)
        check_precision(self.precision, self.backend)
        dev = str(self.device)
        if dev != "cpu" and not (dev == "cuda" or dev.startswith("cuda:") and dev[5:].isdigit()):
            raise InputError(f"unknown device {dev!r} (--device): use cpu, cuda or cuda:N")
        if self.backend == "torch" and self.precision in ("fp16", "bf16") and dev == "cpu":
            raise InputError(f"{self.precision} streaming on torch needs --device cuda (CPU kernels run fp32; "
                             "int8 is the CPU's reduced precision)")
        if self.max_batch < 1:
            raise InputError(f"max_batch={self.max_batch}: at least one stream per step")
        if self.threads is not None and self.threads < 0:
            raise InputError(f"--threads {self.threads}: give 0 (library default) or a positive count")


def zero_state(batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's start state for ``batch`` streams (all zeros), shaped from the component spec."""
    return {name: torch.zeros([batch if d == "batch" else d for d in shape], device=device, dtype=dtype)
            for name, shape in STATE_SHAPES.items()}


class StepModel:
    """``asr_stream_step`` on one runner: :meth:`step`, :meth:`zero_state`, :meth:`offline`, :meth:`describe`.

    Construct with :meth:`open`. ``offline_runner`` (default: the step runner) runs the reference pass; the torch
    CUDA-graph path gives the eager runner there, so a reference utterance captures no graph of its length.
    """

    def __init__(self, runner: Runner, config: StepConfig = StepConfig(), offline_runner: Runner | None = None):
        if set(runner.input_names) != set(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(runner.output_names):
            source = getattr(runner, "path", runner.component)
            raise EngineLoadError(
                f"{source} has inputs {list(runner.input_names)} and outputs {list(runner.output_names)}, expected "
                f"{list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}: export (and build) the {COMPONENT} component with "
                "`speechtrt export --model asr-stream`")
        self.runner = runner
        self.config = config
        self.device = torch.device(runner.device)
        self.state_dtype = runner.dtype_of("h")
        self._offline_runner = offline_runner or runner
        max_shapes = getattr(self._offline_runner, "max_shapes", None)  # a TensorRT profile bounds the chunk
        longest = max_shapes["features"][1] if max_shapes else None
        self.offline_chunk = longest - longest % SUBSAMPLING if longest else None

    @property
    def name(self) -> str:
        return self.runner.backend

    @classmethod
    def open(cls, config: StepConfig, model: torch.nn.Module | None = None) -> "StepModel":
        """Make (if allowed) and open the step of ``model`` as ``config`` says."""
        artifacts = _artifacts(config, model)
        if config.make_missing and _needs_making(config, artifacts):
            from speechtrt.pipeline import ensure_artifact

            ensure_artifact(COMPONENT, config.precision, config.backend, artifacts)
        options = dict(threads=config.threads, cuda_graphs=config.cuda_graphs, max_batch=config.max_batch)
        runner = open_runner(COMPONENT, config.backend, config.precision, config.device, artifacts, **options)
        offline = None
        if isinstance(runner, GraphedRunner):  # the reference pass runs eager: no graph per utterance length
            offline = open_runner(COMPONENT, config.backend, config.precision, config.device, artifacts)
        return cls(runner, config, offline)

    def step(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One batched step: ``feeds`` holds :data:`INPUT_NAMES`; the result holds :data:`OUTPUT_NAMES`."""
        # on CUDA, run on the stream the core produced the inputs on and consumes the outputs on
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        return self.runner.infer(feeds, stream=stream)

    def zero_state(self, batch: int) -> dict[str, torch.Tensor]:
        return zero_state(batch, self.device, self.state_dtype)

    def offline(self, features: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """Log-probs ``[B, ceil(T/4), V]`` of whole utterances ``features [B, T, 80]`` from the zero state.

        With ``chunk_frames`` (default: the longest chunk a bounded runner takes) the utterance runs as consecutive
        chunks with the state carried across; the model is causal, so this equals one pass. Each chunk's outputs
        are copied before the next call: a runner may reuse its output buffers, and feeding one back as the next
        input would alias an input with an output. The result is the caller's.
        """
        chunk_frames = chunk_frames or self.offline_chunk
        runner = self._offline_runner
        features = features.to(self.device)
        state = self.zero_state(features.shape[0])
        if chunk_frames is None or features.shape[1] <= chunk_frames:
            return runner.infer({"features": features, **state})["log_probs"].clone()
        if chunk_frames <= 0 or chunk_frames % SUBSAMPLING:
            raise InputError(f"offline chunks of {chunk_frames} frames: the model needs a positive multiple of 4")
        outs = []
        for start in range(0, features.shape[1], chunk_frames):
            r = runner.infer({"features": features[:, start:start + chunk_frames].contiguous(), **state})
            outs.append(r["log_probs"].clone())
            state = {k: r[f"{k}_out"].clone() for k in STATE_NAMES}
        return torch.cat(outs, dim=1)

    def describe(self) -> dict:
        """What ran, for reports: backend, device, precision, dtype and the file or option behind it."""
        c = self.config
        out = {"backend": self.name, "device": str(self.device), "precision": c.precision,
               "dtype": str(self.state_dtype).removeprefix("torch.")}
        if self.name == "torch":
            out["cuda_graphs"] = bool(c.cuda_graphs and self.device.type == "cuda")
        if getattr(self.runner, "path", None) is not None:
            out["onnx" if self.name == "ort" else "engine"] = str(self.runner.path)
        if self.name == "trt":
            trt = self.runner.trt
            out["tensorrt"] = f"{trt.__name__} {getattr(trt, '__version__', 'unknown')}"
        return out

    def close(self) -> None:
        self.runner.close()
        if self._offline_runner is not self.runner:
            self._offline_runner.close()


def _artifacts(config: StepConfig, model: torch.nn.Module | None) -> Artifacts:
    if config.onnx_dir is not None:
        onnx_dir = Path(config.onnx_dir)
    elif model is not None and config.backend != "torch":
        from speechtrt.pipeline import model_artifacts

        onnx_dir = model_artifacts(model, config.cache_dir).onnx_dir
    else:
        onnx_dir = Path(config.cache_dir)
    return Artifacts(onnx_dir=onnx_dir, engine_dir=Path(config.engine_dir), model=model, model_name="asr-stream")


def _needs_making(config: StepConfig, artifacts: Artifacts) -> bool:
    """Whether :func:`ensure_artifact` has work to do. A TensorRT plan that exists is opened as it is (no export or
    calibration on the way); without a GPU, ``open_runner`` gives the clearer refusal."""
    if config.backend != "trt":
        return config.backend == "ort"
    from speechtrt.engines.arch import current_device
    from speechtrt.engines.manifest import plan_path

    gpu = current_device()
    if gpu is None or not torch.cuda.is_available():
        return False
    return not plan_path(artifacts.engine_dir, gpu.sm, artifacts.model_name, COMPONENT, config.precision).is_file()
