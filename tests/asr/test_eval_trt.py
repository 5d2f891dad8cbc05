"""The trt backend of `speechtrt eval`: plans of the evaluated checkpoint made in the run through
`pipeline.ensure_artifact` (TensorRT-RTX compiles them here, on the CPU), and a clear skip reason where no GPU can
run them."""

import json

import numpy as np
import pytest
import torch

from speechtrt.asr.eval import BackendUnavailable, EvaluatedModel, VariantOptions, make_artifact, model_component
from speechtrt.asr.eval.variants import open_variant
from speechtrt.models.checkpoints import load_checkpoint
from speechtrt.runtime.open import Artifacts


def _calibration(rows: int, frames: int, batches: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((rows, frames, 80)).astype(np.float32) for _ in range(batches)]


def _artifacts(tmp_path, model, name):
    return Artifacts(onnx_dir=tmp_path, engine_dir=tmp_path / "engines", model=model, model_name=name)


def _entry(plan):
    manifest = json.loads((plan.parent / "manifest.json").read_text())
    (entry,) = manifest["engines"].values()
    return entry


def test_plan_of_the_shipped_small_checkpoint_covers_the_runs_largest_batch(tmp_path):
    model, _ = load_checkpoint("checkpoints/asr-small.pt")
    plan = make_artifact(model_component(model), "trt", "fp32", _artifacts(tmp_path, model, "asr-small"), None,
                         (8, 400), gpu="sm86")
    assert plan.is_file() and plan.stat().st_size > 1_000_000
    entry = _entry(plan)
    assert entry["component"] == "asr_small" and entry["precision"] == "fp32"
    assert entry["dims"]["batch"]["max"] == 8 and entry["dims"]["frames"]["max"] == 400
    assert entry["tensorrt"]["flavour"] == "tensorrt-rtx" and entry["target"]["gpu"] == "sm86"
    sidecar = json.loads((tmp_path / "asr_small.json").read_text())
    assert entry["onnx"]["sha256"] == sidecar["onnx_sha256"]
    # the graph compiled is this checkpoint's export: it computes what the checkpoint computes
    import onnxruntime as ort

    x = _calibration(2, 160, 1)[0]
    lengths = np.array([160, 97], np.int64)
    sess = ort.InferenceSession(str(tmp_path / "asr_small.onnx"), providers=["CPUExecutionProvider"])
    (lp,) = sess.run(["log_probs"], {"features": x, "feature_lengths": lengths})
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(x), torch.from_numpy(lengths))
    np.testing.assert_allclose(lp[0], ref[0].numpy(), atol=1e-3)


def test_fp16_plan_of_the_streaming_checkpoint_is_calibrated_and_spans_whole_utterances(tmp_path):
    model, _ = load_checkpoint("checkpoints/asr-stream.pt")
    plan = make_artifact(model_component(model), "trt", "fp16", _artifacts(tmp_path, model, "asr-stream"),
                         _calibration(4, 120), (4, 300), gpu="sm86")
    entry = _entry(plan)
    assert entry["component"] == "asr_stream_step" and entry["precision"] == "fp16"
    assert entry["dims"]["chunk"]["max"] == 300  # the step graph runs over a whole utterance from zero state
    assert entry["precision_summary"]["tensors"].get("HALF", 0) > 0


def test_reduced_precision_plans_need_a_calibration_set(tmp_path):
    model, _ = load_checkpoint("checkpoints/asr-small.pt")
    with pytest.raises(BackendUnavailable, match="--tune-on or --calib-manifest"):
        make_artifact(model_component(model), "trt", "int8", _artifacts(tmp_path, model, "asr-small"), None,
                      (4, 200), gpu="sm86")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_trt_variant_without_a_gpu_is_skipped_with_the_reason(tmp_path):
    model, _ = load_checkpoint("checkpoints/asr-small.pt")
    subject = EvaluatedModel.create("asr-small", model, tmp_path)
    with pytest.raises(BackendUnavailable, match="CUDA GPU"):
        open_variant(subject, "trt", "fp32", VariantOptions(max_shape=(4, 200)))
    assert not any(tmp_path.iterdir())  # refused before any export


@pytest.mark.gpu
def test_trt_fp32_on_a_gpu_matches_torch_fp32(tmp_path):
    from speechtrt.asr.lm import SEARCH_COLUMNS

    model, _ = load_checkpoint("checkpoints/asr-small.pt")
    x = _calibration(4, 300, 1)[0]
    lengths = np.array([300, 250, 180, 41], np.int64)
    subject = EvaluatedModel.create("asr-small", model, tmp_path, SEARCH_COLUMNS)
    forward = open_variant(subject, "trt", "fp32", VariantOptions(max_shape=(4, 300)))
    lp, out_lengths = forward(x, lengths)
    with torch.no_grad():
        ref, ref_lengths = model.float()(torch.from_numpy(x), torch.from_numpy(lengths))
    assert out_lengths.tolist() == ref_lengths.tolist()
    assert lp.shape[-1] == len(SEARCH_COLUMNS) and forward.columns.tolist() == SEARCH_COLUMNS.tolist()
    for row, n in enumerate(out_lengths):
        kept = ref[row, :n][:, SEARCH_COLUMNS]
        expected = (kept - torch.logsumexp(kept, -1, keepdim=True)).numpy()
        np.testing.assert_allclose(lp[row, :n], expected, atol=2e-3)
