"""The quality report: its measures as pure functions, the gates, teacher forcing, and a whole run on a tiny seeded
model of the seed's architecture (numbers meaningless, machinery real)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from speechtrt.config import TTSConfig
from speechtrt.tts import quality as Q

TINY = TTSConfig(hidden_dim=32, num_layers=1, num_heads=2, ffn_dim=64, max_text_len=128, max_frames=24)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """The seed's architecture at tiny size, seeded, as a checkpoint (``--voice <file>``)."""
    from speechtrt.models import save_checkpoint
    from speechtrt.models.tts import build_tts

    path = tmp_path_factory.mktemp("tiny") / "tiny-seed.pt"
    model = build_tts(TINY, seed=0)
    with torch.no_grad():  # a stop head that fires part-way, so lengths differ between sentences
        model.stop_token.bias.fill_(-1.0)
    save_checkpoint(model, path, {"note": "tiny seeded model for the report's test"})
    return path


def test_mcd_is_zero_for_the_same_audio_and_grows_with_distortion():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    clean = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    small = clean + 0.01 * rng.standard_normal(len(clean)).astype(np.float32)
    large = clean + 0.1 * rng.standard_normal(len(clean)).astype(np.float32)
    assert Q.mcd_db(clean, clean, 16000) == 0.0
    assert 0 < Q.mcd_db(clean, small, 16000) < Q.mcd_db(clean, large, 16000)
    assert Q.mcd_db(clean[:100], clean[:100], 16000) is None  # shorter than one analysis frame


def test_mel_snr_uses_the_frames_both_runs_decoded():
    a = [np.ones((5, 2)), np.ones((3, 2))]
    b = [np.ones((4, 2)), np.ones((6, 2)) * 1.1]
    got = Q.mel_snr_db(a, b)
    assert got == pytest.approx(10 * math.log10(14 / (3 * 2 * 0.01)))


def test_stop_agreement():
    s = Q.stop_agreement([10, 20, 30, 40], [10, 21, 36, 40])
    assert s == {"same_length": 0.5, "within_10pct": 0.75, "median_ratio": pytest.approx(1.025),
                 "mean_abs_frames": 1.75}


def _variant(backend, precision, cer, mos):
    return {"backend": backend, "precision": precision, "asr": {"cer": cer, "greedy_cer": cer,
                                                                 "dnsmos": {"p808_mos": mos}}}


@pytest.mark.parametrize("cer,mos,met,why", [
    (0.105, 3.10, True, None),
    (0.115, 3.10, False, "cer"),  # +1.5 points
    (0.100, 2.90, False, "dnsmos_p808"),  # -6.5 %
    (0.109, 2.96, True, None),  # +0.9 points, -4.5 %
])
def test_gates_against_the_same_backends_fp32(cer, mos, met, why):
    variants = {"torch-fp32": _variant("torch", "fp32", 0.08, 3.0), "ort-fp32": _variant("ort", "fp32", 0.10, 3.1),
                "ort-int8": _variant("ort", "int8", cer, mos), "ort-fp16": {"backend": "ort", "precision": "fp16",
                                                                            "skipped": "no"}}
    (gate,) = Q.gates(variants)
    assert gate["reference"] == "ort-fp32" and gate["met"] is met
    if why:
        assert not gate[why]["met"]
        missed = gate[why].get("missed_by_points", gate[why].get("missed_by_rel"))
        assert missed > 0


def test_gates_fall_back_to_torch_fp32():
    variants = {"torch-fp32": _variant("torch", "fp32", 0.08, 3.0), "trt-fp16": _variant("trt", "fp16", 0.08, 3.0)}
    assert Q.gates(variants)[0]["reference"] == "torch-fp32"


def test_plan_variants_puts_the_reference_first_and_says_why_others_do_not_run():
    run, skipped = Q.plan_variants(Q.QualityConfig(backends=("ort", "torch", "trt"), precisions=("int8", "bf16")))
    assert run[0] == ("torch", "fp32") and ("ort", "int8") in run
    assert "ort-bf16" in skipped and "trt-int8" in skipped or torch.cuda.is_available()


def test_held_out_sentences_are_test_split_and_readable(tts_model):
    from speechtrt.asr.data import sentence_split

    texts = Q.held_out_sentences(tts_model, 5, seed=1)
    assert len(texts) == 5 and all(sentence_split(t) == "test" for t in texts)
    assert texts == Q.held_out_sentences(tts_model, 5, seed=1)


def test_teacher_forcing_with_the_models_own_frames_is_free_running(tiny_checkpoint):
    """Fed the frames it produced itself, the teacher-forced decoder reproduces its free-running output: the
    teacher-forced path differs from free running only in what it is fed."""
    from speechtrt.models.loading import resolve_model
    from speechtrt.tts.synthesize import SynthesisOptions, synthesize_texts

    model = resolve_model(str(tiny_checkpoint)).model
    texts = ["a short one.", "and a somewhat longer sentence here."]
    free = synthesize_texts(model, texts, SynthesisOptions(stop_token=False, max_frames=12))
    tf = Q.teacher_forced(model, texts, [r.mel for r in free])
    for r, t in zip(free, tf):
        assert np.allclose(r.mel, t, atol=1e-5)


def test_reference_frames_of_a_model_that_says_nothing_about_its_frames(tts_model):
    audio = np.zeros(16000, np.float32)
    assert Q.reference_frames(tts_model, audio, 16000).shape == (98, 80)  # the shared 80-bin analysis

    class Narrow:
        config = TTSConfig(mel_dim=20)

    assert Q.reference_frames(Narrow(), audio, 16000) is None


@pytest.mark.slow
def test_a_whole_report_on_a_tiny_seeded_model(tiny_checkpoint, tmp_path):
    cfg = Q.QualityConfig(voice=str(tiny_checkpoint), backends=("torch",), precisions=("fp32", "int8", "fp16"),
                          sentences=2, out_dir=str(tmp_path), max_frames=16, artifacts=str(tmp_path / "art"),
                          calib_dir=str(tmp_path / "calib"))
    report = Q.run_quality(cfg, log=lambda m: None)
    data = json.loads((tmp_path / "tts_quality.json").read_text())
    md = (tmp_path / "tts_quality.md").read_text()
    assert data["sentences"]["count"] == 2 and data["voice"]["name"] == "tiny-seed"
    assert set(data["variants"]) == {"torch-fp32", "torch-int8", "torch-fp16"}
    assert "skipped" in data["variants"]["torch-fp16"] or torch.cuda.is_available()
    ref, int8 = data["variants"]["torch-fp32"], data["variants"]["torch-int8"]
    for key in ("cer", "wer", "greedy_cer", "greedy_wer"):
        assert 0.0 <= ref["asr"][key]
    assert 1.0 <= ref["asr"]["dnsmos"]["p808_mos"] <= 5.0 and set(ref["asr"]["dnsmos"]) == {"p808_mos", "sig", "bak",
                                                                                            "ovrl"}
    assert set(int8["vs_fp32"]) == {"mel_snr_db", "mcd_db", "stop"} and int8["vs_fp32"]["mel_snr_db"] > 10
    # speed is speaking only: the torch INT8 model made on first use is timed apart from it
    assert int8["prepare_seconds"] >= 0 and int8["rtf"] > 0
    assert [g["variant"] for g in data["gates"]] == ["torch-int8"] and "dnsmos_p808" in data["gates"][0]
    assert "asr" in data["teacher_forced"] and "asr" in data["ceiling"]["espeak_raw"]
    assert "asr" in data["ceiling"]["espeak_vocoder"]
    assert data["ceiling"]["espeak_raw"]["asr"]["cer"] < 0.5  # the judge hears espeak-ng itself
    assert data["targets"]["intelligibility_cer"]["met"] is False
    assert len(data["per_sentence"]) == 2 and "heard_teacher_forced" in data["per_sentence"][0]
    assert "## Gates (FP16 and INT8 against FP32)" in md and "teacher-forced (torch FP32)" in md
    assert report["summary_lines"][-1].startswith("target FP32 free-running CER")
