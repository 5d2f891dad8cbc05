"""TrtFlavour selection: the first backend or a clear error; a fallback only when asked, and then logged."""

import logging

import numpy as np
import pytest
import torch

from speechtrt.errors import EngineLoadError, InputError
from speechtrt.export import component, export_component
from speechtrt.models import build_model
from speechtrt.runtime.select import open_runner


@pytest.fixture(scope="module")
def vocoder_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sel")
    model = build_model("tts")
    export_component(component("tts_vocoder"), model, out, check=False)
    return out, model


def test_without_fallback_the_first_backend_error_is_raised(vocoder_dir, tmp_path):
    onnx_dir, model = vocoder_dir
    with pytest.raises(EngineLoadError, match="needs a CUDA GPU|does not exist|no such|cannot"):
        open_runner("tts_vocoder", ("trt", "ort"), onnx_dir=onnx_dir, engine_dir=tmp_path, model=model)


def test_fallback_is_opt_in_named_and_logged(vocoder_dir, tmp_path, caplog):
    onnx_dir, model = vocoder_dir
    with caplog.at_level(logging.WARNING, logger="speechtrt.runtime"):
        runner, attempts = open_runner("tts_vocoder", ("trt", "ort"), onnx_dir=onnx_dir, engine_dir=tmp_path,
                                       model=model, allow_fallback=True)
    assert [(a.backend, a.ok) for a in attempts] == [("trt", False), ("ort", True)]
    assert "trt backend cannot run tts_vocoder" in caplog.text and "falling back to ort" in caplog.text
    out = runner.infer({"mel": torch.zeros(1, 5, 80)})
    assert np.asarray(out["audio"]).shape == (1, 40)


def test_all_backends_failing_names_each_reason(tmp_path):
    with pytest.raises(EngineLoadError, match=r"no backend could run tts_vocoder \(trt: .*; ort: .*does not exist"):
        open_runner("tts_vocoder", ("trt", "ort"), onnx_dir=tmp_path, engine_dir=tmp_path, allow_fallback=True)
    with pytest.raises(InputError, match="unknown backend"):
        open_runner("tts_vocoder", ("tensorflow",))
