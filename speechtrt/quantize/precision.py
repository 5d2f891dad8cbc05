"""Reduced-precision ONNX graphs with NVIDIA ModelOpt: FP16 by AutoCast, INT8 by Q/DQ post-training quantization.

TensorRT 11 builds only strongly typed networks, so the precision of every layer is decided here, in the graph:

- FP16: ``modelopt.onnx.autocast.convert_to_mixed_precision`` casts the graph to FP16 and keeps in FP32 what its
  rules mark as sensitive (nodes whose reference inputs/outputs leave ``[-data_max, data_max]`` on the calibration
  set, initializers beyond FP16 range, ops without FP16 support at the graph's opset). Graph inputs and outputs
  keep their FP32/INT64 types (``keep_io_types``), so callers feed the same tensors at every precision.
- INT8: ``modelopt.onnx.quantization.quantize`` inserts QuantizeLinear/DequantizeLinear pairs whose scales come
  from running the FP32 graph in ONNX Runtime (CPU) on the calibration set (``entropy`` or ``max``). What is not
  quantized stays at ``high_precision`` (``fp16`` is ModelOpt's default and what a TensorRT engine wants; ``fp32``
  gives a graph every ONNX Runtime build executes). I/O types are kept.

Both write ``<dir>/<component>.<precision>.onnx`` and a sidecar ``<component>.<precision>.json``: the FP32 sidecar
plus ``precision`` and a ``quantization`` block (tool, method, calibration file and its sha256, node counts).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechtrt.errors import ExportError, InputError
from speechtrt.export.components import Component
from speechtrt.export.onnx import load_sidecar
from speechtrt.files import check_writable, sha256_file
from speechtrt.vocab import CALIBRATION_METHODS, REDUCED_PRECISIONS, parse_list

HIGH_PRECISIONS = ("fp16", "fp32")
CALIB_BATCH = 8  # samples per calibration feed
AUTOCAST_BATCHES = 4  # feeds AutoCast runs to find out-of-range nodes (it keeps every intermediate tensor)
RECIPE_VERSIONS = {"fp16": 2, "int8": 1}
"""Version of what :func:`make_fp16` / :func:`make_int8` write (fp16 2: a voice's Griffin-Lim vocoder kept FP32); a
graph on disk made by an older version is made again on next use (:func:`speechtrt.pipeline.ensure_graph`)."""


@dataclass
class PrecisionResult:
    component: str
    precision: str
    onnx_path: Path
    sidecar_path: Path
    sidecar: dict
    seconds: float


def check_method(method: str) -> str:
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method {method!r} (--method): choose one of "
                         f"{', '.join(CALIBRATION_METHODS)}")
    return method


def parse_precisions(text: str) -> list[str]:
    """``"fp16,int8"`` -> ``["fp16", "int8"]``; unknown names raise an InputError naming the flag and choices."""
    return list(parse_list(text.lower(), REDUCED_PRECISIONS, "--precision", "precision"))


def graph_counts(model) -> dict:
    """Node and initializer statistics that show what precision a graph really has."""
    import onnx

    ops = Counter(n.op_type for n in model.graph.node)
    init_types = Counter(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in model.graph.initializer)
    for node in model.graph.node:  # weights folded into Constant nodes count as initializers too
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.dims:
                    init_types[onnx.helper.tensor_dtype_to_np_dtype(attr.t.data_type).name] += 1
    return {
        "nodes": sum(ops.values()),
        "quantize_linear": ops.get("QuantizeLinear", 0),
        "dequantize_linear": ops.get("DequantizeLinear", 0),
        "casts": ops.get("Cast", 0),
        "initializers_by_dtype": dict(sorted(init_types.items())),
    }


def io_types(model) -> dict[str, str]:
    import onnx

    return {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
            for v in (*model.graph.input, *model.graph.output)}


@contextlib.contextmanager
def _ort_quantization_restored():
    """ModelOpt's quantizer patches ONNX Runtime's calibrators and quantizers in place
    (``modelopt.onnx.quantization.ort_patching``) and never puts them back; ONNX Runtime's own static INT8
    (:mod:`speechtrt.quantize.ort_int8`) run later in the same process then fails ("quantization params ... are
    required"). Every class attribute and the calibrator factory are restored on the way out."""
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer

    classes = [calibrate.CalibraterBase, calibrate.MinMaxCalibrater, calibrate.HistogramCalibrater,
               calibrate.HistogramCollector, base_quantizer.BaseQuantizer, qdq_quantizer.QDQQuantizer]
    saved = [(cls, dict(vars(cls))) for cls in classes]
    factory = calibrate.create_calibrator
    try:
        yield
    finally:
        calibrate.create_calibrator = factory
        for cls, attrs in saved:
            for name in [n for n in vars(cls) if n not in attrs]:
                delattr(cls, name)
            for name, value in attrs.items():
                if vars(cls).get(name) is not value:
                    setattr(cls, name, value)


@contextlib.contextmanager
def _quiet():
    """ModelOpt and ONNX Runtime log every step to stdout/stderr; keep them for errors only."""
    sink = io.StringIO()
    names = ["root", "modelopt", *(n for n in logging.root.manager.loggerDict if n.startswith("modelopt"))]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _FeedReader:
    """The ONNX Runtime ``CalibrationDataReader`` protocol (plus ModelOpt's ``get_first``) over prepared feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        if not feeds:
            raise InputError("the calibration set is empty: re-run `speechtrt calibrate` with --samples >= 1")
        self.feeds = feeds
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def get_first(self):
        return self.feeds[0]

    def rewind(self):
        self._it = iter(self.feeds)

    def set_range(self, start_index: int, end_index: int):  # ORT calls it when calibrating in strides
        self._it = iter(self.feeds[start_index:end_index])

    def __len__(self):
        return len(self.feeds)


def _reader_class():
    # ModelOpt checks isinstance(..., CalibrationDataReader); import ORT lazily.
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    return type("FeedReader", (_FeedReader, CalibrationDataReader), {})


def _write_sidecar(comp: Component, fp32_sidecar: dict, out_path: Path, precision: str, block: dict,
                   model) -> tuple[Path, dict]:
    sidecar = dict(fp32_sidecar)
    sidecar.update({
        "onnx": out_path.name,
        "onnx_sha256": sha256_file(out_path),
        "onnx_bytes": out_path.stat().st_size,
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), sidecar.get("opset")),
        "precision": precision,
        "fp32_onnx": fp32_sidecar["onnx"],
        "fp32_onnx_sha256": fp32_sidecar["onnx_sha256"],
        "quantization": block,
    })
    sidecar.pop("parity", None)  # parity is the FP32 graph's against PyTorch; fidelity reports cover this graph
    side = out_path.with_suffix(".json")
    side.write_text(json.dumps(sidecar, indent=2) + "\n")
    return side, sidecar


def _calibration_block(calib_path: Path | None) -> dict:
    if calib_path is None:
        return {"file": None, "sha256": None}
    return {"file": str(calib_path), "sha256": sha256_file(calib_path)}


def _check_fp32(comp: Component, onnx_dir: Path) -> tuple[Path, dict]:
    fp32 = onnx_dir / f"{comp.name}.onnx"
    return fp32, load_sidecar(fp32)


def _samples(comp: Component, feeds: list[dict[str, np.ndarray]]) -> int:
    first = comp.inputs[0]
    return int(sum(f[first.name].shape[first.shape.index("batch")] for f in feeds))


def _modelopt_version() -> str:
    from importlib.metadata import version

    return version("nvidia-modelopt")


FP32_OP_TYPES = ("LSTM",)
"""Ops kept in FP32 in every reduced-precision graph. TensorRT's ONNX parser masks the padded steps of an ``LSTM``
with ``sequence_lens`` using an FP32 constant, which a strongly typed network refuses to mix with FP16 tensors; an
FP16 LSTM therefore cannot be built. The recurrences are a small share of the ASR models' time."""


def make_fp16(comp: Component, onnx_dir: str | Path, feeds: list[dict[str, np.ndarray]],
              calib_path: Path | None = None, out_dir: str | Path | None = None,
              data_max: float = 512.0) -> PrecisionResult:
    """FP16 graph by ModelOpt AutoCast, with FP32 kept where its rules say (see the module docstring).

    A component with spectral outputs (a voice's Griffin-Lim vocoder: fixed STFT/iSTFT bases, phase found by
    iteration) keeps its FP32 graph in the FP16 set, as in the ONNX Runtime INT8 set, and its sidecar says so: its
    FP16 cast moved the audio of frames that agreed to 60 dB mel SNR by 8.6 dB mel cepstral distortion and cost the
    round-trip ASR 1.4 CER points (20 held-out sentences, voice-en, ONNX Runtime on CPU)."""
    import onnx

    onnx_dir = Path(onnx_dir)
    fp32, fp32_side = _check_fp32(comp, onnx_dir)
    out_dir = check_writable(out_dir or onnx_dir)
    out = out_dir / f"{comp.name}.fp16.onnx"
    t0 = time.perf_counter()
    if comp.spectral_outputs:
        shutil.copyfile(fp32, out)
        model = onnx.load(str(out))
        seconds = time.perf_counter() - t0
        block = {"tool": "none", "method": "kept-fp32", "recipe_version": RECIPE_VERSIONS["fp16"],
                 "reason": "spectral outputs (Griffin-Lim): FP16 moved the audio, FP32 kept",
                 "calibration": {**_calibration_block(calib_path), "feeds_used": 0},
                 "counts": graph_counts(model), "io_types": io_types(model), "seconds": round(seconds, 3)}
        side, sidecar = _write_sidecar(comp, fp32_side, out, "fp16", block, model)
        return PrecisionResult(comp.name, "fp16", out, side, sidecar, seconds)
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tempfile.TemporaryDirectory(prefix="speechtrt-autocast-") as tmp, _quiet() as log, \
            _ort_quantization_restored():
        for i, feed in enumerate(feeds[:AUTOCAST_BATCHES]):
            np.savez(Path(tmp) / f"{i:03d}.npz", **feed)
        # AutoCast may rewrite its input file in place; work on a copy so the FP32 graph keeps its recorded sha256.
        source = Path(tmp) / fp32.name
        shutil.copyfile(fp32, source)
        try:
            model = convert_to_mixed_precision(
                str(source), low_precision_type="fp16", keep_io_types=True, calibration_data=tmp, data_max=data_max,
                providers=["cpu"], op_types_to_exclude=list(FP32_OP_TYPES),
            )
        except Exception as exc:
            raise ExportError(f"AutoCast FP16 of {comp.name} failed: {exc.__class__.__name__}: {str(exc)[:300]}\n"
                              f"{log.getvalue()[-800:]}") from exc
    # AutoCast's shape annotations can give tensors of different sizes one symbolic dim (seen on the voices'
    # Griffin-Lim vocoder: [B, 80, T] and [B, 513, T] tied), which ONNX Runtime's buffer planner trusts and then
    # fails on ("Shape mismatch attempting to re-use buffer"). value_info is optional: ORT and TensorRT infer shapes.
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    seconds = time.perf_counter() - t0
    counts = graph_counts(model)
    block = {
        "tool": "modelopt.onnx.autocast.convert_to_mixed_precision",
        "modelopt": _modelopt_version(),
        "method": "autocast",
        "recipe_version": RECIPE_VERSIONS["fp16"],
        "low_precision_type": "fp16",
        "keep_io_types": True,
        "data_max": data_max,
        "calibration": {**_calibration_block(calib_path), "feeds_used": min(len(feeds), AUTOCAST_BATCHES)},
        "counts": counts,
        "io_types": io_types(model),
        "seconds": round(seconds, 3),
    }
    side, sidecar = _write_sidecar(comp, fp32_side, out, "fp16", block, model)
    return PrecisionResult(comp.name, "fp16", out, side, sidecar, seconds)


def make_int8(comp: Component, onnx_dir: str | Path, feeds: list[dict[str, np.ndarray]], method: str = "entropy",
              calib_path: Path | None = None, out_dir: str | Path | None = None,
              high_precision: str = "fp16") -> PrecisionResult:
    """INT8 Q/DQ graph by ModelOpt ONNX PTQ, calibrated on ``feeds`` in ONNX Runtime (CPU)."""
    import onnx
    from modelopt.onnx.quantization import quantize

    check_method(method)
    if high_precision not in HIGH_PRECISIONS:
        raise InputError(f"unknown high precision {high_precision!r}: choose one of {', '.join(HIGH_PRECISIONS)}")
    onnx_dir = Path(onnx_dir)
    fp32, fp32_side = _check_fp32(comp, onnx_dir)
    out_dir = check_writable(out_dir or onnx_dir)
    out = out_dir / f"{comp.name}.int8.onnx"
    reader = _reader_class()(feeds)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="speechtrt-ptq-") as tmp, _quiet() as log, _ort_quantization_restored():
        source = Path(tmp) / fp32.name  # the quantizer may rewrite its input in place (shape inference)
        shutil.copyfile(fp32, source)
        try:
            quantize(
                str(source), quantize_mode="int8", calibration_data_reader=reader, calibration_method=method,
                calibration_eps=["cpu"], output_path=str(out), log_level="ERROR", high_precision_dtype=high_precision,
                op_types_to_exclude_fp16=list(FP32_OP_TYPES),
            )
        except Exception as exc:
            raise ExportError(f"INT8 quantization of {comp.name} failed: {exc.__class__.__name__}: "
                              f"{str(exc)[:300]}\n{log.getvalue()[-800:]}") from exc
    seconds = time.perf_counter() - t0
    model = onnx.load(str(out))
    counts = graph_counts(model)
    if counts["quantize_linear"] == 0:
        raise ExportError(f"INT8 quantization of {comp.name} inserted no QuantizeLinear node: nothing to quantize")
    block = {
        "tool": "modelopt.onnx.quantization.quantize",
        "modelopt": _modelopt_version(),
        "method": method,
        "recipe_version": RECIPE_VERSIONS["int8"],
        "quantize_mode": "int8",
        "high_precision": high_precision,
        "calibration_eps": ["cpu"],
        "calibration": {**_calibration_block(calib_path), "feeds": len(feeds),
                        "samples": _samples(comp, feeds)},
        "counts": counts,
        "io_types": io_types(model),
        "seconds": round(seconds, 3),
    }
    side, sidecar = _write_sidecar(comp, fp32_side, out, "int8", block, model)
    return PrecisionResult(comp.name, "int8", out, side, sidecar, seconds)
