"""Engine builds with TensorRT-RTX on the CPU: every component at FP32, three at FP16 and INT8, and the refusals."""

import importlib.util
import json
import shutil

import onnx
import pytest

from speechtrt.engines.arch import current_device, parse_gpu
from speechtrt.engines.builder import (
    BuildSettings, EngineBuilder, onnx_path_for, parse_shape_override, profile_from_sidecar,
)
from speechtrt.engines.manifest import read_manifest
from speechtrt.errors import BuildError, InputError
from speechtrt.export import DimRange
from speechtrt.vocab import COMPONENT_NAMES
from speechtrt.files import sha256_file

pytestmark = pytest.mark.slow

GPU = "sm86"
REDUCED_COMPONENTS = ("asr_small", "asr_stream_step", "tts_vocoder")


@pytest.fixture
def builder_for(rtx):
    def make(engines_dir, **settings):
        return EngineBuilder(BuildSettings(parse_gpu(GPU), engines_dir=engines_dir, **settings), flavour=rtx)

    return make


@pytest.mark.parametrize("text, want", [
    ("batch=1:8:32", DimRange("batch", 1, 8, 32)),
    ("frames = 1:100:100", DimRange("frames", 1, 100, 100)),
])
def test_shape_override_parses(text, want):
    assert parse_shape_override(text) == want


@pytest.mark.parametrize("text, match", [
    ("batch=1:8", "NAME=MIN:OPT:MAX"), ("batch", "NAME=MIN:OPT:MAX"), ("=1:2:3", "NAME=MIN:OPT:MAX"),
    ("batch=a:b:c", "integers"), ("batch=8:1:32", "min <= opt <= max"), ("batch=0:1:2", "1 <= min"),
])
def test_bad_shape_override_is_input_error(text, match):
    with pytest.raises(InputError, match=match):
        parse_shape_override(text)


def test_profile_takes_sidecar_ranges_and_overrides(onnx_dir):
    sidecar = json.loads((onnx_dir / "asr_small.json").read_text())
    profiles, dims = profile_from_sidecar(sidecar, (DimRange("batch", 1, 4, 8), DimRange("beam", 1, 2, 3)))
    features, lengths = profiles
    assert (features.min, features.opt, features.max) == ((1, 1, 80), (4, 800, 80), (8, 3000, 80))
    assert (lengths.min, lengths.opt, lengths.max) == ((1,), (4,), (8,))
    assert dims["batch"] == {"min": 1, "opt": 4, "max": 8} and "beam" not in dims
    untouched, _ = profile_from_sidecar(sidecar)
    assert [p.to_json() for p in untouched] == [
        {k: s[k] for k in ("name", "dtype", "min", "opt", "max")} for s in sidecar["inputs"]]


@pytest.mark.parametrize("name", COMPONENT_NAMES)
def test_every_component_builds_at_fp32(fp32_engines, onnx_dir, rtx, name):
    result = fp32_engines[name]
    assert result.plan.name == f"{name}.fp32.plan" and result.plan.parent.parent.name == GPU
    assert result.plan.stat().st_size == result.plan_bytes > 100_000
    entry = read_manifest(result.plan.parent)["engines"][f"{name}.fp32"]
    assert entry["plan_sha256"] == sha256_file(result.plan)
    assert entry["precision"] == "fp32" and entry["strongly_typed"] is True
    assert entry["tensorrt"] == {"flavour": "tensorrt-rtx", "version": rtx.version}
    assert entry["target"] == {"gpu": GPU, "compute_capability": "8.6", "hardware_compat": "none",
                               "ahead_of_time": True}
    assert entry["onnx"]["sha256"] == sha256_file(onnx_dir / f"{name}.onnx")
    sidecar = json.loads((onnx_dir / f"{name}.json").read_text())
    assert entry["profiles"][0]["inputs"] == [
        {k: s[k] for k in ("name", "dtype", "min", "opt", "max")} for s in sidecar["inputs"]]
    assert entry["build_seconds"] > 0 and entry["timing_cache"] is None  # TensorRT-RTX keeps no timing cache
    summary = entry["precision_summary"]
    assert summary["source"] == "network" and summary["tensors"]["FLOAT"] > 0
    assert "INT8" not in summary["tensors"] and summary["quantize_layers"] == 0
    if current_device() is None:
        assert entry["engine_inspector"]["available"] is False and "no GPU" in entry["engine_inspector"]["reason"]


@pytest.mark.parametrize("name", ["asr_small", "asr_medium", "asr_large", "asr_stream_step"])
def test_lstm_graphs_with_packing_ops_and_int64_inputs_build(fp32_engines, onnx_dir, name):
    graph = onnx.load(str(onnx_dir / f"{name}.onnx"), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    assert "LSTM" in ops
    if name != "asr_stream_step":  # the offline models pack padded batches: sequence_lens, TopK, ScatterElements
        assert {"TopK", "ScatterElements"} <= ops
        assert all(len(n.input) > 4 and n.input[4] for n in graph.node if n.op_type == "LSTM")
        assert fp32_engines[name].summary.count("INT64") > 0
        assert graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert fp32_engines[name].plan.stat().st_size > 0


@pytest.mark.parametrize("name", REDUCED_COMPONENTS)
def test_fp16_engines_contain_half_tensors(reduced_engines, name):
    result = reduced_engines[(name, "fp16")]
    assert result.plan.name == f"{name}.fp16.plan" and result.plan_bytes == result.plan.stat().st_size > 0
    assert result.summary.count("HALF") > 0
    entry = read_manifest(result.plan.parent)["engines"][f"{name}.fp16"]
    assert entry["precision"] == "fp16" and entry["onnx"]["file"] == f"{name}.fp16.onnx"
    assert entry["precision_summary"]["tensors"]["HALF"] == result.summary.count("HALF")


def test_stream_step_lstm_builds_in_fp16(reduced_engines, reduced_dir):
    """Without sequence_lens the parser imports FP16 LSTMs: the streaming step's recurrent weights are FP16."""
    graph = onnx.load(str(reduced_dir / "asr_stream_step.fp16.onnx")).graph
    weights = {i.name: i.data_type for i in graph.initializer}
    lstm_weights = [weights[n.input[1]] for n in graph.node if n.op_type == "LSTM"]
    assert lstm_weights and set(lstm_weights) == {onnx.TensorProto.FLOAT16}
    assert reduced_engines[("asr_stream_step", "fp16")].plan.stat().st_size > 0


@pytest.mark.parametrize("name", REDUCED_COMPONENTS)
def test_int8_engines_contain_int8_tensors_and_qdq_layers(reduced_engines, reduced_dir, name):
    result = reduced_engines[(name, "int8")]
    assert result.plan.name == f"{name}.int8.plan" and result.plan_bytes == result.plan.stat().st_size > 0
    graph = onnx.load(str(reduced_dir / f"{name}.int8.onnx")).graph
    q_nodes = sum(n.op_type == "QuantizeLinear" for n in graph.node)
    assert result.summary.count("INT8") >= q_nodes > 0  # every Q output is an INT8 tensor in the network
    assert result.summary.quantize_layers == q_nodes and result.summary.dequantize_layers == q_nodes
    entry = read_manifest(result.plan.parent)["engines"][f"{name}.int8"]
    assert entry["precision"] == "int8" and entry["precision_summary"]["quantize_layers"] == q_nodes


def test_manifest_keeps_every_precision_of_a_model(fp32_engines, reduced_engines):
    engines = read_manifest(fp32_engines["asr_small"].plan.parent)["engines"]
    assert {"asr_small.fp32", "asr_small.fp16", "asr_small.int8"} <= set(engines)
    tts = read_manifest(fp32_engines["tts_vocoder"].plan.parent)
    assert tts["model"] == "tts" and tts["gpu"] == GPU
    assert {"tts_encoder.fp32", "tts_decoder_step.fp32", "tts_vocoder.fp32", "tts_vocoder.int8"} <= set(tts["engines"])


@pytest.fixture
def scratch(tmp_path, reduced_dir):
    """A private ONNX folder with the FP32 tts_vocoder and asr_small graphs."""
    src = tmp_path / "onnx"
    src.mkdir()
    for name in ("tts_vocoder", "asr_small"):
        for suffix in (".onnx", ".json"):
            shutil.copy(reduced_dir / f"{name}{suffix}", src / f"{name}{suffix}")
    return src


@pytest.mark.parametrize("precision, match", [
    ("int8", "INT8 was asked for but .* has no INT8 tensors and no QUANTIZE/DEQUANTIZE layers"),
    ("fp16", "FP16 was asked for but .* has no HALF tensors"),
])
def test_precision_asked_but_absent_from_graph_is_refused(scratch, tmp_path, builder_for, graph_tools, precision,
                                                          match):
    fake = onnx_path_for(scratch, "tts_vocoder", precision)
    shutil.copy(scratch / "tts_vocoder.onnx", fake)  # an FP32 graph under a reduced-precision name
    graph_tools.write_sidecar(scratch / "tts_vocoder.json", precision, fake)
    engines = tmp_path / "engines"
    with pytest.raises(BuildError, match=match):
        builder_for(engines).build("tts_vocoder", precision, scratch)
    assert not any(engines.rglob("*.plan"))


def test_fp16_lstm_with_sequence_lens_is_a_named_parser_limitation(scratch, tmp_path, builder_for, graph_tools):
    """TensorRT's ONNX parser masks padded LSTM steps with an FP32 zero, so an all-FP16 packed LSTM cannot parse.

    The reduced-precision graphs therefore keep packed LSTMs in FP32 (the stream step's LSTMs, without
    sequence_lens, do build in FP16). If a TensorRT release fixes the parser, this test fails and the rule can go.
    """
    graph_tools.to_fp16(scratch / "asr_small.onnx", scratch / "asr_small.fp16.onnx", keep_packed_lstm=False)
    graph_tools.write_sidecar(scratch / "asr_small.json", "fp16", scratch / "asr_small.fp16.onnx")
    with pytest.raises(BuildError) as err:
        builder_for(tmp_path / "engines").build("asr_small", "fp16", scratch)
    msg = str(err.value)
    assert "cannot parse" in msg and "/model/encoder/LSTM" in msg and "Half and Float" in msg
    assert "Keep LSTM nodes in FP32" in msg


def test_missing_graphs_name_the_command_that_makes_them(scratch, tmp_path, builder_for):
    builder = builder_for(tmp_path / "engines")
    with pytest.raises(BuildError, match=r"asr_small\.int8\.onnx does not exist.*`speechtrt calibrate --model "
                                         r"asr-small --precision int8 --onnx-dir "):
        builder.build("asr_small", "int8", scratch)
    with pytest.raises(BuildError, match=r"asr_medium\.onnx does not exist.*`speechtrt export --model asr-medium"):
        builder.build("asr_medium", "fp32", scratch)


def test_sidecar_of_another_precision_is_refused(scratch, tmp_path, builder_for):
    shutil.copy(scratch / "tts_vocoder.onnx", scratch / "tts_vocoder.fp16.onnx")
    shutil.copy(scratch / "tts_vocoder.json", scratch / "tts_vocoder.fp16.json")  # says fp32 (no "precision")
    with pytest.raises(BuildError, match="declares precision 'fp32'"):
        builder_for(tmp_path / "engines").build("tts_vocoder", "fp16", scratch)


def test_shape_overrides_reach_the_profile_and_manifest(scratch, tmp_path, builder_for):
    builder = builder_for(tmp_path / "engines", shapes=(DimRange("batch", 1, 2, 4),))
    result = builder.build("tts_vocoder", "fp32", scratch)
    mel = result.entry["profiles"][0]["inputs"][0]
    assert (mel["min"], mel["opt"], mel["max"]) == ([1, 1, 80], [2, 250, 80], [4, 1000, 80])
    assert result.entry["dims"]["batch"] == {"min": 1, "opt": 2, "max": 4}
    assert result.warnings == ()


def test_graph_rewritten_after_export_builds_with_a_warning(scratch, tmp_path, builder_for):
    model = onnx.load(str(scratch / "tts_vocoder.onnx"))
    model.doc_string = "saved again by another tool"
    onnx.save(model, str(scratch / "tts_vocoder.onnx"))
    result = builder_for(tmp_path / "engines").build("tts_vocoder", "fp32", scratch)
    assert len(result.warnings) == 1 and "rewritten after export" in result.warnings[0]
    assert result.entry["warnings"] == list(result.warnings)
    assert result.entry["onnx"]["sha256"] != result.entry["onnx"]["sidecar_sha256"]


def test_a_plan_whose_graph_was_made_again_is_rebuilt_on_use(scratch, tmp_path, monkeypatch):
    """The plan a job opens is rebuilt when its graph's sidecar records other bytes than the plan's manifest entry
    (the graph was made again, e.g. by a newer quantization recipe); an unchanged graph reuses the plan."""
    from speechtrt.pipeline import ensure_artifact
    from speechtrt.runtime.open import Artifacts

    monkeypatch.delenv("SPEECHTRT_TRT", raising=False)
    artifacts = Artifacts(onnx_dir=scratch, engine_dir=tmp_path / "engines")
    plan = ensure_artifact("tts_vocoder", "fp32", "trt", artifacts, gpu=GPU)
    built = plan.stat().st_mtime_ns
    said = []
    assert ensure_artifact("tts_vocoder", "fp32", "trt", artifacts, gpu=GPU, log=said.append) == plan
    assert plan.stat().st_mtime_ns == built and not said

    side = scratch / "tts_vocoder.json"
    record = json.loads(side.read_text())
    record["onnx_sha256"] = "0" * 64
    side.write_text(json.dumps(record))
    assert ensure_artifact("tts_vocoder", "fp32", "trt", artifacts, gpu=GPU, log=said.append) == plan
    assert plan.stat().st_mtime_ns != built and any("its graph was made again" in s for s in said), said
    entry = json.loads((plan.parent / "manifest.json").read_text())["engines"]["tts_vocoder.fp32"]
    assert entry["onnx"]["sidecar_sha256"] == "0" * 64


def test_without_a_gpu_the_builder_falls_back_to_tensorrt_rtx(tmp_path, monkeypatch):
    monkeypatch.delenv("SPEECHTRT_TRT", raising=False)
    builder = EngineBuilder(BuildSettings(parse_gpu("sm89"), engines_dir=tmp_path), device=None)
    assert builder.flavour.flavour == "tensorrt-rtx" and builder.target.ahead_of_time  # TensorRT needs a GPU
    assert builder.timing_cache_path() is None


def test_sm90_with_tensorrt_rtx_is_refused_before_any_work(tmp_path, rtx):
    with pytest.raises(BuildError, match="TensorRT-RTX cannot compile for sm90"):
        EngineBuilder(BuildSettings(parse_gpu("sm90"), engines_dir=tmp_path), flavour=rtx)
    assert not any(tmp_path.iterdir())


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT (pypi.nvidia.com)")
def test_tensorrt_on_this_gpu_keeps_a_timing_cache_and_inspects_the_engine(onnx_dir, tmp_path):
    from speechtrt.engines.flavour import find_flavour

    device = current_device()
    builder = EngineBuilder(BuildSettings(parse_gpu(device.sm), engines_dir=tmp_path), flavour=find_flavour("tensorrt"))
    result = builder.build("tts_vocoder", "fp32", onnx_dir)
    assert (tmp_path / device.sm / "timing.cache").stat().st_size > 0
    assert result.entry["device"]["compute_capability"] == device.capability
    assert result.inspected is not None and result.inspected.source == "engine-inspector"
    assert result.inspected.count("FLOAT") > 0
