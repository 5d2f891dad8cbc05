"""Export → calibrate → build, as needed: the one way every job makes the artifact it is about to open.

``ensure_artifact(component, precision, backend, artifacts)`` returns the graph (ort) or plan (trt) that
:func:`speechtrt.runtime.open.open_runner` will open, making whatever is missing on the way:

* FP32 graph: exported from ``artifacts.model`` with the parity check through the runtime (:func:`export_component`);
* FP16 (both backends) and INT8 for TensorRT: NVIDIA ModelOpt graphs (AutoCast, Q/DQ PTQ) calibrated on
  ``calibration`` feeds when given (a development set, never a test set), else on the calibration set in
  ``calib_dir`` (captured with the model when absent, as ``speechtrt calibrate`` does);
* INT8 for ONNX Runtime: ONNX Runtime's own int8 graph (:mod:`speechtrt.quantize.ort_int8`);
* TensorRT plan: built for the GPU present (or ``gpu``) by :class:`~speechtrt.engines.builder.EngineBuilder`.

Existing files are used as they are: an artifacts folder belongs to one model (see :func:`model_artifacts`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.errors import EngineLoadError, ExportError, InputError
from speechtrt.export.components import Component, component as component_spec
from speechtrt.export.onnx import ExportResult, export_graph, record_parity
from speechtrt.export.parity import check_parity
from speechtrt.runtime.open import Artifacts, graph_path, open_runner
from speechtrt.vocab import check_backend, check_precision

Feeds = list[dict[str, np.ndarray]]


def export_component(comp: Component, model: torch.nn.Module, out_dir: str | Path, *, check: bool = True,
                     seed: int = 0, source: dict | None = None) -> ExportResult:
    """Export one component of ``model`` to ``out_dir/<name>.onnx`` + sidecar and, with ``check``, compare it with
    PyTorch on fresh random inputs of several shapes in ONNX Runtime; a graph beyond tolerance raises
    :class:`~speechtrt.errors.ExportError` (the files stay on disk for inspection)."""
    result = export_graph(comp, model, out_dir, seed=seed, source=source)
    if check:
        runner = open_runner(comp, "ort", "fp32", "cpu", Artifacts(onnx_dir=result.onnx_path.parent))
        try:
            record_parity(result, check_parity(comp, model, runner, seed=seed + 1))
        finally:
            runner.close()
    return result


def model_artifacts(model: torch.nn.Module, root: str | Path, name: str | None = None) -> Artifacts:
    """Artifacts of ``model`` in a folder keyed by its weights under ``root`` (reused by later runs of the same
    weights, never by other weights)."""
    digest = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    folder = Path(root) / digest.hexdigest()[:16]
    return Artifacts(onnx_dir=folder, engine_dir=folder / "engines", model=model, model_name=name)


def _calibration_feeds(comp: Component, artifacts: Artifacts, calib_dir: Path, log: Callable[[str], None]) -> Feeds:
    """Calibration feeds for ``comp`` from ``calib_dir``, captured there with ``artifacts.model`` when absent.

    A model that is not one of the seeded references (a trained voice, a user's model: ``artifacts.model_name``
    set) is decoded itself, to its stop token, and its sets go to ``calib_dir/<model_name>`` — its decoder step
    has its own cache shapes."""
    from speechtrt.quantize.calib import CaptureConfig, capture, load_set, minibatches
    from speechtrt.quantize.precision import CALIB_BATCH

    own = artifacts.model_name is not None and artifacts.model is not None
    if own:
        calib_dir = calib_dir / artifacts.model_name
    if not (calib_dir / f"{comp.name}.npz").is_file():
        if artifacts.model is None:
            raise InputError(f"no calibration set {calib_dir / (comp.name + '.npz')}: run `speechtrt calibrate`")
        log(f"capturing calibration data for {comp.name} into {calib_dir}")
        capture([comp], calib_dir, CaptureConfig(), model=artifacts.model if own else None, stop_token=own)
    return minibatches(comp, load_set(calib_dir, comp.name), CALIB_BATCH)


def ensure_artifact(component: str | Component, precision: str = "fp32", backend: str = "ort",
                    artifacts: Artifacts = Artifacts(), *, calibration: Feeds | None = None,
                    calib_dir: str | Path = "calib_data", gpu: str | None = None, shapes: tuple = (),
                    log: Callable[[str], None] = lambda msg: None) -> Path | None:
    """The artifact ``open_runner(component, backend, precision, artifacts=artifacts)`` opens, made if missing.

    Returns the graph path (ort), the plan path (trt) or None (torch: the module itself is the artifact).
    """
    comp = component if isinstance(component, Component) else component_spec(component)
    check_backend(backend, None)
    check_precision(precision, backend, None)
    if backend == "torch":
        if artifacts.model is None:
            raise InputError(f"the torch backend needs the PyTorch model of {comp.name}")
        return None
    graph = ensure_graph(comp, precision, backend, artifacts, calibration=calibration, calib_dir=calib_dir, log=log)
    if backend == "ort":
        return graph
    return _ensure_plan(comp, precision, artifacts, gpu, shapes, log)


def ensure_graph(component: str | Component, precision: str, form: str, artifacts: Artifacts, *,
                 calibration: Feeds | None = None, calib_dir: str | Path = "calib_data", method: str = "entropy",
                 log: Callable[[str], None] = lambda msg: None) -> Path:
    """The ONNX graph of ``component`` at ``precision`` in ``form`` (``ort``: what ONNX Runtime runs best; ``trt``:
    what TensorRT builds from — see :func:`speechtrt.runtime.open.graph_name`), made if missing."""
    comp = component if isinstance(component, Component) else component_spec(component)
    fp32 = graph_path(artifacts, comp.name, "fp32")
    if not fp32.is_file():
        if artifacts.model is None:
            raise EngineLoadError(f"no ONNX graph {fp32} and no model to export it from: run `speechtrt export`")
        log(f"exporting {comp.name} to {artifacts.onnx_dir}")
        export_component(comp, artifacts.model, artifacts.onnx_dir)
    _check_recorded_parity(fp32)
    graph = graph_path(artifacts, comp.name, precision, form)
    stale = made_by_older_recipe(graph, precision, form)
    if graph.is_file() and stale is None:
        return graph
    if stale is not None:
        log(f"making {graph.name} again: an older quantization recipe made it (version {stale[0]}; this version "
            f"makes {stale[1]})")
    ort_int8 = precision == "int8" and form == "ort"
    feeds = calibration
    if feeds is None and (not ort_int8 or _ort_int8_static(comp)):
        feeds = _calibration_feeds(comp, artifacts, Path(calib_dir), log)
    log(f"making the {precision} graph of {comp.name} ({'ONNX Runtime' if form == 'ort' else 'TensorRT'} form)")
    if ort_int8:
        from speechtrt.quantize.ort_int8 import make_ort_int8

        make_ort_int8(comp, artifacts.onnx_dir, feeds)
    else:
        from speechtrt.quantize.precision import make_fp16, make_int8

        if precision == "fp16":
            make_fp16(comp, artifacts.onnx_dir, feeds)
        else:
            make_int8(comp, artifacts.onnx_dir, feeds, method)
    return graph


def made_by_older_recipe(graph: Path, precision: str, form: str) -> tuple[int, int] | None:
    """(recorded, current) recipe versions when ``graph`` was made by an older version of its quantizer, else None.

    A reduced-precision graph on disk is reused only when this version's recipe made it (its sidecar's
    ``quantization.recipe_version``; none recorded counts as 1), so an upgrade never runs graphs the current code
    would not make. A graph without a sidecar was made elsewhere: its recipe is not known here and it is used."""
    if precision == "fp32" or not graph.is_file():
        return None
    if precision == "int8" and form == "ort":
        from speechtrt.quantize.ort_int8 import RECIPE_VERSION as current
    else:
        from speechtrt.quantize.precision import RECIPE_VERSIONS

        current = RECIPE_VERSIONS.get(precision, 1)
    try:
        block = json.loads(graph.with_suffix(".json").read_text()).get("quantization") or {}
    except (OSError, ValueError):
        return None
    recorded = int(block.get("recipe_version", 1))
    return (recorded, current) if recorded < current else None


def _plan_matches_graph(plan: Path, component: str, precision: str, graph: Path) -> bool:
    """Whether the manifest beside ``plan`` says it was built from ``graph`` as it is now (the SHA-256 the graph's
    sidecar records); True when either record is missing (nothing to compare)."""
    from speechtrt.engines.manifest import entry_key, read_manifest

    try:
        entry = read_manifest(plan.parent)["engines"].get(entry_key(component, precision)) or {}
        built_from = (entry.get("onnx") or {}).get("sidecar_sha256")
        now = json.loads(graph.with_suffix(".json").read_text()).get("onnx_sha256")
    except (EngineLoadError, OSError, ValueError):
        return True
    return built_from is None or now is None or built_from == now


def _check_recorded_parity(graph: Path) -> None:
    """A graph whose export parity failed stays on disk for inspection; it is never used."""
    side = graph.with_suffix(".json")
    try:
        parity = json.loads(side.read_text()).get("parity") or {}
    except (OSError, ValueError):
        return  # a graph exported elsewhere without a sidecar: its parity is not known here
    if parity.get("ok") is False:
        raise ExportError(f"{graph} failed its parity check against PyTorch ({parity.get('measure', 'relative L2')} "
                          f"{parity.get('max_rel_l2', float('nan')):.2e} > {parity.get('tolerance')}, see {side}); "
                          "delete the folder's graphs of this model to export again")


def _ort_int8_static(comp: Component) -> bool:
    """Whether ONNX Runtime INT8 of ``comp`` reads calibration feeds (the static mode; dynamic and none do not)."""
    from speechtrt.quantize.ort_int8 import default_mode

    return default_mode(comp) == "static"


def _ensure_plan(comp: Component, precision: str, artifacts: Artifacts, gpu: str | None, shapes: tuple,
                 log: Callable[[str], None]) -> Path:
    from speechtrt.engines.arch import arch_for_capability, current_device, parse_gpu
    from speechtrt.engines.builder import BuildSettings, EngineBuilder
    from speechtrt.engines.manifest import plan_path

    if gpu is not None:
        arch = parse_gpu(gpu)
    else:
        device = current_device()
        arch = arch_for_capability(device.major, device.minor) if device is not None else None
        if arch is None:
            raise EngineLoadError("a TensorRT plan is built for a GPU: none is present here; pass --gpu smXX to "
                                  "build ahead of time (`speechtrt build`), or use --backend ort")
    model_name = artifacts.model_name or comp.model
    plan = plan_path(artifacts.engine_dir, arch.sm, model_name, comp.name, precision)
    if plan.is_file() and not _plan_matches_graph(plan, comp.name, precision, graph_path(artifacts, comp.name, precision,
                                                                                          "trt")):
        log(f"building {plan.name} again: its graph was made again since it was built")
        plan.unlink()
    if not plan.is_file():
        log(f"building the {precision} plan of {comp.name} for {arch.sm}")
        builder = EngineBuilder(BuildSettings(arch, engines_dir=artifacts.engine_dir, shapes=tuple(shapes)))
        plan = builder.build(comp, precision, artifacts.onnx_dir).plan
    return plan
