"""INT8 graphs for ONNX Runtime's own int8 kernels (``<component>.int8-ort.onnx``).

The ModelOpt Q/DQ graph (``<component>.int8.onnx``) is what TensorRT builds from; ONNX Runtime's CPU provider does
not fuse it (FP16 scales and Casts between DequantizeLinear and MatMul: every weight is turned back into float on
every call, 20× slower than FP32 for the TTS decoder step). ONNX Runtime runs INT8 fast only in the forms its own
quantizer writes:

* ``dynamic``: INT8 weights, activations quantized per call (``DynamicQuantizeMatMul`` / ``MatMulInteger``,
  ``DynamicQuantizeLSTM``). No calibration; the fastest form for matrix-product graphs at small batch (the TTS
  transformer: the decoder step reads a quarter of the FP32 weight bytes). Weights use 7 bits of range
  (``reduce_range``): ONNX Runtime's u8×s8 kernels on x86 add pairs of products in saturating 16-bit lanes, and
  full-range weights overflowed them — measured on the TTS decoder step (random decoder-step inputs, one step):
  15.7 dB SNR vs FP32 at full range, 35.8 dB with reduced range (38.4 dB with u8 weights, 10 % slower). Scales
  are per output channel: on the trained voice's decoder step (16 held-out calibration rows) the frames are
  44.7 dB from FP32 per channel against 42.6 dB per tensor, at the same speed (one thread, AVX2-only AMD EPYC,
  medians at 1/4/8/16 rows: 0.70/1.08/2.58/4.83 ms per step against 0.71/1.19/2.54/4.78 ms).
* ``static``: QDQ with per-channel INT8 weights (7-bit range as well) and UINT8 activations whose ranges (min/max)
  come from calibration feeds, for convolutions, matrix products, ReLUs and padding-mask multiplies (so a
  convolution front end stays INT8 from the first layer: ``QLinearConv``), then the LSTMs' weights dynamically
  quantized. The faster form for the ASR models' convolution front end. Full-range weights are exact only where
  the CPU has VNNI (one 32-bit accumulation per product); on an AVX2-only x86 host they saturate the same 16-bit
  lanes: asr-stream, ORT INT8 on 480 test utterances, lm decoder, measured on an AVX2-only AMD EPYC: WER 27.7 %
  at full range vs 23.8 % with reduced range (FP32 24.2 %), and 1.4–1.6× the RTFx of FP32 instead of 1.0×. The
  LSTMs' dynamic weights are left at full range (reducing them measured no better: 23.9 %).

* ``none``: the FP32 graph unchanged, for a component whose ``int8_keeps_fp32`` says why (the TTS encoder: it runs
  once per sentence and sets every phoneme's timing, which INT8 weights moved) and for one with no learned weights
  to shrink — the Griffin-Lim vocoder (fixed STFT/iSTFT bases). Dynamically quantized, the vocoder's matrix
  products ran 2.0× slower than FP32 on an AVX2-only AMD EPYC (200 frames, one thread: 4.41 s vs 2.20 s) and only
  added error, so "INT8" leaves it at FP32 and the sidecar says so.

:func:`default_mode` picks per component what measured faster at its fidelity bound; both write a sidecar like
the ModelOpt graphs' (``precision: int8``, a ``quantization`` block naming the tool and mode).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from speechtrt.errors import ExportError, InputError
from speechtrt.export.components import Component
from speechtrt.export.onnx import load_sidecar
from speechtrt.files import check_writable, sha256_file

MODES = ("dynamic", "static", "none")
RECIPE_VERSION = 3
"""Version of what :func:`make_ort_int8` writes (2: dynamic weight scales per output channel; 3: the TTS encoder
kept FP32); a graph on disk made by an older version is made again on next use
(:func:`speechtrt.pipeline.ensure_graph`)."""

GRIFFIN_LIM_KEPT = "fixed bases, not quantized (INT8 measured slower, no gain)"

STATIC_INT8_OPS = ["Conv", "MatMul", "Gemm", "Relu", "Mul"]
"""Operator types the static mode quantizes with calibrated ranges (LSTMs are quantized dynamically)."""


def default_mode(comp: Component) -> str:
    """``static`` for the ASR models (convolution front end), ``dynamic`` for the transformer TTS decoder step,
    ``none`` for a component that says INT8 keeps it FP32 (the TTS encoder) and for the Griffin-Lim vocoder (a
    component whose audio is compared spectrally: fixed bases, nothing to learn)."""
    if comp.spectral_outputs or comp.int8_keeps_fp32:
        return "none"
    return "dynamic" if comp.name.startswith("tts_") else "static"


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizer logs advice on the root logger for every graph; keep the console for results."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_static(fp32: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """Static QDQ (see the module docstring) of ``fp32`` into ``out``, calibrated on ``feeds``."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static as ort_quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    source = fp32
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = out.with_suffix(".pre.onnx")
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        source = pre
    except Exception:  # pre-processing is an optimisation; quantize the plain graph when it refuses
        source = fp32
    static = out.with_suffix(".static.onnx")
    ort_quantize_static(str(source), str(static), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=STATIC_INT8_OPS, reduce_range=True)
    if any(n.op_type == "LSTM" for n in onnx.load(str(static), load_external_data=False).graph.node):
        quantize_dynamic(str(static), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
        static.unlink()
    else:
        static.replace(out)
    if source != fp32:
        source.unlink(missing_ok=True)
    return out


def quantize_dynamic_int8(fp32: Path, out: Path) -> Path:
    """Dynamic INT8 of ``fp32`` into ``out``: INT8 weights (per output channel, 7-bit range: see the module docstring),
    activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    return out


def make_ort_int8(comp: Component, onnx_dir: str | Path, feeds: list[dict[str, np.ndarray]] | None = None,
                  mode: str | None = None, out_dir: str | Path | None = None) -> Path:
    """Write ``<component>.int8-ort.onnx`` (+ sidecar) from the FP32 graph in ``onnx_dir``; returns its path.

    ``mode`` defaults to :func:`default_mode`; ``static`` needs calibration ``feeds`` (never the test set).
    """
    mode = mode or default_mode(comp)
    if mode not in MODES:
        raise InputError(f"unknown ONNX Runtime INT8 mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "static" and not feeds:
        raise InputError(f"static INT8 of {comp.name} needs calibration data: run `speechtrt calibrate` (or give a "
                         "development set)")
    onnx_dir = Path(onnx_dir)
    fp32 = onnx_dir / f"{comp.name}.onnx"
    fp32_side = load_sidecar(fp32)
    out = check_writable(out_dir or onnx_dir, "--onnx-dir") / f"{comp.name}.int8-ort.onnx"
    t0 = time.perf_counter()
    try:
        with _quiet_root_logger():
            if mode == "static":
                quantize_static(fp32, out, feeds)
            elif mode == "none":
                shutil.copyfile(fp32, out)
            else:
                quantize_dynamic_int8(fp32, out)
    except Exception as exc:
        raise ExportError(f"ONNX Runtime INT8 ({mode}) of {comp.name} failed: {exc.__class__.__name__}: "
                          f"{str(exc)[:300]}") from exc
    import onnxruntime

    sidecar = {**fp32_side, "onnx": out.name, "onnx_sha256": sha256_file(out), "onnx_bytes": out.stat().st_size,
               "precision": "int8", "parity": None,
               "quantization": {"tool": f"onnxruntime.quantization ({onnxruntime.__version__})", "mode": mode,
                                "target": "ONNX Runtime int8 kernels",
                                "static_ops": STATIC_INT8_OPS if mode == "static" else None,
                                "weights": ("fp32: " + (comp.int8_keeps_fp32 or GRIFFIN_LIM_KEPT)
                                            if mode == "none" else
                                            "int8 per output channel, 7-bit range (reduce_range: no 16-bit "
                                            "saturation without VNNI)"
                                            + ("; LSTM weights full range" if mode == "static" else "")),
                                "calibration_feeds": len(feeds or []) if mode == "static" else 0,
                                "recipe_version": RECIPE_VERSION,
                                "seconds": round(time.perf_counter() - t0, 3)}}
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return out
