"""Compile one exported graph into a TensorRT plan for one GPU architecture and record what was built.

Precision lives in the graph, not in builder flags: TensorRT 11 and TensorRT-RTX accept only strongly typed
networks, and TensorRT 10 is given the same ``STRONGLY_TYPED`` flag. FP16 comes from casts in
``<component>.fp16.onnx``, INT8 from Q/DQ nodes in ``<component>.int8.onnx``; FP32 is the exported
``<component>.onnx``. So the evidence of a precision is the typed network itself: the data type of every tensor and
the QUANTIZE/DEQUANTIZE layers. A precision that was asked for and is absent from that evidence is a BuildError,
not an FP32 engine under an INT8 name. Where the plan can also be deserialized (TensorRT on the GPU it targets),
the engine inspector's per-layer formats are recorded and checked too.

One optimization profile per engine spans each dynamic dim's ``min/opt/max`` from the graph's sidecar, with
``--shape NAME=MIN:OPT:MAX`` overrides. TensorRT keeps a timing cache per architecture in
``engines/<gpu>/timing.cache``; TensorRT-RTX has none to keep (its timing cache is a no-op that would also need a GPU
at build time).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from speechtrt import __version__
from speechtrt.engines.arch import BuildTarget, DeviceInfo, GpuArch, current_device, resolve_target
from speechtrt.engines.flavour import TrtFlavour, candidate_flavours
from speechtrt.engines.manifest import entry_key, plan_path, update_manifest
from speechtrt.errors import BuildError, InputError
from speechtrt.export.components import Component, DimRange, component
from speechtrt.export.onnx import load_sidecar
from speechtrt.files import check_writable, sha256_file
from speechtrt.vocab import GRAPH_PRECISIONS

TIMING_CACHE_NAME = "timing.cache"
_DETECT = object()

# Progress callback: (what is happening, fraction of this engine done in [0, 1]).
Progress = Callable[[str, float], None]


# ---------------------------------------------------------------- inputs: graph file, shape ranges


def onnx_path_for(onnx_dir: str | Path, component_name: str, precision: str) -> Path:
    """``<dir>/<component>.onnx`` for FP32, ``<dir>/<component>.<precision>.onnx`` (the ModelOpt graph) for FP16
    and INT8: the TensorRT row of :func:`speechtrt.runtime.open.graph_name`'s rule."""
    if precision not in GRAPH_PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: engines are built in {', '.join(GRAPH_PRECISIONS)}")
    suffix = "" if precision == "fp32" else f".{precision}"
    return Path(onnx_dir) / f"{component_name}{suffix}.onnx"


def missing_graph_hint(model: str, precision: str, path: Path) -> str:
    """What is missing and the command that creates it."""
    if precision == "fp32":
        return f"{path} does not exist: export it with `speechtrt export --model {model} --out {path.parent}`"
    return (
        f"{path} does not exist: an {precision.upper()} engine is built from the {precision.upper()} graph that "
        f"calibration writes next to the FP32 one; create it with "
        f"`speechtrt calibrate --model {model} --precision {precision} --onnx-dir {path.parent}`"
    )


def parse_shape_override(text: str) -> DimRange:
    """``batch=1:8:32`` → DimRange("batch", 1, 8, 32); InputError unless ``1 <= min <= opt <= max``."""
    name, sep, ranges = text.partition("=")
    parts = ranges.split(":")
    try:
        if not sep or not name.strip() or len(parts) != 3:
            raise ValueError
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"--shape {text!r} is not NAME=MIN:OPT:MAX with integers, e.g. batch=1:8:32") from None
    if not 1 <= lo <= opt <= hi:
        raise InputError(f"--shape {text!r}: need 1 <= min <= opt <= max, got {lo}, {opt}, {hi}")
    return DimRange(name.strip(), lo, opt, hi)


@dataclass(frozen=True)
class InputProfile:
    """One network input's shapes in the optimization profile."""

    name: str
    dtype: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "min": list(self.min), "opt": list(self.opt),
                "max": list(self.max)}


def profile_from_sidecar(sidecar: dict, overrides: tuple[DimRange, ...] = ()) -> tuple[list[InputProfile], dict]:
    """Input shapes for the profile and the dims they came from, with ``overrides`` replacing declared dims.

    Overrides naming a dim the graph does not have are ignored here (the command checks that each names some graph).
    """
    dims = {n: dict(r) for n, r in sidecar.get("dims", {}).items()}
    for o in overrides:
        if o.name in dims:
            dims[o.name] = {"min": o.min, "opt": o.opt, "max": o.max}
    profiles = []
    for spec in sidecar["inputs"]:
        shapes = {}
        for which in ("min", "opt", "max"):
            shapes[which] = tuple(
                int(d) if isinstance(d, int) else int(dims[d][which]) if d in dims else int(spec[which][i])
                for i, d in enumerate(spec["shape"])
            )
        profiles.append(InputProfile(spec["name"], spec["dtype"], shapes["min"], shapes["opt"], shapes["max"]))
    return profiles, dims


# ---------------------------------------------------------------- precision evidence


@dataclass(frozen=True)
class PrecisionSummary:
    """Which data types a built engine computes in, and where that was read.

    ``source`` is ``network`` (the strongly typed network the plan was compiled from: every layer output and
    network input by data type) or ``engine-inspector`` (the deserialized engine's per-layer output formats).
    ``tensors`` maps TensorRT data type names (FLOAT, HALF, INT8, INT32, INT64, BOOL, ...) to counts.
    """

    source: str
    tensors: dict[str, int]
    layers: int
    quantize_layers: int = 0
    dequantize_layers: int = 0
    cast_layers: int = 0

    def count(self, dtype: str) -> int:
        return self.tensors.get(dtype, 0)

    @property
    def qdq_layers(self) -> int:
        return self.quantize_layers + self.dequantize_layers

    def to_json(self) -> dict:
        return {"source": self.source, "tensors": dict(sorted(self.tensors.items())), "layers": self.layers,
                "quantize_layers": self.quantize_layers, "dequantize_layers": self.dequantize_layers,
                "cast_layers": self.cast_layers}


def network_precision(network) -> PrecisionSummary:
    """Count the typed network's tensors by data type and its Q/DQ and cast layers."""
    tensors: Counter = Counter()
    layer_types: Counter = Counter()
    for i in range(network.num_inputs):
        tensors[network.get_input(i).dtype.name] += 1
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        layer_types[layer.type.name] += 1
        for j in range(layer.num_outputs):
            out = layer.get_output(j)
            if out is not None:
                tensors[out.dtype.name] += 1
    return PrecisionSummary("network", dict(tensors), network.num_layers, layer_types["QUANTIZE"],
                            layer_types["DEQUANTIZE"], layer_types["CAST"])


_INSPECTOR_TYPES = (("int8", "INT8"), ("fp8", "FP8"), ("bf16", "BF16"), ("fp16", "HALF"), ("half", "HALF"),
                    ("int32", "INT32"), ("int64", "INT64"), ("bool", "BOOL"), ("fp32", "FLOAT"), ("float", "FLOAT"))


def inspector_precision(engine_json: str) -> PrecisionSummary:
    """Count layer outputs by data type in the engine inspector's JSON (``Format/Datatype`` strings)."""
    data = json.loads(engine_json)
    layers = data.get("Layers", [])
    tensors: Counter = Counter()
    kinds: Counter = Counter()
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        kinds[str(layer.get("LayerType", "")).lower()] += 1
        for out in layer.get("Outputs", []):
            text = str(out.get("Format/Datatype", "")).lower()
            name = next((t for key, t in _INSPECTOR_TYPES if key in text), "UNKNOWN")
            tensors[name] += 1
    return PrecisionSummary("engine-inspector", dict(tensors), len(layers), kinds["quantize"], kinds["dequantize"],
                            kinds["cast"])


def check_precision(summary: PrecisionSummary, precision: str, what: str) -> None:
    """Raise BuildError when ``summary`` lacks the evidence of ``precision`` (INT8 tensors and Q/DQ, or HALF)."""
    if precision == "int8":
        missing = []
        if summary.count("INT8") == 0:
            missing.append("no INT8 tensors")
        if summary.source == "network" and summary.qdq_layers == 0:
            missing.append("no QUANTIZE/DEQUANTIZE layers")
        if missing:
            raise BuildError(
                f"INT8 was asked for but {what} has {' and '.join(missing)}: the graph is not quantized, so the "
                f"engine would silently run in higher precision. Recreate it with "
                f"`speechtrt calibrate --precision int8`"
            )
    elif precision == "fp16" and summary.count("HALF") == 0:
        raise BuildError(
            f"FP16 was asked for but {what} has no HALF tensors: the graph was not converted, so the engine would "
            f"silently run in FP32. Recreate it with `speechtrt calibrate --precision fp16`"
        )


# ---------------------------------------------------------------- settings and results


@dataclass(frozen=True)
class BuildSettings:
    """How engines are built: for which GPU, into which folder, with which limits and shape overrides."""

    gpu: GpuArch
    engines_dir: Path = Path("engines")
    workspace_mb: int | None = None
    hardware_compat: str = "none"
    shapes: tuple[DimRange, ...] = ()


@dataclass(frozen=True)
class EngineBuildResult:
    component: str
    model: str
    precision: str
    plan: Path
    manifest: Path
    plan_bytes: int
    seconds: float
    summary: PrecisionSummary
    inspected: PrecisionSummary | None
    warnings: tuple[str, ...]
    entry: dict = field(repr=False)


# ---------------------------------------------------------------- the builder


def _make_logger(trt):
    """A TensorRT logger that keeps messages (for error reports) instead of printing them."""

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg):
            self.messages.append((getattr(severity, "name", str(severity)), str(msg)))

    return CollectingLogger()


def _make_progress_monitor(trt, progress: Progress, start: float, span: float):
    """Maps the steps of TensorRT's top-level build phase onto ``progress`` between ``start`` and ``start + span``."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.top: str | None = None
            self.steps = 1
            self.fraction = start
            self.phase = "compiling"

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None and self.top is None:
                self.top, self.steps = phase_name, max(int(num_steps), 1)
            self.phase = f"compiling: {phase_name}"
            progress(self.phase, self.fraction)

        def step_complete(self, phase_name, step):
            if phase_name == self.top:
                self.fraction = start + span * min(int(step) + 1, self.steps) / self.steps
                progress(self.phase, self.fraction)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            pass

    return Monitor()


# Messages TensorRT-RTX logs when it looks for a GPU during an ahead-of-time build on a machine without one.
_NO_GPU_NOISE = ("CUDA driver version is insufficient", "Thread context has not been set", "cudaError 35",
                 "Error reading CUDA GPU properties")


def _clean(message: str, limit: int = 400) -> str:
    """One line of a TensorRT message, without the no-GPU noise an ahead-of-time build appends."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not any(n in ln for n in _NO_GPU_NOISE)]
    text = " ".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _errors(logger, limit: int = 4) -> str:
    lines = [_clean(m, 300) for sev, m in logger.messages
             if sev in ("ERROR", "INTERNAL_ERROR")]
    return " | ".join([ln for ln in lines if ln][:limit])


def _known_parser_issue(text: str) -> str:
    """An explanation for parser failures whose cause is known, appended to the BuildError."""
    if "LSTM" in text and "Half and Float" in text:
        return (". Known TensorRT ONNX-parser limitation: an FP16 LSTM with sequence_lens cannot be imported into a "
                "strongly typed network (the parser masks padded steps with an FP32 zero). Keep LSTM nodes in FP32 "
                "when converting the graph (ModelOpt AutoCast op_types_to_exclude=['LSTM']; quantize "
                "op_types_to_exclude_fp16=['LSTM'])")
    return ""


class EngineBuilder:
    """Builds plans for one target architecture with one installed TensorRT.

    ``flavour`` defaults to the installed TensorRT flavours in order of preference; ``device`` to the GPU present.
    Construction checks the target (BuildError, saying how to get that engine, when no flavour can compile it here).
    """

    def __init__(self, settings: BuildSettings, flavour: TrtFlavour | None = None,
                 device: DeviceInfo | None | object = _DETECT):
        self.settings = settings
        self.device = current_device() if device is _DETECT else device
        self.flavour, self.target = self._choose(flavour)

    def _choose(self, flavour: TrtFlavour | None) -> tuple[TrtFlavour, BuildTarget]:
        """The given flavour, or the first installed one (TensorRT, then TensorRT-RTX) that can reach the target.

        So a machine with both builds sm86 plans with TensorRT-RTX when its own GPU is not an sm86, and a machine
        without a GPU falls back to TensorRT-RTX. When none can, the preferred flavour's BuildError is raised.
        """
        candidates = [flavour] if flavour is not None else candidate_flavours()
        errors = []
        for candidate in candidates:
            try:
                target = resolve_target(self.settings.gpu, candidate.flavour, candidate.trt, self.device,
                                        self.settings.hardware_compat)
            except BuildError as exc:
                errors.append(exc)
                continue
            return candidate, target
        raise errors[0]

    @property
    def gpu(self) -> str:
        return self.settings.gpu.sm

    def timing_cache_path(self) -> Path | None:
        """``engines/<gpu>/timing.cache`` for TensorRT; None for TensorRT-RTX, which has no timing cache."""
        if self.flavour.flavour != "tensorrt":
            return None
        return Path(self.settings.engines_dir) / self.gpu / TIMING_CACHE_NAME

    def build(self, component_name: str | Component, precision: str, onnx_dir: str | Path,
              progress: Progress | None = None) -> EngineBuildResult:
        """Compile the graph :func:`onnx_path_for` names into ``<engines>/<gpu>/<model>/<component>.<precision>.plan``.

        ``progress`` is called with a description and the fraction done. Raises BuildError when the graph is missing,
        does not parse, lacks the evidence of ``precision``, or fails to compile; the manifest then keeps its previous
        entry for this engine, and no partial plan is left.
        """
        progress = progress or (lambda what, frac: None)
        trt = self.flavour.trt
        comp = component_name if isinstance(component_name, Component) else component(component_name)
        src = onnx_path_for(onnx_dir, comp.name, precision)
        if not src.is_file():
            raise BuildError(missing_graph_hint(comp.model, precision, src))
        sidecar = load_sidecar(src)
        src_sha = sha256_file(src)
        warnings = self._check_sidecar(sidecar, src, src_sha, comp.name, precision)
        profiles, dims = profile_from_sidecar(sidecar, self.settings.shapes)

        progress("parsing ONNX", 0.0)
        t0 = time.perf_counter()
        logger = _make_logger(trt)
        builder = trt.Builder(logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(src)):
            errors = [_clean(str(parser.get_error(i))) for i in range(parser.num_errors)]
            text = " | ".join(errors[:3]) or _errors(logger)
            raise BuildError(f"{self.flavour.label} cannot parse {src}: {text}{_known_parser_issue(text)}")
        summary = network_precision(network)
        check_precision(summary, precision, f"the network parsed from {src.name}")

        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        self._set_profile(network, profile, profiles, src)
        config.add_optimization_profile(profile)
        self._configure(config)
        cache_path = self._load_timing_cache(config)
        monitor = _make_progress_monitor(trt, progress, 0.05, 0.85)  # referenced until the build returns
        config.progress_monitor = monitor
        progress("compiling", 0.05)

        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BuildError(
                f"{self.flavour.label} could not build {comp.name} ({precision}) for {self.gpu}: "
                f"{_errors(logger) or 'no error was logged'}"
            )
        seconds = time.perf_counter() - t0

        path = plan_path(self.settings.engines_dir, self.gpu, comp.model, comp.name, precision)
        progress("inspecting", 0.92)
        inspected, inspect_note = self._inspect(plan, profiles)
        if inspected is not None:
            check_precision(inspected, precision, f"the built engine {path.name} (engine inspector)")

        progress("writing plan", 0.96)
        out_dir = check_writable(path.parent, "--engine-dir")
        data = memoryview(plan)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        plan_sha = hashlib.sha256(data).hexdigest()
        self._save_timing_cache(config, cache_path)

        entry = {
            "component": comp.name,
            "model": comp.model,
            "precision": precision,
            "plan": path.name,
            "plan_bytes": len(data),
            "plan_sha256": plan_sha,
            "tensorrt": self.flavour.to_json(),
            "target": {"gpu": self.gpu, "compute_capability": self.settings.gpu.capability,
                       "hardware_compat": self.target.hardware_compat,
                       "ahead_of_time": self.target.ahead_of_time},
            "device": self.device.to_json() if self.device else None,
            "strongly_typed": bool(flags),
            "profiles": [{"inputs": [p.to_json() for p in profiles]}],
            "dims": dims,
            "onnx": {"file": src.name, "sha256": src_sha, "sidecar_sha256": sidecar.get("onnx_sha256"),
                     "bytes": src.stat().st_size,
                     "opset": sidecar.get("opset"), "exporter": sidecar.get("exporter")},
            "build_seconds": round(seconds, 3),
            "workspace_mb": self.settings.workspace_mb,
            "timing_cache": str(cache_path) if cache_path else None,
            "precision_summary": summary.to_json(),
            "engine_inspector": inspected.to_json() if inspected else {"available": False, "reason": inspect_note},
            "warnings": warnings,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "speechtrt": __version__,
        }
        manifest = update_manifest(out_dir, self.gpu, comp.model, entry_key(comp.name, precision), entry)
        progress("done", 1.0)
        return EngineBuildResult(comp.name, comp.model, precision, path, manifest, len(data), seconds, summary,
                                 inspected, tuple(warnings), entry)

    # ------------------------------------------------------------ steps

    def _check_sidecar(self, sidecar: dict, src: Path, src_sha: str, component_name: str, precision: str) -> list[str]:
        """Refuse a sidecar of another component or precision; return warnings for softer mismatches."""
        if sidecar.get("component") != component_name:
            raise BuildError(f"{src.with_suffix('.json')} describes {sidecar.get('component')!r}, "
                             f"not {component_name}: re-export with `speechtrt export`")
        declared = sidecar.get("precision", "fp32")
        if declared != precision:
            raise BuildError(f"{src.with_suffix('.json')} declares precision {declared!r}, but {src.name} was opened "
                             f"as {precision}: recreate it with `speechtrt calibrate --precision {precision}`")
        recorded = sidecar.get("onnx_sha256")
        if sidecar.get("onnx") == src.name and recorded not in (None, src_sha):
            # Graph tools that save shape-inference results back into their input change the bytes, not the graph's
            # interface; the inputs and their ranges are still checked against the parsed network below.
            return [f"{src.name} differs from the file its sidecar was written for (SHA-256 {recorded[:12]}… there, "
                    f"{src_sha[:12]}… here): it was rewritten after export; re-export it if its inputs changed"]
        return []

    def _set_profile(self, network, profile, profiles: list[InputProfile], src: Path) -> None:
        by_name = {p.name: p for p in profiles}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            p = by_name.get(tensor.name)
            if p is None:
                raise BuildError(f"{src} has input {tensor.name!r} that its sidecar does not describe: re-export it")
            if len(tensor.shape) != len(p.opt):
                raise BuildError(f"{src}: input {tensor.name!r} has rank {len(tensor.shape)} but its sidecar "
                                 f"shape {list(p.opt)} has rank {len(p.opt)}: re-export it")
            for axis, size in enumerate(tensor.shape):
                if size >= 0 and not p.min[axis] == p.opt[axis] == p.max[axis] == size:
                    raise BuildError(f"{src}: input {tensor.name!r} axis {axis} is fixed at {size} in the graph, but "
                                     f"the profile asks for {p.min[axis]}..{p.max[axis]}: drop that --shape override")
            profile.set_shape(tensor.name, p.min, p.opt, p.max)

    def _configure(self, config) -> None:
        trt = self.flavour.trt
        if self.settings.workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.settings.workspace_mb) << 20)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if self.target.rtx_capability is not None:
            config.num_compute_capabilities = 1
            if not config.set_compute_capability(self.target.rtx_capability, 0):
                raise BuildError(f"{self.flavour.label} refused compute capability {self.settings.gpu.capability}")
        levels = {"ampere-plus": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
        if self.target.hardware_compat in levels:
            level = getattr(trt.HardwareCompatibilityLevel, levels[self.target.hardware_compat], None)
            if level is None:
                raise BuildError(f"{self.flavour.label} has no hardware-compatibility level "
                                 f"{self.target.hardware_compat}: upgrade TensorRT or drop --hardware-compat")
            config.hardware_compatibility_level = level

    def _load_timing_cache(self, config) -> Path | None:
        path = self.timing_cache_path()
        if path is None:
            return None
        blob = path.read_bytes() if path.is_file() else b""
        cache = config.create_timing_cache(blob)
        if cache is None:  # unreadable (another TensorRT version wrote it): start afresh, it is rewritten after
            cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
        return path

    def _save_timing_cache(self, config, path: Path | None) -> None:
        if path is None:
            return
        cache = config.get_timing_cache()
        if cache is None:
            return
        check_writable(path.parent)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(memoryview(cache.serialize()))
        os.replace(tmp, path)

    def _inspect(self, plan, profiles: list[InputProfile]) -> tuple[PrecisionSummary | None, str]:
        """Per-layer formats from the engine inspector, when the plan can be deserialized on this machine."""
        dev = self.device
        if dev is None:
            return None, "no GPU here: the plan was compiled ahead of time and cannot be deserialized"
        if (dev.major, dev.minor) != (self.settings.gpu.major, self.settings.gpu.minor) and not (
            self.target.hardware_compat == "ampere-plus" and dev.major >= 8
        ):
            return None, f"this GPU ({dev.sm}) is not the target ({self.gpu}): the plan cannot be deserialized here"
        trt = self.flavour.trt
        try:
            logger = _make_logger(trt)
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is None:
                return None, f"deserialization failed: {_errors(logger)}"
            context = engine.create_execution_context()
            for p in profiles:
                context.set_input_shape(p.name, p.opt)
            inspector = engine.create_engine_inspector()
            # the context (input shapes set) makes the inspector report formats; the attribute was renamed over time
            setattr(inspector, "execution_context" if hasattr(inspector, "execution_context") else "context", context)
            return inspector_precision(inspector.get_engine_information(trt.LayerInformationFormat.JSON)), ""
        except Exception as exc:  # inspection is evidence on top of the network's; a failure is recorded, not fatal
            return None, f"engine inspector failed: {exc.__class__.__name__}: {str(exc)[:200]}"
