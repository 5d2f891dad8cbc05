"""Variants: each checkpoint × backend × precision, made by the pipeline and opened by the runtime.

A variant opens in the two steps every job uses: :func:`speechtrt.pipeline.ensure_artifact` makes what is missing
from *this checkpoint's* weights (export → ModelOpt FP16 / INT8 graph or ONNX Runtime's own int8 graph → TensorRT
plan for the GPU present), calibrated on the development set (never the test set); then
:func:`speechtrt.runtime.open.open_runner` opens it. :class:`CTCForward` turns the runner into the call eval's loops
make. A pair that cannot run here raises :class:`BackendUnavailable` with the reason, which goes into the report.

* torch: FP32; INT8 = dynamic quantization of LSTM and Linear weights (CPU); FP16 on CUDA only.
* ort: FP32 = the exported graph; INT8 = static QDQ with calibrated activation ranges plus dynamically quantized
  LSTM weights (:mod:`speechtrt.quantize.ort_int8`), or dynamic INT8 when no calibration set is given;
  FP16 = the ModelOpt AutoCast graph (LSTMs kept FP32), which needs a calibration set.
* trt: a plan of the checkpoint compiled in the run for the GPU present, with the profile sized to the run's
  largest batch; without a CUDA GPU the variant is listed as not run.

The streaming model runs its step graph once over the whole utterance from zero state, which equals its offline
pass. ORT/TRT graphs compute only the decoders' classes when the development set shows it is safe
(:func:`classifier_trim`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.asr.eval.config import TRIM_TOLERANCE_NATS
from speechtrt.asr.eval.inputs import Prepared, buckets_of, pad_batch
from speechtrt.asr.lm import SEARCH_COLUMNS
from speechtrt.errors import InputError, SpeechTRTError
from speechtrt.export.components import Component, DimRange, component
from speechtrt.models.asr import frontend_lengths
from speechtrt.models.audio import FEATURES
from speechtrt.pipeline import ensure_artifact
from speechtrt.runtime.open import Artifacts, graph_path, open_runner
from speechtrt.runtime.runner import Runner
from speechtrt.vocab import STREAM_COMPONENT, check_precision

Feeds = list[dict[str, np.ndarray]]


class BackendUnavailable(Exception):
    """A backend/precision pair that cannot run here; the message says why (it goes into the report)."""


def _first_line(exc: Exception, limit: int = 300) -> str:
    return (str(exc).splitlines() or [exc.__class__.__name__])[0][:limit]


# ---------------------------------------------------------------- the call eval makes


@dataclass
class CTCForward:
    """A :class:`~speechtrt.runtime.runner.Runner` of an ASR graph seen as eval's call:
    ``(features [B, T, 80] float32, lengths [B] int64) -> (log_probs [B, T', V] float32, out_lengths [B] int64)``.

    ``zero_state`` (the streaming step graph) gives the start state of B rows. ``columns``: the token id of each
    output column when the classifier is trimmed (None: column = token id).
    """

    runner: Runner
    zero_state: Callable[[int], dict[str, torch.Tensor]] | None = None
    columns: np.ndarray | None = None

    def __call__(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(features)
        if self.zero_state is None:
            feeds = {"features": x, "feature_lengths": torch.from_numpy(lengths)}
        else:
            feeds = {"features": x, **self.zero_state(x.shape[0])}
        device = self.runner.device
        if device.type != "cpu":
            feeds = {k: v.to(device) for k, v in feeds.items()}
        out = self.runner.infer(feeds)
        # .cpu() copies out of buffers a runner reuses (TensorRT) before its next call
        log_probs = out["log_probs"].float().cpu().numpy()
        if self.zero_state is None:
            out_lengths = out["output_lengths"].cpu().numpy()
        else:
            out_lengths = frontend_lengths(torch.from_numpy(lengths)).numpy()
        return log_probs, np.asarray(out_lengths, dtype=np.int64)

    def close(self) -> None:
        self.runner.close()


# ---------------------------------------------------------------- the model under test


def model_component(model: torch.nn.Module) -> Component:
    """The exported graph of ``model``: its size's component, with the classifier's width as the model has it
    (narrower after :func:`~speechtrt.models.asr.trim_classifier`)."""
    comp = component(STREAM_COMPONENT if model.config.size == "stream" else f"asr_{model.config.size}")
    width = model.classifier.out_features
    outputs = tuple(dataclasses.replace(o, shape=(*o.shape[:-1], width)) if o.name == "log_probs" else o
                    for o in comp.outputs)
    return dataclasses.replace(comp, outputs=outputs)


@dataclass
class EvaluatedModel:
    """One checkpoint as this run opens it. torch variants run ``model``; ORT/TRT variants run graphs of
    ``graph_model`` (its classifier trimmed to ``columns`` when allowed), made under ``artifacts`` (this run's
    folder: graphs calibrated on this run's development set are never reused by another run)."""

    name: str
    model: torch.nn.Module
    graph_model: torch.nn.Module
    columns: np.ndarray | None
    artifacts: Artifacts

    @property
    def streaming(self) -> bool:
        return self.model.config.size == "stream"

    @classmethod
    def create(cls, name: str, model: torch.nn.Module, workdir: Path, columns=None) -> "EvaluatedModel":
        from speechtrt.models.asr import trim_classifier

        graph_model = model if columns is None else trim_classifier(model, columns)
        cols = None if columns is None else np.asarray(columns, dtype=np.int64)
        artifacts = Artifacts(onnx_dir=workdir, engine_dir=workdir / "engines", model=graph_model, model_name=name)
        return cls(name, model, graph_model, cols, artifacts)


@dataclass(frozen=True)
class VariantOptions:
    """What every variant of a run shares: ORT threads, development-set calibration batches (padded features;
    None without a development set) and the largest batch, (rows, frames), a TensorRT profile must cover."""

    threads: int = 1
    calibration: list[np.ndarray] | None = None
    max_shape: tuple[int, int] = (64, 3000)


def open_variant(subject: EvaluatedModel, backend: str, precision: str, options: VariantOptions) -> CTCForward:
    """The variant ``backend``/``precision`` of ``subject``, ready to run; :class:`BackendUnavailable` with the
    reason when this pair cannot run here."""
    try:
        check_precision(precision, backend, None)
    except InputError as exc:
        raise BackendUnavailable(str(exc)) from exc
    zero_state = subject.model.initial_state if subject.streaming else None
    if backend == "torch":
        device = _torch_device(precision)
        runner = open_runner(model_component(subject.model), "torch", precision, device,
                             Artifacts(model=subject.model, model_name=subject.name))
        return CTCForward(runner, zero_state)
    device = _trt_device() if backend == "trt" else "cpu"
    comp = model_component(subject.graph_model)
    path = make_artifact(comp, backend, precision, subject.artifacts, options.calibration, options.max_shape)
    if backend == "ort" and precision == "fp16":
        _check_ort_runs(path, comp, subject.graph_model)
    try:
        runner = open_runner(comp, backend, precision, device, subject.artifacts, threads=options.threads)
    except SpeechTRTError as exc:
        raise BackendUnavailable(f"cannot open the {backend} {precision} {comp.name}: {_first_line(exc)}") from exc
    forward = CTCForward(runner, zero_state, subject.columns)
    try:  # a graph the backend has no kernel for fails here, not in the timed run
        forward(np.zeros((1, 64, FEATURES.n_mels), np.float32), np.array([64], np.int64))
    except Exception as exc:
        forward.close()
        raise BackendUnavailable(f"{backend} cannot run the {precision} graph: {_first_line(exc, 200)}") from exc
    return forward


def _torch_device(precision: str) -> str:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision in ("fp16", "bf16") and device == "cpu":
        raise BackendUnavailable(f"torch {precision.upper()} needs a CUDA GPU (CPU LSTM kernels have no fast "
                                 f"{precision.upper()} path)")
    if precision == "int8" and device != "cpu":
        raise BackendUnavailable("torch dynamic INT8 quantization runs on the CPU only")
    return device


def _trt_device() -> str:
    from speechtrt.engines.arch import arch_for_capability, current_device

    gpu = current_device() if torch.cuda.is_available() else None
    if gpu is None:
        raise BackendUnavailable("TensorRT plans run on a CUDA GPU and none is present here (`speechtrt build` "
                                 "still compiles them on a CPU with TensorRT-RTX)")
    if arch_for_capability(gpu.major, gpu.minor) is None:
        raise BackendUnavailable(f"no TensorRT target is listed for {gpu.name} ({gpu.sm})")
    return "cuda"


# ---------------------------------------------------------------- artifacts


def calibration_feeds(comp: Component, model: torch.nn.Module, batches: list[np.ndarray]) -> Feeds:
    """The graph's input feeds for each padded calibration batch (every row full length; the streaming step graph
    from zero state)."""
    feeds = []
    for x in batches:
        if comp.name == STREAM_COMPONENT:
            feeds.append({"features": x, **{k: v.numpy() for k, v in model.initial_state(x.shape[0]).items()}})
        else:
            feeds.append({"features": x, "feature_lengths": np.full((x.shape[0],), x.shape[1], np.int64)})
    return feeds


def trt_shapes(comp: Component, max_shape: tuple[int, int]) -> tuple[DimRange, DimRange]:
    """The TensorRT profile of a run: 1 … ``max_shape`` (rows, frames), the largest batch it sends."""
    rows, frames = max(1, max_shape[0]), max(4, max_shape[1])
    time_dim = "chunk" if comp.name == STREAM_COMPONENT else "frames"
    return DimRange("batch", 1, rows, rows), DimRange(time_dim, 1, max(1, frames // 2), frames)


def make_artifact(comp: Component, backend: str, precision: str, artifacts: Artifacts,
                  calibration: list[np.ndarray] | None, max_shape: tuple[int, int] = (64, 3000),
                  gpu: str | None = None) -> Path:
    """The graph (ort) or plan (trt, for ``gpu`` or the GPU present) of ``artifacts.model`` at ``precision``,
    made through :func:`~speechtrt.pipeline.ensure_artifact`. ModelOpt graphs (FP16 both backends, INT8 for
    TensorRT) need ``calibration``; ORT INT8 is static with it and dynamic without."""
    feeds = calibration_feeds(comp, artifacts.model, calibration) if calibration else None
    trt = backend == "trt"
    if not feeds and (precision == "fp16" or (trt and precision == "int8")):
        target = "a TensorRT" if trt else "the ONNX Runtime"
        raise BackendUnavailable(f"{target} {precision.upper()} graph is calibrated (ModelOpt): give a "
                                 "development set (--tune-on or --calib-manifest)")
    try:
        if backend == "ort" and precision == "int8" and not feeds:
            _ensure_dynamic_int8(comp, artifacts)
        shapes = trt_shapes(comp, max_shape) if trt else ()
        return ensure_artifact(comp, precision, backend, artifacts, calibration=feeds, gpu=gpu, shapes=shapes)
    except SpeechTRTError as exc:
        what = "TensorRT plan" if trt else "ONNX Runtime graph"
        raise BackendUnavailable(f"cannot make the {precision} {what} of {comp.name}: {_first_line(exc)}") from exc


def _ensure_dynamic_int8(comp: Component, artifacts: Artifacts) -> None:
    """ORT INT8 without a calibration set: the dynamic form (INT8 weights, activations quantized per call)."""
    from speechtrt.pipeline import made_by_older_recipe
    from speechtrt.quantize.ort_int8 import make_ort_int8

    ensure_artifact(comp, "fp32", "ort", artifacts)
    graph = graph_path(artifacts, comp.name, "int8", "ort")
    if not graph.is_file() or made_by_older_recipe(graph, "int8", "ort"):
        make_ort_int8(comp, artifacts.onnx_dir, None, mode="dynamic")


def _check_ort_runs(path: Path, comp: Component, model: torch.nn.Module) -> None:
    """ONNX Runtime's CPU kernels crash the process on some FP16 graphs: try it in a child process first."""
    from speechtrt.runtime.ort import ort_runs

    x = np.zeros((1, 64, FEATURES.n_mels), np.float32)
    if not ort_runs(path, calibration_feeds(comp, model, [x])[0]):
        raise BackendUnavailable(f"ONNX Runtime (CPU) cannot run the FP16 graph {path.name} (it failed in a child "
                                 "process)")


# ---------------------------------------------------------------- classifier trimming


def classifier_trim(model: torch.nn.Module, dev: list[Prepared] | None, source: str | None, enabled: bool,
                    batch_frames: int) -> dict:
    """Whether ORT/TRT variants of ``model`` compute only the decoders' classes (blank + alphabet), decided on the
    development set: allowed when the torch model puts at most :data:`TRIM_TOLERANCE_NATS` of log-mass outside them
    on every dev frame (then no kept log-probability moves by more). Never decided on the test set."""
    from speechtrt.models.asr import dropped_log_mass

    width = model.classifier.out_features
    entry = {"classes": width, "kept": len(SEARCH_COLUMNS), "tolerance_nats": TRIM_TOLERANCE_NATS, "trimmed": False}
    if not enabled:
        return {**entry, "note": f"all {width} classes computed (--full-classifier, or no ORT/TRT variant)"}
    if not dev:
        return {**entry, "note": f"all {width} classes computed: trimming is decided on a development set "
                                 "(--tune-on or --calib-manifest) and none was given"}
    batches = [pad_batch([dev[i].features for i in ids]) for ids in buckets_of(dev, batch_frames)]
    mass = dropped_log_mass(model, batches, SEARCH_COLUMNS)
    trimmed = mass <= TRIM_TOLERANCE_NATS
    verdict = (f"ORT/TRT compute {len(SEARCH_COLUMNS)} of {width} classes" if trimmed
               else f"all {width} classes computed")
    return {**entry, "trimmed": trimmed, "dropped_log_mass_nats": mass, "measured_on": source,
            "note": f"{verdict} (largest log-mass outside the decoders' classes on {source}: {mass:.2g} nats; "
                    f"tolerance {TRIM_TOLERANCE_NATS:g})"}
