"""`speechtrt bench` and `speechtrt profile` end to end at smoke-test size: report keys and files."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from speechtrt.bench.timing import summarize_ms
from speechtrt.bench.tts_bench import HEADLINE, mel_snr_db, workload
from speechtrt.reporting import markdown_table
from speechtrt.cli import app


def test_workload_is_the_seed_texts_plus_a_50_char_headline():
    w = workload()
    assert len(HEADLINE) == 50 and w["headline"] == [HEADLINE]
    assert [len(w[c]) for c in ("short", "medium", "long")] == [3, 3, 4]


def test_summaries_and_snr():
    s = summarize_ms([0.001, 0.002, 0.003, 0.004])
    assert (s.avg, s.p50, s.min, s.max) == (2.5, 2.5, 1.0, 4.0) and s.p95 == pytest.approx(3.85)
    ref = np.ones((4, 3))
    assert mel_snr_db(ref, ref) == float("inf")
    assert mel_snr_db(ref, ref * 1.1) == pytest.approx(20.0)
    assert markdown_table(["a", "b"], [[1.23456, None]]).splitlines()[2] == "| 1.235 | – |"


@pytest.mark.slow
def test_bench_quick_writes_report_markdown_and_plots(tmp_path, tts_onnx_dir):
    out = tmp_path / "reports"
    res = CliRunner().invoke(app, ["bench", "--device", "cpu", "--quick", "--repeats", "1", "--threads", "1",
                                   "--onnx-dir", str(tts_onnx_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "tts_bench.json").read_text())
    for key in ("device", "versions", "commit", "workload", "baseline", "variants", "targets"):
        assert key in report
    # CPU default precisions fp32,int8 (INT8 is the fast path on a CPU) and the hand-written KV loop
    assert set(report["variants"]) == {"torch-kv-fp32", "ort-kv-fp32", "torch-kv-int8", "ort-kv-int8",
                                       "torch-eager-kv"}
    for name, v in report["variants"].items():
        assert set(v["latency_ms"]) >= {"avg", "p50", "p95"}
        assert v["throughput"]["utt_per_s"] > 0 and v["throughput"]["frames_per_s"] > 0
        assert v["peak_mem_mb"] is not None and v["speedup_p50"] > 0
        # fp32 KV paths agree with the fp32 reference; int8 within its stated tolerance
        assert float(v["fidelity"]["mel_snr_db"]) > (25 if "int8" in name else 60), name
        # the hand-written loop is a single-stream reference; the served variants sweep batch
        assert [r["batch"] for r in v["batch_sweep"]] == ([] if name == "torch-eager-kv" else [1, 2]), name
    assert float(report["baseline"]["fidelity"]["mel_snr_db"]) > 60  # the seed loop decodes the same frames
    md = (out / "tts_bench.md").read_text()
    assert "Metric" in md and "| Baseline" in md and "seed-baseline" in md
    for png in ("tts_latency_vs_batch.png", "tts_throughput_vs_concurrency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_profile_quick_writes_stage_tables(tmp_path, tts_onnx_dir):
    out = tmp_path / "reports"
    res = CliRunner().invoke(app, ["profile", "--quick", "--threads", "1", "--onnx-dir", str(tts_onnx_dir),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "profile.md").read_text()
    for stage in ("encoder", "decoder_step", "vocoder"):
        assert f"ort · {stage}" in md and f"torch · {stage}" in md
    data = json.loads((out / "profile.json").read_text())
    assert data["ort"]["decoder_step"]["top_ops"][0]["ms_per_call"] > 0
    assert "MatMul" in {o["op"] for o in data["ort"]["decoder_step"]["top_ops"]}


def test_bench_refuses_bad_flags(tmp_path):
    res = CliRunner().invoke(app, ["bench", "--backend", "tensorflow", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--backend tensorflow: unknown backend(s)" in str(res.exception)


def test_profile_trt_needs_a_gpu_and_says_so(tmp_path):
    res = CliRunner().invoke(app, ["profile", "--backend", "trt", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--device cuda" in str(res.exception)
    res = CliRunner().invoke(app, ["profile", "--backend", "ort,onnx", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--backend onnx: unknown backend(s); choose from torch, ort, trt" in str(res.exception)


@pytest.mark.gpu
def test_profile_trt_reports_layer_times(tmp_path, tts_onnx_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("tensorrt")
    from speechtrt.engines.arch import current_device

    engines = tmp_path / "engines"
    res = CliRunner().invoke(app, ["build", "--model", "tts", "--gpu", current_device().sm, "--fp32",
                                   "--onnx-dir", str(tts_onnx_dir), "--engine-dir", str(engines)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports"
    res = CliRunner().invoke(app, ["profile", "--quick", "--device", "cuda", "--backend", "trt", "--precision",
                                   "fp32", "--engine-dir", str(engines), "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "profile.json").read_text())
    assert data["trt"]["decoder_step"]["top_ops"][0]["ms_per_call"] > 0
    assert "trt · decoder_step" in (out / "profile.md").read_text()
