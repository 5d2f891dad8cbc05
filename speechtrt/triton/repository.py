"""``speechtrt triton export``: a Triton Inference Server model repository, generated from what was exported and built.

One layout for both worlds; every ``config.pbtxt`` is generated from the ONNX sidecars (names, dtypes, symbolic
dims) and, for plans, checked against the plans' build manifests (names, dtypes, profile bounds) before it is
written — never hand-kept::

    model_repository/
      speechtrt.json                      what was exported: kind, GPU, precision, models, versions
      asr_small/config.pbtxt  1/...       offline ASR: dynamic batching
      asr_stream_step/config.pbtxt 1/...  streaming ASR step: the sequence batcher
      tts_encoder/ tts_vocoder/           TTS graphs (the vocoder with dynamic batching)
      tts/config.pbtxt 1/model.py ...     Python backend, decoupled: the in-flight decode loop (TTSService)

* **gpu** (``--kind gpu --gpu sm86``): one repository per GPU architecture. ``asr_*``, ``asr_stream_step``,
  ``tts_encoder`` and ``tts_vocoder`` are ``platform: "tensorrt_plan"`` models (``1/model.plan``); ``tts`` is a
  Python-backend model that runs the decoder step in-process on its TensorRT plan (``1/engines/<sm>/tts/``, the KV
  cache stays on the GPU) and calls ``tts_encoder`` / ``tts_vocoder`` through BLS, so Triton batches those across
  instances.
* **cpu** (``--kind cpu``, what runs here and in CI): the same model names, tensor names, shapes and batching
  settings, as Python-backend models (``speechtrt/triton/models/*.py`` copied in as ``1/model.py``) that drive the
  speechtrt runtime over ONNX Runtime (``1/onnx/<component>.onnx``).

Batching follows the graphs: a model whose every input and output has the batch first gets ``max_batch_size`` and
dynamic batching (Triton concatenates requests along axis 0); one whose tensors carry the batch elsewhere
(``cross_k`` ``[layers, batch, heads, text, dim]``, the LSTM state ``h`` ``[layers, batch, hidden]``) gets
``max_batch_size: 0`` and full shapes, because Triton can only stack requests along axis 0.

The streaming step keeps its state on the server in both kinds: a client sends ``features [1, T, 80]`` with a
sequence id and START/END flags and receives ``log_probs``. On a GPU that is Triton's implicit state (the plan's
``ctx1/ctx2/h/c`` inputs fed from its ``*_out`` outputs, zero at START). The Python backend has no implicit state, so
the CPU model keeps each sequence's state itself, keyed by the CORRID control input; the sequence batcher routes
every request of a sequence to the same instance, which is what makes that correct.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from speechtrt import __version__
from speechtrt.errors import InputError
from speechtrt.files import check_writable
from speechtrt.vocab import MODEL_NAMES, check_precision, parse_list

KINDS = ("cpu", "gpu")
REPOSITORY_FORMAT = "speechtrt-triton-repository/1"
MODELS_DIR = Path(__file__).parent / "models"

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                 "bool": "TYPE_BOOL", "string": "TYPE_STRING", "uint64": "TYPE_UINT64"}

# Control inputs the CPU streaming model reads (names are the model's; kinds are Triton's).
SEQUENCE_CONTROLS = (("START", "CONTROL_SEQUENCE_START"), ("END", "CONTROL_SEQUENCE_END"),
                     ("READY", "CONTROL_SEQUENCE_READY"), ("CORRID", "CONTROL_SEQUENCE_CORRID"))

# Which Triton models each CLI model becomes (the TTS decoder step lives inside the ``tts`` model).
TRITON_MODELS = {"asr-small": ("asr_small",), "asr-medium": ("asr_medium",), "asr-large": ("asr_large",),
                 "asr-stream": ("asr_stream_step",), "tts": ("tts_encoder", "tts_vocoder", "tts")}
DEFAULT_MODELS = ("asr-small", "asr-stream", "tts")


class Enum(str):
    """A protobuf enum value: written bare in text format (``TYPE_FP32``), not quoted."""


@dataclass(frozen=True)
class RepositoryConfig:
    """What ``speechtrt triton export`` writes. Times are in microseconds, as Triton's config has them."""

    out: Path = Path("model_repository")
    models: tuple[str, ...] = DEFAULT_MODELS
    kind: str = "cpu"  # cpu | gpu
    gpu: str | None = None  # gpu kind: the architecture the plans are built for (sm86, ...)
    precision: str = "fp32"
    artifacts: Path = Path("out/triton-artifacts")  # graphs and plans, keyed by weights (pipeline.model_artifacts)
    checkpoints: tuple[Path, ...] = ()  # weights to use instead of the defaults (matched to models by kind)
    checkpoint_dir: Path = Path("checkpoints")  # the shipped asr-*.pt, used when no checkpoint is given
    seed: int = 0  # initialisation seed of models with no checkpoint
    max_batch: int = 64  # cap on max_batch_size (and never above the graph's batch range)
    max_queue_delay_us: int = 2000  # dynamic batching: how long a request may wait for others
    stream_queue_delay_us: int = 1000  # sequence batcher (oldest): the same for streaming steps
    max_sequence_idle_us: int = 10_000_000  # a sequence silent this long is released (its state dropped)
    max_candidate_sequences: int = 1024  # streams that may be in flight per model
    instances: int = 1  # instance_group count per model
    threads: int = 1  # CPU kind: ONNX Runtime intra-op threads per session
    tts_slots: int = 16  # in-flight TTS requests (KV-cache slots) per tts instance
    tts_chunk_ms: float = 250.0  # audio per streamed TTS response

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown repository kind {self.kind!r} (--kind): choose cpu or gpu")
        if self.kind == "gpu" and not self.gpu:
            raise InputError("--kind gpu needs --gpu smXX: a repository holds the plans of one GPU architecture")
        if self.kind == "cpu" and self.gpu:
            raise InputError("--gpu applies to --kind gpu only (a CPU repository runs ONNX graphs)")
        check_precision(self.precision, "trt" if self.kind == "gpu" else "ort", "--precision")
        for name, value in (("max_batch", self.max_batch), ("instances", self.instances), ("threads", self.threads),
                            ("tts_slots", self.tts_slots)):
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "artifacts", Path(self.artifacts))
        object.__setattr__(self, "models", tuple(self.models))


@dataclass
class ExportedModel:
    name: str  # Triton model name
    component: str | None  # the graph it serves (None: the tts decode loop)
    config: dict  # what config.pbtxt says, as a dict
    files: list[str] = field(default_factory=list)  # paths written under the model folder


@dataclass
class RepositoryResult:
    out: Path
    kind: str
    gpu: str | None
    models: list[ExportedModel]
    seconds: float
    notes: list[str] = field(default_factory=list)


def parse_models(text: str) -> tuple[str, ...]:
    """``--models asr-small,asr-stream,tts`` as CLI model names (``all``: every model)."""
    if str(text).strip() == "all":
        return MODEL_NAMES
    return parse_list(text, MODEL_NAMES, "--models", "model")


# ---------------------------------------------------------------- config.pbtxt (protobuf text format)


def render_pbtxt(config: dict) -> str:
    """``config`` (field names as in Triton's ``ModelConfig`` proto) in protobuf text format.

    Dicts are messages, lists of dicts repeated messages, lists of scalars repeated scalars; :class:`Enum` values
    are written bare; ``parameters`` (a proto map) is a dict of strings.
    """
    lines: list[str] = []
    _render_fields(config, lines, 0)
    return "\n".join(lines) + "\n"


def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _render_fields(message: dict, lines: list[str], depth: int) -> None:
    pad = "  " * depth
    for key, value in message.items():
        if key == "parameters":
            for k, v in value.items():
                lines.append(f'{pad}parameters {{ key: {json.dumps(k)} value {{ string_value: {json.dumps(str(v))} }} }}')
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            _render_fields(value, lines, depth + 1)
            lines.append(f"{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines.append(f"{pad}  {{")
                _render_fields(item, lines, depth + 2)
                lines.append(f"{pad}  }}{',' if i < len(value) - 1 else ''}")
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")


# ---------------------------------------------------------------- configs from sidecars


def batch_first(sidecar: dict) -> bool:
    """True when every input and output of the graph has the ``batch`` dim at axis 0 (Triton can batch it)."""
    specs = [*sidecar["inputs"], *sidecar["outputs"]]
    return all(s["shape"] and s["shape"][0] == "batch" for s in specs)


def max_batch_size(sidecar: dict, settings: RepositoryConfig) -> int:
    """The model's ``max_batch_size``: 0 when the batch is not axis 0 everywhere, else the batch range's max capped
    by ``settings.max_batch``."""
    if not batch_first(sidecar):
        return 0
    return min(settings.max_batch, int(sidecar["dims"]["batch"]["max"]))


def tensor_config(spec: dict, batched: bool) -> dict:
    """One ``input``/``output`` entry: dynamic dims become -1; with ``batched`` the leading batch dim is Triton's, and
    a per-row scalar (``[batch]``) is ``dims: [1]`` reshaped to ``[]`` so the model sees ``[B]``."""
    shape = list(spec["shape"][1:] if batched else spec["shape"])
    entry = {"name": spec["name"], "data_type": Enum(TRITON_DTYPES[spec["dtype"]])}
    if batched and not shape:
        entry.update(dims=[1], reshape={"shape": []})
    else:
        entry["dims"] = [d if isinstance(d, int) else -1 for d in shape]
    return entry


def _instances(settings: RepositoryConfig) -> list[dict]:
    return [{"count": settings.instances, "kind": Enum("KIND_GPU" if settings.kind == "gpu" else "KIND_CPU")}]


def _backend(settings: RepositoryConfig) -> dict:
    if settings.kind == "gpu":
        return {"platform": "tensorrt_plan"}
    return {"backend": "python"}


def graph_model_config(name: str, sidecar: dict, settings: RepositoryConfig) -> dict:
    """A stateless graph (offline ASR, TTS encoder, TTS vocoder): dynamic batching when it batches on axis 0."""
    mbs = max_batch_size(sidecar, settings)
    config = {"name": name, **_backend(settings), "max_batch_size": mbs,
              "input": [tensor_config(s, mbs > 0) for s in sidecar["inputs"]],
              "output": [tensor_config(s, mbs > 0) for s in sidecar["outputs"]]}
    if mbs > 0:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": settings.max_queue_delay_us}
    config["instance_group"] = _instances(settings)
    if settings.kind == "cpu":
        config["parameters"] = {"component": sidecar["component"], "onnx": f"onnx/{_graph_file(sidecar, settings)}",
                                "precision": settings.precision, "threads": str(settings.threads)}
    return config


def stream_model_config(name: str, sidecar: dict, settings: RepositoryConfig) -> dict:
    """The streaming step under the sequence batcher; clients send ``features`` and get ``log_probs``, the state stays
    on the server (see the module docstring for how each kind keeps it)."""
    features = next(s for s in sidecar["inputs"] if s["name"] == "features")
    log_probs = next(s for s in sidecar["outputs"] if s["name"] == "log_probs")
    states = [s for s in sidecar["inputs"] if s["name"] != "features"]
    outputs = {s["name"]: s for s in sidecar["outputs"]}
    if settings.kind == "gpu":
        mbs = max_batch_size(sidecar, settings)  # 0 while h/c carry the batch on axis 1
        batcher = {
            "max_sequence_idle_microseconds": settings.max_sequence_idle_us,
            "oldest": {"max_candidate_sequences": settings.max_candidate_sequences,
                       "max_queue_delay_microseconds": settings.stream_queue_delay_us},
            "state": [_implicit_state(s, outputs[f"{s['name']}_out"], mbs > 0) for s in states],
        }
        config = {"name": name, "platform": "tensorrt_plan", "max_batch_size": mbs,
                  "input": [tensor_config(features, mbs > 0)], "output": [tensor_config(log_probs, mbs > 0)],
                  "sequence_batching": batcher, "instance_group": _instances(settings)}
        return config
    # CPU: the Python model batches the ready sequences itself; only features/log_probs cross the wire
    mbs = min(settings.max_batch, int(sidecar["dims"]["batch"]["max"]))
    controls = []
    for control_name, kind in SEQUENCE_CONTROLS:
        if kind == "CONTROL_SEQUENCE_CORRID":
            controls.append({"name": control_name, "control": [{"kind": Enum(kind), "data_type": Enum("TYPE_UINT64")}]})
        else:
            controls.append({"name": control_name, "control": [{"kind": Enum(kind), "int32_false_true": [0, 1]}]})
    return {
        "name": name, "backend": "python", "max_batch_size": mbs,
        "input": [tensor_config(features, True)], "output": [tensor_config(log_probs, True)],
        "sequence_batching": {
            "max_sequence_idle_microseconds": settings.max_sequence_idle_us,
            "oldest": {"max_candidate_sequences": settings.max_candidate_sequences,
                       "max_queue_delay_microseconds": settings.stream_queue_delay_us},
            "control_input": controls,
        },
        "instance_group": _instances(settings),
        "parameters": {"component": sidecar["component"], "onnx": f"onnx/{_graph_file(sidecar, settings)}",
                       "precision": settings.precision, "threads": str(settings.threads),
                       "max_sequence_idle_microseconds": str(settings.max_sequence_idle_us)},
    }


def _implicit_state(spec: dict, out: dict, batched: bool) -> dict:
    """A ``sequence_batching.state`` entry: ``spec`` fed from ``out``; zero for a new sequence of batch 1."""
    dims = tensor_config(spec, batched)["dims"]
    one = [d if isinstance(d, int) else 1 for d in (spec["shape"][1:] if batched else spec["shape"])]
    return {"input_name": spec["name"], "output_name": out["name"], "data_type": Enum(TRITON_DTYPES[spec["dtype"]]),
            "dims": dims, "initial_state": {"data_type": Enum(TRITON_DTYPES[spec["dtype"]]), "dims": one,
                                            "zero_data": True, "name": f"{spec['name']}_zero"}}


def tts_model_config(tts_config: dict, settings: RepositoryConfig, *, gpu: str | None, decoder_file: str) -> dict:
    """The decoupled Python-backend model that runs :class:`~speechtrt.tts.service.TTSService` (one in-flight decode
    loop per instance) and streams each request's audio back in chunks."""
    sample_rate = int(tts_config.get("sample_rate", 22050))
    return {
        "name": "tts", "backend": "python", "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": [{"name": "text", "data_type": Enum("TYPE_STRING"), "dims": [1]},
                  {"name": "n_frames", "data_type": Enum("TYPE_INT32"), "dims": [1], "optional": True}],
        "output": [{"name": "audio", "data_type": Enum("TYPE_FP32"), "dims": [-1]}],
        "instance_group": _instances(settings),
        "parameters": {
            "backend": "trt" if settings.kind == "gpu" else "ort", "precision": settings.precision,
            "gpu": gpu or "", "decoder": decoder_file, "encoder_model": "tts_encoder",
            "vocoder_model": "tts_vocoder", "max_slots": str(settings.tts_slots), "threads": str(settings.threads),
            "sample_rate": str(sample_rate), "chunk_samples": str(max(1, int(sample_rate * settings.tts_chunk_ms / 1000))),
            "tts_config": json.dumps(tts_config, sort_keys=True),
        },
    }


def _graph_file(sidecar: dict, settings: RepositoryConfig) -> str:
    from speechtrt.runtime.open import graph_name

    return graph_name(sidecar["component"], settings.precision, "ort")


# ---------------------------------------------------------------- checking a plan's config against its manifest


def check_plan_config(config: dict, entry: dict, sidecar: dict) -> list[str]:
    """Problems of a ``tensorrt_plan`` config against the plan's manifest ``entry`` (names, dtypes, profile bounds)
    and the sidecar of the graph it was built from (output names, dtypes). Empty when the config is sound."""
    problems: list[str] = []
    name = config["name"]
    profile = {p["name"]: p for p in entry["profiles"][0]["inputs"]}
    outputs = {o["name"]: o for o in sidecar["outputs"]}
    mbs = config["max_batch_size"]
    states = config.get("sequence_batching", {}).get("state", [])
    state_inputs = {s["input_name"]: s for s in states}
    state_outputs = {s["output_name"] for s in states}

    def full_dims(dims, batched):
        return ([-1] if batched else []) + list(dims)

    declared_inputs = {t["name"]: t for t in config["input"]}
    missing = set(profile) - set(declared_inputs) - set(state_inputs)
    if missing:
        problems.append(f"{name}: plan inputs {sorted(missing)} are neither inputs nor implicit state in the config")
    for tname, t in [*declared_inputs.items(), *((n, s) for n, s in state_inputs.items())]:
        p = profile.get(tname)
        if p is None:
            problems.append(f"{name}: input {tname!r} is not an input of the plan (plan has {sorted(profile)})")
            continue
        if t["data_type"] != TRITON_DTYPES[p["dtype"]]:
            problems.append(f"{name}: input {tname!r} is {t['data_type']}, the plan takes {p['dtype']}")
        dims = full_dims(t["reshape"]["shape"] if "reshape" in t else t["dims"], mbs > 0)
        problems += _check_dims(f"{name}: input {tname!r}", dims, p["min"], p["max"])
        init = t.get("initial_state")
        if init is not None:
            problems += _check_dims(f"{name}: initial state of {tname!r}", full_dims(init["dims"], mbs > 0),
                                    p["min"], p["max"], concrete=True)
    if mbs > 0:
        for tname, p in profile.items():
            if not (p["min"][0] <= 1 and mbs <= p["max"][0]):
                problems.append(f"{name}: max_batch_size {mbs} outside the profile's batch range "
                                f"{p['min'][0]}..{p['max'][0]} of input {tname!r}")
    for t in config["output"]:
        o = outputs.get(t["name"])
        if o is None:
            problems.append(f"{name}: output {t['name']!r} is not an output of the plan (plan has {sorted(outputs)})")
        elif t["data_type"] != TRITON_DTYPES[o["dtype"]]:
            problems.append(f"{name}: output {t['name']!r} is {t['data_type']}, the plan gives {o['dtype']}")
    for out in state_outputs - set(outputs):
        problems.append(f"{name}: implicit state output {out!r} is not an output of the plan")
    return problems


def _check_dims(what: str, dims: list[int], lo: list[int], hi: list[int], concrete: bool = False) -> list[str]:
    if len(dims) != len(lo):
        return [f"{what}: rank {len(dims)} in the config, {len(lo)} in the plan's profile"]
    out = []
    for i, (d, a, b) in enumerate(zip(dims, lo, hi)):
        if d == -1 and not concrete:
            continue
        if d == -1 or not a <= d <= b:
            out.append(f"{what}: dim {i} is {d}, the plan's profile allows {a}..{b}")
        elif a != b and not concrete:
            out.append(f"{what}: dim {i} is fixed at {d} but the plan's profile ranges {a}..{b} (write -1)")
    return out


# ---------------------------------------------------------------- export


def load_models(settings: RepositoryConfig) -> dict:
    """The PyTorch model behind each CLI model: a given checkpoint, the shipped ``<checkpoint_dir>/asr-*.pt``, else
    the seeded initialisation. Returns ``{name: (model, source)}``."""
    from speechtrt.models import build_model, load_checkpoint

    given = {}
    for path in settings.checkpoints:
        model, meta = load_checkpoint(path)
        key = "tts" if type(model.config).__name__ == "TTSConfig" else f"asr-{model.config.size}"
        given[key] = (model, {"checkpoint": str(path), **meta})
    unused = set(given) - set(settings.models)
    if unused:
        raise InputError(f"checkpoint(s) for {', '.join(sorted(unused))} given, but --models does not include them")
    out = {}
    for name in settings.models:
        if name in given:
            out[name] = given[name]
            continue
        shipped = Path(settings.checkpoint_dir) / f"{name}.pt"
        if name.startswith("asr-") and shipped.is_file():
            out[name] = (load_checkpoint(shipped)[0], {"checkpoint": str(shipped)})
        else:
            out[name] = (build_model(name, settings.seed), {"seed": settings.seed})
    return out


def export_repository(settings: RepositoryConfig, log: Callable[[str], None] = lambda msg: None) -> RepositoryResult:
    """Write the repository ``settings`` describes, making missing graphs and plans on the way
    (:func:`speechtrt.pipeline.ensure_artifact`). A folder of the same name under ``settings.out`` is replaced.

    Raises InputError for bad settings and :class:`~speechtrt.errors.BuildError` when a generated ``tensorrt_plan``
    config disagrees with its plan's manifest.
    """
    from speechtrt.engines.arch import parse_gpu
    from speechtrt.export.components import component as component_spec
    from speechtrt.pipeline import model_artifacts

    t0 = time.perf_counter()
    out = check_writable(settings.out, "--out")
    arch = parse_gpu(settings.gpu) if settings.kind == "gpu" else None
    models = load_models(settings)
    written: list[ExportedModel] = []
    notes: list[str] = []
    for cli_name in settings.models:
        model, source = models[cli_name]
        artifacts = model_artifacts(model, settings.artifacts)
        tts_config = dataclasses.asdict(model.config) if cli_name == "tts" else None
        for triton_name in TRITON_MODELS[cli_name]:
            folder = out / triton_name
            if folder.exists():
                shutil.rmtree(folder)
            (folder / "1").mkdir(parents=True)
            if triton_name == "tts":
                written.append(_export_tts(folder, model, tts_config, artifacts, settings, arch, log))
                continue
            comp = component_spec(triton_name, model.config if cli_name == "tts" else None)
            written.append(_export_graph_model(folder, triton_name, comp, artifacts, settings, arch, log, notes))
        log(f"{cli_name}: {', '.join(TRITON_MODELS[cli_name])} ({json.dumps(source)})")
    summary = {
        "format": REPOSITORY_FORMAT, "kind": settings.kind, "gpu": arch.sm if arch else None,
        "precision": settings.precision, "models": {m.name: {"component": m.component, "files": m.files}
                                                    for m in written},
        "sources": {name: src for name, (_, src) in models.items()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()
                     if k not in ("out", "checkpoints", "checkpoint_dir")},
        "speechtrt": __version__, "notes": notes,
    }
    (out / "speechtrt.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return RepositoryResult(out, settings.kind, arch.sm if arch else None, written, time.perf_counter() - t0, notes)


def _export_graph_model(folder: Path, name: str, comp, artifacts, settings: RepositoryConfig, arch, log,
                        notes: list[str]) -> ExportedModel:
    from speechtrt.errors import BuildError
    from speechtrt.export.onnx import load_sidecar
    from speechtrt.engines.manifest import read_manifest, entry_key
    from speechtrt.pipeline import ensure_artifact
    from speechtrt.runtime.open import graph_path

    config_fn = stream_model_config if name == "asr_stream_step" else graph_model_config
    if settings.kind == "cpu":
        graph = ensure_artifact(comp, settings.precision, "ort", artifacts, log=log)
        sidecar = load_sidecar(graph)
        config = config_fn(name, sidecar, settings)
        files = _copy_graph(graph, folder / "1" / "onnx")
        shutil.copy(MODELS_DIR / ("asr_stream.py" if name == "asr_stream_step" else "graph.py"), folder / "1" / "model.py")
        files.append("1/model.py")
    else:
        plan = ensure_artifact(comp, settings.precision, "trt", artifacts, gpu=arch.sm, log=log)
        entry = read_manifest(plan.parent)["engines"][entry_key(comp.name, settings.precision)]
        sidecar = load_sidecar(graph_path(artifacts, comp.name, settings.precision, "trt"))
        config = config_fn(name, sidecar, settings)
        problems = check_plan_config(config, entry, sidecar)
        if problems:
            raise BuildError("generated Triton config disagrees with the plan's manifest: " + "; ".join(problems))
        shutil.copy(plan, folder / "1" / "model.plan")
        files = ["1/model.plan"]
        _note_flavour(entry, notes)
    (folder / "config.pbtxt").write_text(render_pbtxt(config))
    return ExportedModel(name, comp.name, config, ["config.pbtxt", *files])


def _export_tts(folder: Path, model, tts_config: dict, artifacts, settings: RepositoryConfig, arch, log) -> ExportedModel:
    from speechtrt.engines.manifest import MANIFEST_NAME, entry_key, read_manifest
    from speechtrt.export.components import component as component_spec
    from speechtrt.pipeline import ensure_artifact

    comp = component_spec("tts_decoder_step", model.config)
    version = folder / "1"
    if settings.kind == "cpu":
        graph = ensure_artifact(comp, settings.precision, "ort", artifacts, log=log)
        files = _copy_graph(graph, version / "onnx")
        decoder_file = f"onnx/{graph.name}"
    else:
        plan = ensure_artifact(comp, settings.precision, "trt", artifacts, gpu=arch.sm, log=log)
        manifest = read_manifest(plan.parent)
        key = entry_key(comp.name, settings.precision)
        target = version / "engines" / arch.sm / "tts"
        target.mkdir(parents=True)
        shutil.copy(plan, target / plan.name)
        (target / MANIFEST_NAME).write_text(json.dumps({**manifest, "model": "tts",
                                                        "engines": {key: manifest["engines"][key]}}, indent=2) + "\n")
        decoder_file = f"engines/{arch.sm}/tts/{plan.name}"
        files = [f"1/{decoder_file}", f"1/engines/{arch.sm}/tts/{MANIFEST_NAME}"]
    config = tts_model_config(tts_config, settings, gpu=arch.sm if arch else None, decoder_file=decoder_file)
    shutil.copy(MODELS_DIR / "tts.py", version / "model.py")
    (folder / "config.pbtxt").write_text(render_pbtxt(config))
    return ExportedModel("tts", None, config, ["config.pbtxt", "1/model.py", *files])


def _copy_graph(graph: Path, dest: Path) -> list[str]:
    """Copy an ONNX graph and its sidecar (and external weights, if any) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for src in (graph, graph.with_suffix(".json"), graph.with_name(graph.name + ".data")):
        if src.is_file():
            shutil.copy(src, dest / src.name)
            files.append(f"1/{dest.name}/{src.name}")
    return files


def _note_flavour(entry: dict, notes: list[str]) -> None:
    flavour = entry.get("tensorrt", {})
    if flavour.get("flavour") == "tensorrt-rtx":
        note = (f"plans were built with TensorRT-RTX {flavour.get('version')}: Triton's tensorrt_plan backend loads "
                "plans of the TensorRT version inside its container only; rebuild them there "
                "(`speechtrt build` on the GPU machine) before serving")
        if note not in notes:
            notes.append(note)
