"""INT8 for ONNX Runtime's own kernels: the TTS graphs decode close to FP32 over a fed-back loop, the ASR graphs
quantize statically, and a misuse is refused."""

import numpy as np
import onnx
import pytest

from speechtrt.errors import InputError
from speechtrt.export import component
from speechtrt.pipeline import ensure_graph
from speechtrt.quantize.fidelity import snr_db
from speechtrt.quantize.ort_int8 import default_mode, make_ort_int8
from speechtrt.runtime.open import Artifacts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_dir(tts_onnx_dir, tmp_path_factory):
    import shutil

    out = tmp_path_factory.mktemp("ort-int8")
    for name in ("tts_encoder", "tts_decoder_step", "tts_vocoder"):
        for suffix in (".onnx", ".json"):
            shutil.copy(tts_onnx_dir / f"{name}{suffix}", out / f"{name}{suffix}")
        ensure_graph(name, "int8", "ort", Artifacts(onnx_dir=out))
    return out


def test_tts_graphs_are_dynamic_int8_with_integer_matmuls(int8_dir):
    graph = onnx.load(str(int8_dir / "tts_decoder_step.int8-ort.onnx"), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert not {"QuantizeLinear", "DequantizeLinear"} & ops  # not the TensorRT (Q/DQ) form
    assert default_mode(component("tts_decoder_step")) == "dynamic"
    assert default_mode(component("asr_small")) == "static"


def test_the_tts_encoder_stays_fp32_and_its_sidecar_says_why(int8_dir):
    """The encoder runs once per sentence and sets every phoneme's timing: its ``int8-ort`` graph is the FP32 graph,
    byte for byte, with mode ``none`` and the component's reason in the sidecar."""
    import json

    assert default_mode(component("tts_encoder")) == "none"
    out = int8_dir / "tts_encoder.int8-ort.onnx"
    assert out.read_bytes() == (int8_dir / "tts_encoder.onnx").read_bytes()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["precision"] == "int8" and side["quantization"]["mode"] == "none"
    assert side["quantization"]["weights"] == f"fp32: {component('tts_encoder').int8_keeps_fp32}"


def test_int8_decoding_stays_within_the_fidelity_bound_over_a_fed_back_loop(tts_model, int8_dir):
    """60 frames decoded by the whole INT8 chain (ORT int8 kernels) against the FP32 chain: mel SNR >= 30 dB."""
    from speechtrt.config import FrameRule
    from speechtrt.tts.service import ServiceConfig, TTSService

    mels = {}
    for precision in ("fp32", "int8"):
        service = TTSService(tts_model, ServiceConfig(backend="ort", precision=precision, onnx_dir=str(int8_dir),
                                                      max_slots=2, max_frames=60, frame_rule=FrameRule(max_frames=60),
                                                      threads=1, overlap_vocoder=False))
        try:
            mels[precision] = service.synthesize("Storm warning issued for the coast.", n_frames=60).mel
        finally:
            service.close()
    assert snr_db(mels["int8"], mels["fp32"]) >= 30.0


def test_static_mode_needs_calibration_feeds(tts_onnx_dir):
    with pytest.raises(InputError, match="needs calibration data"):
        make_ort_int8(component("tts_vocoder"), tts_onnx_dir, None, mode="static")
    with pytest.raises(InputError, match="unknown ONNX Runtime INT8 mode"):
        make_ort_int8(component("tts_vocoder"), tts_onnx_dir, [{"mel": np.zeros((1, 4, 80), np.float32)}], mode="x")


def test_a_graph_made_by_an_older_recipe_is_made_again_on_use(int8_dir):
    """An INT8 graph whose sidecar records an older recipe (or none: the first) is remade by the next job that uses
    it, and says so; a current one is reused untouched."""
    import json

    from speechtrt.pipeline import made_by_older_recipe
    from speechtrt.quantize.ort_int8 import RECIPE_VERSION

    graph = int8_dir / "tts_decoder_step.int8-ort.onnx"
    side = graph.with_suffix(".json")
    record = json.loads(side.read_text())
    assert record["quantization"]["recipe_version"] == RECIPE_VERSION
    assert made_by_older_recipe(graph, "int8", "ort") is None
    before = graph.stat().st_mtime_ns
    ensure_graph("tts_decoder_step", "int8", "ort", Artifacts(onnx_dir=int8_dir))
    assert graph.stat().st_mtime_ns == before

    del record["quantization"]["recipe_version"]
    side.write_text(json.dumps(record))
    assert made_by_older_recipe(graph, "int8", "ort") == (1, RECIPE_VERSION)
    said = []
    ensure_graph("tts_decoder_step", "int8", "ort", Artifacts(onnx_dir=int8_dir), log=said.append)
    assert any("made it (version 1; this version makes" in s for s in said), said
    assert json.loads(side.read_text())["quantization"]["recipe_version"] == RECIPE_VERSION
    assert made_by_older_recipe(graph, "int8", "ort") is None
