"""Fidelity measures: SNR, CER, greedy transcripts, and the report files."""

import json
import math

import numpy as np
import pytest

from speechtrt.quantize.fidelity import (
    BOUNDS, CER_MIN_MARGIN_NATS, FidelityReport, cer, greedy_transcripts, snr_db, write_report,
)


@pytest.mark.parametrize("noise, want_db", [(0.1, 20.0), (0.01, 40.0), (0.001, 60.0)])
def test_snr_of_scaled_error(noise, want_db):
    x = np.random.default_rng(0).standard_normal(10_000)
    assert snr_db(x + noise * x, x) == pytest.approx(want_db, abs=1e-6)


def test_snr_of_identical_signals_is_infinite():
    assert snr_db(np.ones(3), np.ones(3)) == math.inf


@pytest.mark.parametrize("ref, hyp, d", [("abc", "abc", 0), ("abc", "abd", 1), ("abc", "", 3), ("kitten", "sitting", 3),
                                         ("sitting", "kitten", 3), ("xy", "", 2)])
def test_cer_counts_character_edits(ref, hyp, d):
    assert cer([hyp], [ref]) * len(ref) == pytest.approx(d)


def test_corpus_cer_counts_edits_over_reference_characters():
    assert cer(["abd", "xyz"], ["abc", "xyz"]) == pytest.approx(1 / 6)
    assert cer([""], [""]) == 0.0 and cer(["a"], [""]) == 1.0
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        cer(["a", "b"], ["a"])


def test_greedy_transcripts_collapse_repeats_and_blanks_within_length():
    v = 100
    ids = [[ord("h"), ord("h"), 0, ord("i"), ord("i"), ord("x")]]
    log_probs = np.full((1, 6, v + 30), -10.0)
    for t, i in enumerate(ids[0]):
        log_probs[0, t, i] = 0.0
    assert greedy_transcripts(log_probs, np.array([5])) == ["hi"]
    assert greedy_transcripts(log_probs, np.array([6])) == ["hix"]


def test_bounds_are_tighter_for_fp16_than_int8():
    for kind in ("graph", "asr", "tts_e2e"):
        assert BOUNDS["fp16"][kind].min_snr_db >= BOUNDS["int8"][kind].min_snr_db
        assert BOUNDS["fp16"][kind].max_rel_l2 <= BOUNDS["int8"][kind].max_rel_l2
    assert CER_MIN_MARGIN_NATS > 0


def test_report_files(tmp_path):
    report = FidelityReport("2026-01-01T00:00:00Z", "onnx", "calib")
    report.rows.append({"component": "tts_vocoder", "precision": "int8", "backend": "ort", "min_snr_db": math.inf,
                        "max_rel_l2": 0.0, "ok": True, "failures": []})
    report.rows.append({"component": "asr_small", "precision": "fp16", "backend": "ort", "min_snr_db": 10.0,
                        "max_rel_l2": 0.3, "ok": False, "failures": ["SNR 10.0 dB < 25.0 dB"]})
    json_path, md_path = write_report(report, tmp_path / "reports")
    data = json.loads(json_path.read_text())  # strict JSON: infinities written as strings
    assert data["ok"] is False and data["results"][0]["min_snr_db"] == "inf"
    assert data["bounds"]["int8"]["graph"]["min_snr_db"] == BOUNDS["int8"]["graph"].min_snr_db
    md = md_path.read_text()
    assert "| tts_vocoder | int8 | ort | ∞ |" in md and "NO: SNR 10.0 dB < 25.0 dB" in md
    # the run's machine, versions and commit, as in every report
    assert data["device"]["type"] == "cpu" and data["versions"]["onnxruntime"] and "sha" in data["commit"]
    assert data["device"]["summary"] in md and "commit " in md
