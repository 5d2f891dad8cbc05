"""ONNX export, one graph per component, each with a sidecar JSON.

The parity check against PyTorch runs the graph through the runtime, so it lives one layer up
(:func:`speechtrt.pipeline.export_component`, which calls :func:`export_graph` then records the result with
:func:`record_parity`).

Exporter choice (measured, see DESIGN.md): the transformer parts export with the TorchDynamo-based exporter and
truly dynamic batch/time axes; the LSTM models export with the TorchScript-based exporter, which writes ONNX ``LSTM``
ops with ``sequence_lens`` (the dynamo exporter fails on them).
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from speechtrt import __version__
from speechtrt.errors import ExportError, InputError
from speechtrt.export.components import Component
from speechtrt.export.parity import ParityReport
from speechtrt.files import check_writable, quiet_native_output, sha256_file

OPSET = {"dynamo": 18, "torchscript": 17}
SIDECAR_FORMAT = "speechtrt-onnx/1"


@dataclass
class ExportResult:
    component: Component
    onnx_path: Path
    sidecar_path: Path
    sidecar: dict
    parity: ParityReport | None
    seconds: float


def _export(comp: Component, wrapper: torch.nn.Module, example: dict[str, torch.Tensor], path: Path) -> None:
    names_in = [s.name for s in comp.inputs]
    names_out = [s.name for s in comp.outputs]
    args = tuple(example[n] for n in names_in)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), quiet_native_output():
        warnings.simplefilter("ignore")
        if comp.exporter == "dynamo":
            dims = {n: torch.export.Dim(n, min=d.min, max=d.max) for n, d in comp.dims.items()}
            per_input = [{i: dims[d] for i, d in enumerate(s.shape) if isinstance(d, str)} for s in comp.inputs]
            k = comp.varargs_from
            # one entry per positional parameter of the wrapper's forward; *args take one nested tuple
            shapes = tuple(per_input) if k is None else (*per_input[:k], tuple(per_input[k:]))
            program = torch.onnx.export(
                wrapper, args, dynamo=True, input_names=names_in, output_names=names_out,
                dynamic_shapes=shapes, opset_version=OPSET["dynamo"], optimize=True, verbose=False,
            )
            program.save(str(path))
        else:
            axes = {s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)} for s in (*comp.inputs, *comp.outputs)}
            torch.onnx.export(
                wrapper, args, str(path), dynamo=False, input_names=names_in, output_names=names_out,
                dynamic_axes={k: v for k, v in axes.items() if v}, opset_version=OPSET["torchscript"],
            )
    wrapper.eval()  # the TorchScript exporter restores the wrapper's mode; keep every module in eval


def export_graph(comp: Component, model: torch.nn.Module, out_dir: str | Path, *, seed: int = 0,
                 source: dict | None = None) -> ExportResult:
    """Export one component of ``model`` to ``out_dir/<name>.onnx`` with ``<name>.json`` beside it (no parity yet:
    ``sidecar["parity"]`` is None until :func:`record_parity`)."""
    out = check_writable(out_dir, "--out")
    path = out / f"{comp.name}.onnx"
    model = model.eval()
    wrapper = comp.wrap(model).eval()
    # Example sizes at least 2 on every dynamic axis, so the exporter cannot specialise a dim to 0 or 1.
    example_sizes = {n: max(2, min(d.max, d.opt // 4 + 2)) for n, d in comp.dims.items()}
    example = comp.make_inputs(model, example_sizes, torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    try:
        _export(comp, wrapper, example, path)
    except Exception as exc:
        raise ExportError(f"exporting {comp.name} failed: {exc.__class__.__name__}: {str(exc)[:400]}") from exc
    model.eval()
    seconds = time.perf_counter() - t0
    sidecar = {
        "format": SIDECAR_FORMAT,
        "component": comp.name,
        "model": comp.model,
        "onnx": path.name,
        "onnx_sha256": sha256_file(path),
        "onnx_bytes": path.stat().st_size,
        "opset": OPSET[comp.exporter],
        "exporter": comp.exporter,
        "inputs": [_io_json(comp, s, with_ranges=True) for s in comp.inputs],
        "outputs": [_io_json(comp, s, with_ranges=False) for s in comp.outputs],
        "dims": {n: {"min": d.min, "opt": d.opt, "max": d.max} for n, d in comp.dims.items()},
        "parity": None,
        "source": source or {},
        "export_seconds": round(seconds, 3),
        "versions": {"speechtrt": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    sidecar_path = out / f"{comp.name}.json"
    sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n")
    return ExportResult(comp, path, sidecar_path, sidecar, None, seconds)


def record_parity(result: ExportResult, parity: ParityReport) -> ExportResult:
    """Write ``parity`` into the graph's sidecar; raise :class:`ExportError` when it is beyond tolerance (the files
    stay on disk for inspection)."""
    result.sidecar["parity"] = parity.to_json()
    result.sidecar_path.write_text(json.dumps(result.sidecar, indent=2) + "\n")
    result.parity = parity
    if not parity.ok:
        raise ExportError(
            f"{result.component.name}: ONNX Runtime differs from PyTorch by {parity.measure} {parity.worst:.2e} "
            f"(tolerance {parity.tolerance:.0e}); see {result.sidecar_path} for the cases"
        )
    return result


def _io_json(comp: Component, spec, with_ranges: bool) -> dict:
    entry = {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)}
    if with_ranges:
        entry.update({w: comp.shape_at(spec, w) for w in ("min", "opt", "max")})
    return entry


def load_sidecar(onnx_path: str | Path) -> dict:
    """The sidecar JSON written next to an exported graph, checked to belong to it."""
    onnx_path = Path(onnx_path)
    side = onnx_path.with_suffix(".json")
    if not onnx_path.is_file():
        raise InputError(f"ONNX graph {onnx_path} does not exist: run `speechtrt export` first")
    if not side.is_file():
        raise InputError(f"{onnx_path} has no sidecar {side.name}: re-export it with `speechtrt export`")
    data = json.loads(side.read_text())
    if data.get("format") != SIDECAR_FORMAT:
        raise InputError(f"{side} is not a {SIDECAR_FORMAT} sidecar: re-export with `speechtrt export`")
    return data
