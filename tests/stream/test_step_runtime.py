"""The step over the shared runtime runners (opened by ``open_runner``): ORT through OrtRunner equals the torch step;
a chunked offline pass equals the whole-utterance pass; wrong graphs and TensorRT plans are refused with the message
that says how to make the right one."""

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
from speechtrt.stream.step import OUTPUT_NAMES, STATE_NAMES, StepConfig, StepModel

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")


@pytest.fixture(scope="module")
def ort_step(model, tmp_path_factory):
    return StepModel.open(StepConfig(backend="ort", threads=1, cache_dir=tmp_path_factory.mktemp("stream_onnx")), model)


def _random_step_feeds(step, batch: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) * 0.5 for k, v in step.zero_state(batch).items()}
    return {"features": torch.randn(batch, 16, 80, generator=gen), **state}


@pytest.mark.parametrize("batch", [1, 3])
def test_ort_step_through_ort_runner_equals_the_torch_step(ort_step, step, model, batch):
    assert isinstance(ort_step.runner, OrtRunner) and ort_step.name == "ort"
    zero = ort_step.zero_state(batch)
    for k, v in model.initial_state(batch).items():  # the spec's state layout is the model's own
        assert zero[k].shape == v.shape and zero[k].dtype == v.dtype and not zero[k].any()
    feeds = _random_step_feeds(step, batch, seed=batch)
    got = ort_step.step(dict(feeds))
    want = step.step(dict(feeds))
    assert tuple(got) == OUTPUT_NAMES
    assert got["log_probs"].shape == (batch, 4, 1000)
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)
    again = ort_step.step(dict(feeds))  # a later call leaves earlier outputs intact
    torch.testing.assert_close(again["log_probs"], got["log_probs"], atol=0, rtol=0)
    assert again["log_probs"].data_ptr() != got["log_probs"].data_ptr()


def test_chunked_offline_equals_the_whole_utterance_pass(ort_step, step, speech):
    """The chunked pass is what a TensorRT plan (chunk length bounded by its profile) runs."""
    feats = log_mel(speech[1])[None]  # [1, T, 80], T not a multiple of any chunk below
    assert feats.shape[1] % 64
    whole = ort_step.offline(feats)
    assert whole.shape == (1, -(-feats.shape[1] // 4), 1000)
    for chunk in (16, 64):
        torch.testing.assert_close(ort_step.offline(feats, chunk), whole, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(step.offline(feats, chunk), step.offline(feats), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole, step.offline(feats), atol=1e-4, rtol=1e-4)  # same model, two runtimes
    with pytest.raises(InputError, match="multiple of 4"):
        ort_step.offline(feats, 10)


def test_ort_step_refuses_a_graph_of_another_component_and_a_missing_graph(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "asr_stream_step.onnx")
    with pytest.raises(EngineLoadError, match=r"inputs \['x'\].*expected \['features'.*speechtrt export"):
        StepModel.open(StepConfig(backend="ort", onnx_dir=tmp_path, threads=1))
    with pytest.raises(EngineLoadError, match="no fp32 ONNX graph of asr_stream_step.*speechtrt export --model "
                                              "asr-stream"):
        StepModel.open(StepConfig(backend="ort", onnx_dir=tmp_path / "missing", make_missing=False))
    with pytest.raises(EngineLoadError, match="no model to export it from"):
        StepModel.open(StepConfig(backend="ort", onnx_dir=tmp_path / "missing"))


def test_torch_step_runs_its_eager_step_through_torch_runner(model, step):
    from speechtrt.runtime.runner import TorchRunner

    assert isinstance(step.runner, TorchRunner) and step.runner.module.model is model  # fp32 on CPU: no copy
    feeds = _random_step_feeds(step, 2, seed=7)
    with torch.inference_mode():
        want = model.step(*(feeds[k] for k in ("features", *STATE_NAMES)))
    got = step.step(dict(feeds))
    for name, w in zip(OUTPUT_NAMES, want):
        torch.testing.assert_close(got[name], w, atol=0, rtol=0)


def test_trt_step_refuses_a_precision_it_has_no_plan_for():
    with pytest.raises(InputError, match=r"precision 'bf16' \(--precision\): the trt backend runs fp32, fp16, int8"):
        StepConfig(backend="trt", precision="bf16")


@no_gpu
def test_trt_step_is_refused_without_a_gpu(model, tmp_path):
    with pytest.raises(EngineLoadError, match="needs a CUDA GPU.*--backend ort or torch"):
        StepModel.open(StepConfig(backend="trt", engine_dir=tmp_path), model)
    with pytest.raises(EngineLoadError, match="needs a CUDA GPU"):
        StepModel.open(StepConfig(backend="trt", engine_dir=tmp_path, precision="fp16"), model)


def test_stream_command_checks_precision_before_loading_anything(tmp_path):
    result = CliRunner().invoke(app, ["stream", "--precision", "fp16", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "fp16 streaming on torch needs --device cuda" in str(result.exception)
    result = CliRunner().invoke(app, ["stream", "--backend", "trt", "--precision", "bf16", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "the trt backend runs fp32, fp16, int8" in str(result.exception)


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
def test_trt_step_refuses_missing_truncated_and_foreign_plans(model, tmp_path):
    with pytest.raises(EngineLoadError, match=r"asr-stream/asr_stream_step\.fp16\.plan\) does not exist.*"
                                              r"speechtrt build --gpu sm\d+ --model asr-stream --fp16"):
        StepModel.open(StepConfig(backend="trt", engine_dir=tmp_path, precision="fp16", make_missing=False), model)

    payload = b"not really a plan" * 8
    _fake_plan(tmp_path / "truncated", payload, len(payload) + 100, {"flavour": "tensorrt", "version": "10"})
    with pytest.raises(EngineLoadError, match="is truncated.*rebuild it with `speechtrt build"):
        StepModel.open(StepConfig(backend="trt", engine_dir=tmp_path / "truncated"), model)

    _fake_plan(tmp_path / "foreign", payload, len(payload), {"flavour": "tensorrt", "version": "0.0.0"})
    with pytest.raises(EngineLoadError, match="was built with TensorRT 0.0.0"):
        StepModel.open(StepConfig(backend="trt", engine_dir=tmp_path / "foreign"), model)


@pytest.mark.gpu
def test_trt_step_matches_the_torch_step(model):
    """Needs an FP32 plan from `speechtrt build --model asr-stream --fp32` in $SPEECHTRT_ENGINES (default engines/)."""
    root = Path(os.environ.get("SPEECHTRT_ENGINES", "engines"))
    try:
        trt = StepModel.open(StepConfig(backend="trt", engine_dir=root, make_missing=False), model)
    except EngineLoadError as exc:
        pytest.skip(f"no runnable asr-stream engine here: {exc}")
    ref = StepModel.open(StepConfig(), model)
    for batch in (1, 3):
        feeds = _random_step_feeds(ref, batch, seed=batch)
        got = trt.step({k: v.cuda() for k, v in feeds.items()})
        want = ref.step(dict(feeds))
        for name in OUTPUT_NAMES:
            torch.testing.assert_close(got[name].float().cpu(), want[name], atol=1e-3, rtol=1e-3)
    feats = torch.randn(2, 3 * trt.offline_chunk + 10, 80, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(trt.offline(feats).float().cpu(), ref.offline(feats), atol=1e-3, rtol=1e-3)
