"""Step backends over the shared runtime runners: ORT through OrtRunner equals the torch step; a chunked offline
pass equals the whole-utterance pass; TensorRT plans are refused with the manifest check's message."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from speechtrt.cli import app
from speechtrt.errors import EngineLoadError, InputError
from speechtrt.models.audio import log_mel
from speechtrt.runtime.ort import OrtRunner
from speechtrt.stream.backends import (OUTPUT_NAMES, STATE_NAMES, OrtStepBackend, TorchStepBackend, default_onnx_for,
                                       make_backend, offline_in_chunks)

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")


@pytest.fixture(scope="module")
def ort_backend(model, tmp_path_factory):
    return make_backend("ort", model, onnx_path=default_onnx_for(model, tmp_path_factory.mktemp("stream_onnx")),
                        threads=1)


def _random_step_feeds(backend, batch: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) * 0.5 for k, v in backend.zero_state(batch).items()}
    return {"features": torch.randn(batch, 16, 80, generator=gen), **state}


@pytest.mark.parametrize("batch", [1, 3])
def test_ort_step_through_ort_runner_equals_the_torch_step(ort_backend, backend, batch):
    assert isinstance(ort_backend.runner, OrtRunner) and ort_backend.name == "ort"
    zero = ort_backend.zero_state(batch)
    for k, v in backend.zero_state(batch).items():  # same state layout as the model's own
        assert zero[k].shape == v.shape and zero[k].dtype == v.dtype and not zero[k].any()
    feeds = _random_step_feeds(backend, batch, seed=batch)
    got = ort_backend.step(dict(feeds))
    want = backend.step(dict(feeds))
    assert tuple(got) == OUTPUT_NAMES
    assert got["log_probs"].shape == (batch, 4, 1000)
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)
    again = ort_backend.step(dict(feeds))  # a later call leaves earlier outputs intact
    torch.testing.assert_close(again["log_probs"], got["log_probs"], atol=0, rtol=0)
    assert again["log_probs"].data_ptr() != got["log_probs"].data_ptr()


def test_chunked_offline_equals_the_whole_utterance_pass(ort_backend, backend, speech):
    """The chunked pass is what a TensorRT plan (chunk length bounded by its profile) runs."""
    feats = log_mel(speech[1])[None]  # [1, T, 80], T not a multiple of any chunk below
    assert feats.shape[1] % 64
    whole = ort_backend.offline(feats)
    assert whole.shape == (1, -(-feats.shape[1] // 4), 1000)
    for chunk in (16, 64):
        torch.testing.assert_close(offline_in_chunks(ort_backend, feats, chunk), whole, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(offline_in_chunks(backend, feats, chunk), backend.offline(feats), atol=1e-5,
                                   rtol=1e-5)
    torch.testing.assert_close(whole, backend.offline(feats), atol=1e-4, rtol=1e-4)  # same model, two runtimes
    with pytest.raises(InputError, match="multiple of 4"):
        offline_in_chunks(ort_backend, feats, 10)


def test_ort_backend_refuses_a_graph_of_another_component(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(EngineLoadError, match=r"inputs \['x'\].*expected \['features'.*speechtrt export"):
        OrtStepBackend(OrtRunner(path, threads=1))
    with pytest.raises(InputError, match="does not exist.*speechtrt export --model asr-stream"):
        make_backend("ort", None, onnx_path=tmp_path / "missing.onnx")


def test_torch_backend_runs_its_eager_step_through_torch_runner(model, backend):
    from speechtrt.runtime.runner import TorchRunner

    assert isinstance(backend.runner, TorchRunner) and backend.model is model  # fp32 on CPU: no copy
    feeds = _random_step_feeds(backend, 2, seed=7)
    with torch.inference_mode():
        want = model.step(*(feeds[k] for k in ("features", *STATE_NAMES)))
    got = backend.step(dict(feeds))
    for name, w in zip(OUTPUT_NAMES, want):
        torch.testing.assert_close(got[name], w, atol=0, rtol=0)


def test_trt_backend_needs_a_plan_source(model):
    with pytest.raises(InputError, match="--engine PATH or --engine-dir"):
        make_backend("trt", model)


@no_gpu
def test_trt_backend_is_refused_without_a_gpu(model, tmp_path):
    with pytest.raises(EngineLoadError, match="needs a CUDA GPU.*--backend ort or torch"):
        make_backend("trt", model, engine_path=tmp_path / "asr_stream_step.fp32.plan")
    with pytest.raises(EngineLoadError, match="needs a CUDA GPU"):
        make_backend("trt", model, engine_dir=tmp_path, precision="fp16")


def test_stream_command_checks_precision_before_loading_anything(tmp_path):
    result = CliRunner().invoke(app, ["stream", "--precision", "fp16", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--precision picks the plan of --backend trt" in str(result.exception)
    result = CliRunner().invoke(app, ["stream", "--backend", "trt", "--precision", "bf16", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "engines are built in fp32, fp16, int8" in str(result.exception)


# ---------------------------------------------------------------- GPU: the manifest check behind TrtRunner


def _fake_plan(root: Path, payload: bytes, manifest_bytes: int, tensorrt: dict) -> Path:
    """A plan file and a manifest entry for it under ``root/<sm>/asr-stream`` (the layout `speechtrt build` writes)."""
    from speechtrt.engines.arch import current_device

    gpu = current_device()
    folder = root / gpu.sm / "asr-stream"
    folder.mkdir(parents=True)
    plan = folder / "asr_stream_step.fp32.plan"
    plan.write_bytes(payload)
    entry = {"plan": plan.name, "plan_bytes": manifest_bytes, "plan_sha256": hashlib.sha256(payload).hexdigest(),
             "tensorrt": tensorrt, "precision": "fp32",
             "target": {"gpu": gpu.sm, "compute_capability": gpu.capability}}
    (folder / "manifest.json").write_text(json.dumps({"format": "speechtrt-engines/1", "gpu": gpu.sm,
                                                      "model": "asr-stream",
                                                      "engines": {"asr_stream_step.fp32": entry}}))
    return plan


@pytest.mark.gpu
def test_trt_backend_refuses_missing_truncated_and_foreign_plans(model, tmp_path):
    with pytest.raises(EngineLoadError, match=r"asr-stream/asr_stream_step\.fp16\.plan\) does not exist.*"
                                              r"speechtrt build --gpu sm\d+ --model asr-stream --fp16"):
        make_backend("trt", model, engine_dir=tmp_path, precision="fp16")

    payload = b"not really a plan" * 8
    plan = _fake_plan(tmp_path / "truncated", payload, len(payload) + 100, {"flavour": "tensorrt", "version": "10"})
    with pytest.raises(EngineLoadError, match="is truncated.*rebuild it with `speechtrt build"):
        make_backend("trt", model, engine_path=plan)

    _fake_plan(tmp_path / "foreign", payload, len(payload), {"flavour": "tensorrt", "version": "0.0.0"})
    with pytest.raises(EngineLoadError, match="was built with TensorRT 0.0.0"):
        make_backend("trt", model, engine_dir=tmp_path / "foreign", precision="fp32")


@pytest.mark.gpu
def test_trt_step_matches_the_torch_step(model):
    """Needs an FP32 plan from `speechtrt build --model asr-stream --fp32` in $SPEECHTRT_ENGINES (default engines/)."""
    root = Path(os.environ.get("SPEECHTRT_ENGINES", "engines"))
    try:
        trt = make_backend("trt", model, engine_dir=root, precision="fp32")
    except EngineLoadError as exc:
        pytest.skip(f"no runnable asr-stream engine here: {exc}")
    ref = TorchStepBackend(model)
    for batch in (1, 3):
        feeds = _random_step_feeds(ref, batch, seed=batch)
        got = trt.step({k: v.cuda() for k, v in feeds.items()})
        want = ref.step(dict(feeds))
        for name in OUTPUT_NAMES:
            torch.testing.assert_close(got[name].float().cpu(), want[name], atol=1e-3, rtol=1e-3)
    feats = torch.randn(2, 3 * trt.offline_chunk + 10, 80, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(trt.offline(feats).float().cpu(), ref.offline(feats), atol=1e-3, rtol=1e-3)
