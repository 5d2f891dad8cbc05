"""``open_runner``: the one place a :class:`~speechtrt.runtime.runner.Runner` is made.

Every job — the TTS service, the streaming engine, ASR evaluation, fidelity, profiling, the server — asks for a
component on a backend at a precision on a device, from a set of :class:`Artifacts` (where its ONNX graphs and
TensorRT plans live, and the PyTorch model they come from). ``open_runner`` opens what exists and refuses, naming
the command that makes it, what does not; :func:`speechtrt.pipeline.ensure_artifact` is the step before it that
makes a missing graph or plan (export → calibrate → build).

File layout (one rule, :func:`graph_path`): ``<onnx_dir>/<component>.onnx`` (FP32), ``<component>.fp16.onnx`` (FP16,
ModelOpt AutoCast), ``<component>.int8.onnx`` (INT8 Q/DQ from ModelOpt: what TensorRT builds) and
``<component>.int8-ort.onnx`` (INT8 for ONNX Runtime's own int8 kernels; ORT does not fuse the TensorRT Q/DQ form
on a CPU and runs it many times slower than FP32). Plans: ``<engine_dir>/<sm_XX>/<model>/<component>.<precision>.plan``.

A serving process that accepts several backends names them in order; :func:`open_first` tries them, and falls back
only when asked (each failure logged with its reason, the attempts returned), because an engine built for another
GPU is a deployment mistake to fix, not to hide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from speechtrt.errors import EngineLoadError, InputError, SpeechTRTError
from speechtrt.export.components import Component, component as component_spec
from speechtrt.runtime.runner import Runner, TorchRunner
from speechtrt.vocab import BACKENDS, check_backend, check_precision

log = logging.getLogger("speechtrt.runtime")

DEFAULT_ORDER = ("trt", "ort", "torch")


@dataclass(frozen=True)
class Artifacts:
    """Where a model's runnable forms live: the PyTorch module (torch backend, and the source of every export),
    its ONNX graphs and its TensorRT plans. ``model_name`` is the folder its plans sit in under ``engine_dir``
    (default: the component's owner, e.g. ``tts`` or ``asr-stream``)."""

    onnx_dir: Path = Path("out/onnx")
    engine_dir: Path = Path("engines")
    model: torch.nn.Module | None = None
    model_name: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "onnx_dir", Path(self.onnx_dir))
        object.__setattr__(self, "engine_dir", Path(self.engine_dir))


def graph_name(component: str, precision: str, backend: str = "ort") -> str:
    """File name of ``component``'s graph at ``precision`` for ``backend`` (see the module docstring)."""
    if precision == "fp32":
        return f"{component}.onnx"
    if precision == "int8" and backend == "ort":
        return f"{component}.int8-ort.onnx"
    return f"{component}.{precision}.onnx"


def graph_path(artifacts: Artifacts, component: str, precision: str, backend: str = "ort") -> Path:
    return artifacts.onnx_dir / graph_name(component, precision, backend)


def make_hint(component: str, precision: str, backend: str) -> str:
    """The command that makes the missing artifact (``backend`` ``graph``: the ModelOpt graph itself)."""
    from speechtrt.export.components import component as spec

    model = spec(component).model
    if backend == "graph":  # the ModelOpt graph TensorRT builds from
        return f"speechtrt calibrate --model {model} --precision {precision}"
    if backend == "trt":
        flag = {"fp32": "--fp32", "fp16": "--fp16", "int8": "--int8"}.get(precision, "")
        return f"speechtrt build --model {model} {flag}".strip()
    if precision == "fp32":
        return f"speechtrt export --model {model}"
    if precision == "int8" and backend == "ort":
        return f"speechtrt calibrate --model {model} --precision int8 (ONNX Runtime int8 graph)"
    return f"speechtrt calibrate --model {model} --precision {precision}"


def open_runner(component: str | Component, backend: str, precision: str = "fp32",
                device: str | torch.device = "cpu", artifacts: Artifacts = Artifacts(), *,
                threads: int | None = None, profile_prefix: str | None = None, cuda_graphs: bool = False,
                max_batch: int | None = None) -> Runner:
    """A runner of ``component`` on ``backend`` at ``precision`` on ``device``, from ``artifacts``.

    ``component`` is a name, or a :class:`Component` for a graph whose shapes differ from the registry's (a
    trimmed classifier, a user's model). torch: the module in ``artifacts.model`` (fp32; fp16/bf16; int8 = dynamic
    quantization on the CPU), optionally replayed as CUDA graphs per batch bucket (``cuda_graphs``, ``max_batch``).
    ort: the graph file by :func:`graph_path`, ``threads`` intra-op threads, ``profile_prefix`` turns on ORT's
    profiler. trt: the plan for the GPU present, checked against its build manifest. Raises
    :class:`~speechtrt.errors.EngineLoadError` naming the command that makes a missing artifact.
    """
    comp = component if isinstance(component, Component) else component_spec(component)
    check_backend(backend, None)
    check_precision(precision, backend, None)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineLoadError(f"{comp.name} on {device}: CUDA is not available here; use --device cpu")
    if backend == "torch":
        if artifacts.model is None:
            raise InputError(f"the torch backend needs the PyTorch model to run {comp.name}")
        runner = TorchRunner(comp, artifacts.model, device, precision)
        if cuda_graphs and device.type == "cuda":
            from speechtrt.runtime.graphs import GraphedRunner

            return GraphedRunner(runner, comp, max_batch or 64)
        return runner
    if backend == "trt":
        return _open_trt(comp, precision, device, artifacts)
    path = graph_path(artifacts, comp.name, precision, "ort")
    if not path.is_file():
        raise EngineLoadError(f"no {precision} ONNX graph of {comp.name} at {str(path)!r}; make it with "
                              f"`{make_hint(comp.name, precision, 'ort')}` (or pass --onnx-dir)")
    from speechtrt.runtime.ort import OrtRunner

    return OrtRunner(path, device=device, threads=threads, profile_prefix=profile_prefix)


def _open_trt(comp: Component, precision: str, device: torch.device, artifacts: Artifacts) -> Runner:
    from speechtrt.engines.arch import current_device
    from speechtrt.engines.manifest import plan_path
    from speechtrt.runtime.trt import TrtRunner

    gpu = current_device()
    if gpu is None or not torch.cuda.is_available():
        raise EngineLoadError("the trt backend needs a CUDA GPU (none found here); use --backend ort or torch")
    device = device if device.type == "cuda" else torch.device("cuda")
    plan = plan_path(artifacts.engine_dir, gpu.sm, artifacts.model_name or comp.model, comp.name, precision)
    return TrtRunner(plan, device)


@dataclass(frozen=True)
class Attempt:
    backend: str
    ok: bool
    reason: str = ""


def open_first(component: str | Component, backends: tuple[str, ...] = DEFAULT_ORDER, *, precision: str = "fp32",
               device: str | torch.device = "cpu", artifacts: Artifacts = Artifacts(), allow_fallback: bool = False,
               **options) -> tuple[Runner, list[Attempt]]:
    """The first of ``backends`` that opens ``component``; see the module docstring for the fallback rule."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise InputError(f"unknown backend(s) {unknown or list(backends)}: choose from {', '.join(BACKENDS)}")
    name = component.name if isinstance(component, Component) else component
    attempts: list[Attempt] = []
    for i, backend in enumerate(backends):
        try:
            runner = open_runner(component, backend, precision, device, artifacts, **options)
        except SpeechTRTError as exc:
            attempts.append(Attempt(backend, False, str(exc)))
            last = i == len(backends) - 1
            if not allow_fallback or last:
                if attempts[:-1]:
                    tried = "; ".join(f"{a.backend}: {a.reason}" for a in attempts)
                    raise EngineLoadError(f"no backend could run {name} ({tried})") from exc
                raise
            log.warning("%s backend cannot run %s (%s); falling back to %s", backend, name, exc, backends[i + 1])
            continue
        attempts.append(Attempt(backend, True))
        if i:
            log.warning("running %s on the %s backend after %d fallback(s)", name, backend, i)
        return runner, attempts
    raise AssertionError("unreachable")


def graph_opener(onnx_dir: str | Path, threads: int | None = 1):
    """``open_graph(component, precision, probe_feed) -> Runner`` over the graphs in ``onnx_dir`` that TensorRT
    builds from (FP32, and the ModelOpt ``.fp16``/``.int8`` files), for fidelity checks: in ONNX Runtime, or — when
    ``probe_feed`` is given and ORT's CPU kernels crash on the graph in a child process (some FP16 LSTM graphs) —
    in ONNX's reference evaluator. One ORT thread by default: fidelity feeds are small."""
    from speechtrt.runtime.ort import OrtRunner, ReferenceRunner, ort_runs

    artifacts = Artifacts(onnx_dir=Path(onnx_dir))

    def open_graph(component: str, precision: str, probe_feed=None) -> Runner:
        path = graph_path(artifacts, component, precision, "trt")
        if not path.is_file():
            raise EngineLoadError(f"no {precision} graph of {component} at {str(path)!r}; make it with "
                                  f"`{make_hint(component, precision, 'ort' if precision == 'fp32' else 'graph')}`")
        if probe_feed is not None and not ort_runs(path, probe_feed):
            return ReferenceRunner(path)
        return OrtRunner(path, threads=threads)

    return open_graph
