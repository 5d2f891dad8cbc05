"""Opening runners: one factory, clear errors naming the command that makes a missing artifact; a fallback across
backends only when asked, and then logged."""

import logging

import numpy as np
import pytest
import torch

from speechtrt.errors import EngineLoadError, InputError
from speechtrt.export import component
from speechtrt.models import build_model
from speechtrt.pipeline import export_component
from speechtrt.runtime.open import Artifacts, graph_name, open_first, open_runner


@pytest.fixture(scope="module")
def vocoder_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sel")
    model = build_model("tts")
    export_component(component("tts_vocoder"), model, out, check=False)
    return out, model


def test_without_fallback_the_first_backend_error_is_raised(vocoder_dir, tmp_path):
    onnx_dir, model = vocoder_dir
    with pytest.raises(EngineLoadError, match="needs a CUDA GPU|does not exist|no such|cannot"):
        open_first("tts_vocoder", ("trt", "ort"), artifacts=Artifacts(onnx_dir, tmp_path, model))


def test_fallback_is_opt_in_named_and_logged(vocoder_dir, tmp_path, caplog):
    onnx_dir, model = vocoder_dir
    with caplog.at_level(logging.WARNING, logger="speechtrt.runtime"):
        runner, attempts = open_first("tts_vocoder", ("trt", "ort"), artifacts=Artifacts(onnx_dir, tmp_path, model),
                                      allow_fallback=True)
    assert [(a.backend, a.ok) for a in attempts] == [("trt", False), ("ort", True)]
    assert "trt backend cannot run tts_vocoder" in caplog.text and "falling back to ort" in caplog.text
    out = runner.infer({"mel": torch.zeros(1, 5, 80)})
    assert np.asarray(out["audio"]).shape == (1, 40)


def test_all_backends_failing_names_each_reason(tmp_path):
    with pytest.raises(EngineLoadError, match=r"no backend could run tts_vocoder \(trt: .*; ort: no fp32 ONNX graph of tts_vocoder.*speechtrt export"):
        open_first("tts_vocoder", ("trt", "ort"), artifacts=Artifacts(tmp_path, tmp_path), allow_fallback=True)
    with pytest.raises(InputError, match="unknown backend"):
        open_first("tts_vocoder", ("tensorflow",))


def test_one_file_rule_for_every_graph():
    assert graph_name("asr_small", "fp32") == "asr_small.onnx"
    assert graph_name("asr_small", "fp16") == "asr_small.fp16.onnx"
    assert graph_name("asr_small", "int8", "trt") == "asr_small.int8.onnx"  # ModelOpt Q/DQ: what TensorRT builds
    assert graph_name("asr_small", "int8", "ort") == "asr_small.int8-ort.onnx"  # ONNX Runtime's int8 kernels


@pytest.mark.parametrize("backend,precision,fix", [
    ("ort", "fp32", "speechtrt export --model tts"),
    ("ort", "int8", "speechtrt calibrate --model tts --precision int8"),
    ("ort", "fp16", "speechtrt calibrate --model tts --precision fp16"),
])
def test_a_missing_graph_names_the_command_that_makes_it(tmp_path, backend, precision, fix):
    with pytest.raises(EngineLoadError, match=fix):
        open_runner("tts_vocoder", backend, precision, artifacts=Artifacts(onnx_dir=tmp_path))


def test_bad_names_are_refused_before_anything_opens():
    with pytest.raises(InputError, match="unknown backend"):
        open_runner("tts_vocoder", "tensorflow")
    with pytest.raises(InputError, match="the ort backend runs fp32, fp16, int8"):
        open_runner("tts_vocoder", "ort", "bf16")
    with pytest.raises(InputError, match="unknown component"):
        open_runner("tts_wavenet", "ort")
    with pytest.raises(InputError, match="needs the PyTorch model"):
        open_runner("tts_vocoder", "torch")
