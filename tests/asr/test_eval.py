"""Evaluation end to end on a tiny real set: report keys, statistics blocks, and bad inputs counted and listed."""

import json
import shutil
import wave

import numpy as np
import pytest

from speechtrt.asr.data import SynthConfig, Utterance, read_manifest, synthesize, write_manifest
from speechtrt.asr.eval import EvalConfig, evaluate, length_buckets
from speechtrt.models import build_asr, save_checkpoint
from speechtrt.models.audio import write_wav

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def _write_stereo(path, samples, rate):
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.stack([pcm, pcm], axis=1).tobytes())


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr_eval")
    manifest = synthesize(root, SynthConfig(split="test", accents=("en-us", "en-gb-x-rp"), speakers_per_accent=2,
                                            sentences_per_speaker=2))
    rows, _ = read_manifest(manifest)
    from speechtrt.models.audio import read_wav, resample

    speech, _ = read_wav(rows[0].path(root))
    _write_stereo(root / "stereo.wav", speech, 16000)
    write_wav(root / "rate8k.wav", resample(speech, 16000, 8000), 8000)
    write_wav(root / "silence.wav", np.zeros(16000, np.float32), 16000)
    (root / "broken.wav").write_bytes(b"RIFF not really a wav")
    extra = [
        Utterance("missing.wav", rows[0].text, 1.0, "en-us", rows[0].speaker),
        Utterance("stereo.wav", rows[0].text, 1.0, "en-us", rows[0].speaker),
        Utterance("rate8k.wav", rows[0].text, 1.0, "en-us", rows[0].speaker),
        Utterance("silence.wav", "some words", 1.0, "en-us", rows[0].speaker),
        Utterance("broken.wav", "some words", 1.0, "en-us", rows[0].speaker),
        Utterance(rows[1].audio_filepath, "  ...  ", 1.0, "en-us", rows[1].speaker),
    ]
    path = write_manifest(root / "with_bad.jsonl", [*rows, *extra])
    with path.open("a") as f:
        f.write("{not json\n")
    ckpt = save_checkpoint(build_asr("small", seed=0), root / "asr-small.pt")
    return root, path, ckpt, len(rows)


def test_length_buckets_respect_the_frame_budget():
    lengths = [100, 500, 120, 480, 90, 300]
    batches = length_buckets(lengths, 1000)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(max(lengths[i] for i in b) * len(b) <= 1000 or len(b) == 1 for b in batches)


@pytest.mark.slow
def test_eval_reports_keys_and_lists_bad_inputs(tiny_set, tmp_path):
    root, manifest, ckpt, n_good = tiny_set
    report = evaluate(EvalConfig(manifest=str(manifest), checkpoints=(str(ckpt),), backends=("torch",),
                                 precisions=("fp32", "int8", "fp16"), n_boot=100, out_dir=str(tmp_path)),
                      log=lambda m: None)
    saved = json.loads((tmp_path / "asr_eval.json").read_text())
    assert saved["models"].keys() == report["models"].keys()
    for key in ("device", "versions", "commit", "models", "per_dialect", "significance", "precision_impact",
                "selection", "input_problems", "speed", "samples"):
        assert key in saved
    assert saved["device"]["type"] == "cpu" and saved["device"]["summary"] and "jiwer" in saved["versions"]
    assert set(saved["commit"]) == {"sha", "dirty"}
    m = saved["models"]["asr-small/torch/fp32"]
    for key in ("wer", "cer", "rtfx", "ci95", "substitutions", "deletions", "insertions", "breakdown",
                "wer_vs_duration"):
        assert key in m
    assert m["latency_ms"]["p95"] > 0 and m["rtfx"] > 0
    assert 0 <= m["ci95"][0] <= m["wer"] <= m["ci95"][1]
    assert set(saved["per_dialect"]) == {"en-us", "en-gb-x-rp"}
    assert "ci95" in saved["per_dialect"]["en-us"]["asr-small/torch/fp32"]
    assert saved["significance"]["dialect_vs_dialect"]["asr-small/torch/fp32"][0]["p_holm"] <= 1
    assert "asr-small/torch/int8" in saved["precision_impact"]
    assert any(s["variant"] == "asr-small/torch/fp16" for s in saved["skipped_variants"])  # no GPU here

    problems = saved["input_problems"]
    assert problems["counts"] == {"missing_audio": 1, "stereo": 1, "wrong_sample_rate": 1, "silence": 1,
                                  "unreadable_audio": 1, "empty_reference": 1, "bad_manifest_line": 1}
    assert problems["skipped"] == 5 and problems["repaired"] == 2
    assert saved["dataset"]["evaluated"] == n_good + 2  # stereo and 8 kHz files were repaired and scored
    assert {i["problem"] for i in problems["items"]} >= {"missing_audio", "silence", "empty_reference"}
    md = (tmp_path / "asr_eval.md").read_text()
    assert "WER (%) by dialect" in md and "missing_audio" in md and "en-gb-x-rp" in md
    assert (tmp_path / "asr_wer_by_dialect.png").stat().st_size > 1000
    assert (tmp_path / "asr_wer_vs_rtfx.png").stat().st_size > 1000
    sp = saved["speed"]["seed_loop_vs_batched"]
    assert sp["identical_transcripts"] == 1.0 and sp["utterances"] == n_good + 2


@pytest.fixture(scope="module")
def dev_set(tmp_path_factory, tiny_set):
    root = tmp_path_factory.mktemp("asr_dev")
    _, test_manifest, _, _ = tiny_set
    return synthesize(root, SynthConfig(split="dev", accents=("en-us",), speakers_per_accent=2,
                                        sentences_per_speaker=3, exclude=(str(test_manifest),)))


@pytest.mark.slow
def test_eval_tunes_the_lm_decoder_on_a_dev_set_and_calibrates_static_int8(tiny_set, dev_set, tmp_path):
    root, manifest, ckpt, n_good = tiny_set
    report = evaluate(EvalConfig(manifest=str(manifest), checkpoints=(str(ckpt),), backends=("ort",),
                                 precisions=("fp32", "int8"), n_boot=50, out_dir=str(tmp_path), seed_loop=False,
                                 tune_on=str(dev_set), beam=4, plots=False), log=lambda m: None)
    dec = report["decoder"]
    assert dec["primary"] == "lm" and dec["lm"]["order"] == 3 and dec["lm"]["vocabulary"] > 1000
    tuning = dec["tuning"]
    assert tuning["manifest"] == str(dev_set) and tuning["utterances"] == 6
    assert len(tuning["grid"]) == 20
    assert (dec["alpha"], dec["beta"]) == (tuning["alpha"], tuning["beta"])
    assert tuning["wer"] == min(g["wer"] for g in tuning["grid"])
    assert "static QDQ" in report["quantization"]["ort_int8"]
    assert {"asr-small/ort/fp32", "asr-small/ort/int8"} <= set(report["models"]), report["skipped_variants"]
    m = report["models"]["asr-small/ort/int8"]
    assert m["decode_seconds"] > 0 and 0 < m["rtfx_with_decoder"] < m["rtfx"]
    assert "beam search" in (tmp_path / "asr_eval.md").read_text()
    # an untrained model spreads its mass over all 1000 classes: the dev set refuses trimming the classifier
    trim = report["classifier"]["asr-small"]
    assert not trim["trimmed"] and trim["dropped_log_mass_nats"] > trim["tolerance_nats"]
    assert trim["measured_on"] == str(dev_set)


@pytest.mark.slow
def test_trained_checkpoint_runs_a_trimmed_classifier_within_tolerance(tiny_set, dev_set, tmp_path):
    _, manifest, _, _ = tiny_set
    report = evaluate(EvalConfig(manifest=str(manifest), checkpoints=("checkpoints/asr-small.pt",),
                                 backends=("torch", "ort"), precisions=("fp32",), decoder="greedy", n_boot=50,
                                 out_dir=str(tmp_path), seed_loop=False, calib_manifest=str(dev_set), plots=False),
                      log=lambda m: None)
    trim = report["classifier"]["asr-small"]
    assert trim["trimmed"] and trim["kept"] == 29 and trim["dropped_log_mass_nats"] <= trim["tolerance_nats"]
    fid = report["models"]["asr-small/ort/fp32"]["fidelity"]
    assert fid["max_abs_logprob_diff"] < 2e-3 and fid["greedy_identical"] == 1.0
    assert report["models"]["asr-small/torch/fp32"]["fidelity"] is None  # the reference itself
    assert report["models"]["asr-small/ort/fp32"]["wer"] == report["models"]["asr-small/torch/fp32"]["wer"]
    assert "Fidelity against torch FP32" in (tmp_path / "asr_eval.md").read_text()


def test_eval_refuses_a_dev_set_that_shares_test_sentences(tiny_set, tmp_path):
    from speechtrt.errors import InputError

    root, manifest, ckpt, _ = tiny_set
    with pytest.raises(InputError, match="shares .* sentence"):
        evaluate(EvalConfig(manifest=str(manifest), checkpoints=(str(ckpt),), backends=("torch",),
                            precisions=("fp32",), tune_on=str(manifest), out_dir=str(tmp_path)), log=lambda m: None)


@pytest.mark.slow
def test_ort_fp16_is_the_modelopt_graph_and_a_graph_ort_crashes_on_is_reported_not_run(tiny_set, dev_set, tmp_path):
    _, manifest, _, _ = tiny_set
    report = evaluate(EvalConfig(manifest=str(manifest),
                                 checkpoints=("checkpoints/asr-small.pt", "checkpoints/asr-stream.pt"),
                                 backends=("ort",), precisions=("fp32", "fp16"), decoder="greedy", n_boot=20,
                                 out_dir=str(tmp_path), seed_loop=False, calib_manifest=str(dev_set), plots=False),
                      log=lambda m: None)
    assert "asr-small/ort/fp16" in report["models"]
    assert report["models"]["asr-small/ort/fp16"]["wer"] == pytest.approx(report["models"]["asr-small/ort/fp32"]["wer"],
                                                                          abs=0.05)
    skipped = {s["variant"]: s["reason"] for s in report["skipped_variants"]}
    # ONNX Runtime's CPU provider crashes on the streaming FP16 graph: tried in a child process, reported, not fatal
    assert "child process" in skipped["asr-stream/ort/fp16"]
    assert "asr-stream/ort/fp32" in report["models"]


def test_ort_fp16_and_int8_without_a_development_set(tmp_path):
    from speechtrt.asr.eval import EvaluatedModel, VariantOptions, open_variant
    from speechtrt.asr.eval.variants import BackendUnavailable
    from speechtrt.models.checkpoints import load_checkpoint

    model, _ = load_checkpoint("checkpoints/asr-small.pt")
    subject = EvaluatedModel.create("asr-small", model, tmp_path)
    with pytest.raises(BackendUnavailable, match="--tune-on or --calib-manifest"):
        open_variant(subject, "ort", "fp16", VariantOptions())
    forward = open_variant(subject, "ort", "int8", VariantOptions())  # no calibration: dynamic INT8
    sidecar = json.loads((tmp_path / "asr_small.int8-ort.json").read_text())
    assert sidecar["quantization"]["mode"] == "dynamic"
    log_probs, lengths = forward(np.zeros((2, 64, 80), np.float32), np.array([64, 40], np.int64))
    assert log_probs.shape == (2, 16, 1000) and lengths.tolist() == [16, 10]


@pytest.mark.slow
def test_static_int8_of_the_streaming_checkpoint_stays_close_to_fp32(tiny_set, dev_set, tmp_path):
    """ONNX Runtime's u8×s8 kernels saturate 16-bit lanes on x86 without VNNI: full-range INT8 weights moved the
    streaming model's log-probabilities by ~0.7 nats per value on average (greedy output equal to FP32's on 5 % of
    utterances); with 7-bit weights the INT8 graph stays close to FP32 on every x86 CPU."""
    _, manifest, _, _ = tiny_set
    report = evaluate(EvalConfig(manifest=str(manifest), checkpoints=("checkpoints/asr-stream.pt",),
                                 backends=("torch", "ort"), precisions=("fp32", "int8"), decoder="greedy",
                                 n_boot=50, out_dir=str(tmp_path), seed_loop=False, calib_manifest=str(dev_set),
                                 plots=False), log=lambda m: None)
    fid = report["models"]["asr-stream/ort/int8"]["fidelity"]
    assert fid["mean_abs_logprob_diff"] < 0.3
    assert report["models"]["asr-stream/ort/int8"]["wer"] <= report["models"]["asr-stream/ort/fp32"]["wer"] + 0.05
