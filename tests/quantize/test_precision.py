"""FP16 (AutoCast) and INT8 (Q/DQ) graphs from real calibration data: structure, ONNX Runtime execution, fidelity.

Covered here: asr_small, asr_stream_step and tts_vocoder (their export, calibration and quantization take seconds).
The TTS encoder and decoder step go through the same code; their INT8 calibration takes ~25 s each on 2 cores,
so they are measured by `speechtrt calibrate` (reports/fidelity.json) rather than in the test suite.
"""

import json

import numpy as np
import onnx
import pytest

from speechtrt.errors import InputError
from speechtrt.export import component
from speechtrt.quantize.calib import load_set, minibatches
from speechtrt.quantize.fidelity import bounds_for, evaluate_component, graph_fidelity
from speechtrt.quantize.precision import CALIB_BATCH, check_method, make_fp16, make_int8, parse_precisions
from speechtrt.runtime.open import graph_opener

FAST = ("asr_small", "asr_stream_step", "tts_vocoder")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graphs(quant_dirs):
    """{(component, precision): PrecisionResult} for FAST, INT8 calibrated with entropy."""
    onnx_dir, calib_dir = quant_dirs
    out = {}
    for name in FAST:
        comp = component(name)
        feeds = minibatches(comp, load_set(calib_dir, name), CALIB_BATCH)
        out[(name, "fp16")] = make_fp16(comp, onnx_dir, feeds, calib_dir / f"{name}.npz")
        out[(name, "int8")] = make_int8(comp, onnx_dir, feeds, "entropy", calib_dir / f"{name}.npz")
    return out


def _elem(model, name):
    vi = next(v for v in (*model.graph.input, *model.graph.output) if v.name == name)
    return onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name


@pytest.mark.parametrize("name", FAST)
def test_int8_graph_has_qdq_and_keeps_io_types(graphs, quant_dirs, name):
    res = graphs[(name, "int8")]
    model = onnx.load(str(res.onnx_path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") >= ops.count("QuantizeLinear")
    comp = component(name)
    for spec in (*comp.inputs, *comp.outputs):
        assert _elem(model, spec.name) == spec.dtype
    side = json.loads(res.sidecar_path.read_text())
    assert res.sidecar_path.name == f"{name}.int8.json" and side["precision"] == "int8"
    q = side["quantization"]
    assert q["method"] == "entropy" and q["counts"]["quantize_linear"] == ops.count("QuantizeLinear")
    assert q["calibration"]["sha256"] and q["calibration"]["samples"] == 16
    fp32_side = json.loads((quant_dirs[0] / f"{name}.json").read_text())
    assert side["fp32_onnx_sha256"] == fp32_side["onnx_sha256"] and side["dims"] == fp32_side["dims"]


@pytest.mark.parametrize("name", FAST)
def test_fp16_graph_has_fp16_weights_casts_and_fp32_io(graphs, name):
    res = graphs[(name, "fp16")]
    model = onnx.load(str(res.onnx_path))
    counts = res.sidecar["quantization"]["counts"]
    assert counts["initializers_by_dtype"].get("float16", 0) > 0
    assert counts["casts"] > 0 and counts["quantize_linear"] == 0
    for spec in (*component(name).inputs, *component(name).outputs):
        assert _elem(model, spec.name) == spec.dtype  # float32 / int64 at the boundary
    assert res.sidecar["precision"] == "fp16" and res.sidecar["quantization"]["keep_io_types"] is True


@pytest.mark.parametrize("name", FAST)
def test_int8_runs_in_onnx_runtime_within_bounds(graphs, quant_dirs, name):
    onnx_dir, calib_dir = quant_dirs
    row = evaluate_component(name, "int8", calib_dir, graph_opener(onnx_dir))
    assert row["backend"] == "ort"  # the Q/DQ graph itself, in ONNX Runtime
    assert row["ok"], row["failures"]
    b = bounds_for(name, "int8")
    assert row["min_snr_db"] >= b.min_snr_db and row["max_rel_l2"] <= b.max_rel_l2
    assert row["min_snr_db"] < 200  # really quantized: not bit-identical to FP32
    if name.startswith("asr"):
        assert row["top1_agreement"] >= b.min_top1_agreement and row["utterances"] == 8
        # a random-init model is not confident enough for CER against FP32 to mean anything: reported, not enforced
        assert 0.0 <= row["cer_vs_fp32"] and row["cer_enforced"] is False


@pytest.mark.parametrize("name", ("asr_small", "tts_vocoder"))
def test_fp16_within_bounds(graphs, quant_dirs, name):
    row = evaluate_component(name, "fp16", quant_dirs[1], graph_opener(quant_dirs[0]))
    assert row["ok"], row["failures"]
    assert row["min_snr_db"] >= bounds_for(name, "fp16").min_snr_db


def test_fp16_stream_step_checked_by_the_reference_evaluator(graphs, quant_dirs):
    """ONNX Runtime's CPU provider crashes on this FP16 LSTM graph; the ONNX reference evaluator runs the same
    graph at its FP16 types, and its error matches FP16 rounding (a few 1e-2 on centred random-init log-probs)."""
    onnx_dir, calib_dir = quant_dirs
    comp = component("asr_stream_step")
    feeds = minibatches(comp, load_set(calib_dir, comp.name, heldout=True), 2)[:1]
    open_graph = graph_opener(onnx_dir)
    test = open_graph(comp.name, "fp16", feeds[0])
    assert test.backend in ("ort", "onnx-reference")
    res = graph_fidelity(comp, open_graph(comp.name, "fp32"), test, feeds)
    b = bounds_for(comp.name, "fp16")
    assert res["min_snr_db"] >= b.min_snr_db and res["max_rel_l2"] <= b.max_rel_l2
    assert res["outputs"]["h_out"]["rel_l2"] < 5e-3  # the carried LSTM state stays close to FP32


def test_max_calibration_also_works(quant_dirs):
    onnx_dir, calib_dir = quant_dirs
    comp = component("tts_vocoder")
    feeds = minibatches(comp, load_set(calib_dir, comp.name), CALIB_BATCH)
    res = make_int8(comp, onnx_dir, feeds, "max", out_dir=onnx_dir / "max")
    assert res.onnx_path.name == "tts_vocoder.int8.onnx" and res.sidecar["quantization"]["method"] == "max"
    ref = graph_opener(onnx_dir)(comp.name, "fp32")
    held = minibatches(comp, load_set(calib_dir, comp.name, heldout=True), 8)
    assert graph_fidelity(comp, ref, graph_opener(onnx_dir / "max")(comp.name, "int8"), held)["min_snr_db"] > 20.0


def test_bad_method_precision_and_missing_graph(quant_dirs, tmp_path):
    with pytest.raises(InputError, match="unknown calibration method 'minmax'"):
        check_method("minmax")
    with pytest.raises(InputError, match="--precision fp8: unknown precision"):
        parse_precisions("fp16,fp8")
    assert parse_precisions(" int8, fp16 ,int8") == ["int8", "fp16"]
    comp = component("asr_small")
    feeds = [{"features": np.zeros((1, 8, 80), np.float32), "feature_lengths": np.array([8])}]
    with pytest.raises(InputError, match="does not exist: run `speechtrt export`"):
        make_int8(comp, tmp_path, feeds)
    with pytest.raises(InputError, match="unknown calibration method"):
        make_int8(comp, quant_dirs[0], feeds, method="percentile")


def test_onnx_runtime_static_int8_still_works_after_modelopt_quantized_in_the_same_process(graphs, quant_dirs,
                                                                                            tmp_path):
    """ModelOpt patches ONNX Runtime's calibrators in place; `make_int8` puts them back, so ONNX Runtime's own static
    INT8 (what `speechtrt eval` runs for asr sizes) works after a ModelOpt INT8 in one process."""
    import shutil

    from onnxruntime.quantization import calibrate

    from speechtrt.quantize.ort_int8 import make_ort_int8

    before = dict(vars(calibrate.MinMaxCalibrater)), dict(vars(calibrate.CalibraterBase)), calibrate.create_calibrator
    onnx_dir, calib_dir = quant_dirs
    comp = component("asr_small")
    feeds = minibatches(comp, load_set(calib_dir, "asr_small"), CALIB_BATCH)
    make_int8(comp, onnx_dir, feeds, "max", out_dir=tmp_path / "modelopt")
    assert (dict(vars(calibrate.MinMaxCalibrater)), dict(vars(calibrate.CalibraterBase)),
            calibrate.create_calibrator) == before
    for suffix in (".onnx", ".json"):
        shutil.copy(onnx_dir / f"asr_small{suffix}", tmp_path / f"asr_small{suffix}")
    out = make_ort_int8(comp, tmp_path, feeds, mode="static")
    assert json.loads(out.with_suffix(".json").read_text())["quantization"]["mode"] == "static"
    assert [n.op_type for n in onnx.load(str(out)).graph.node].count("QuantizeLinear") > 0
