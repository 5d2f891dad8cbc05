"""``speechtrt gpu-report``: the one prepared GPU command, run on the CPU at smoke-test size so it cannot rot, and
refused in one line where it cannot measure."""

import json
import subprocess
import sys
import tarfile

import pytest
import torch

from speechtrt.models.audio import espeak_available


def _cli(*args, cwd=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "speechtrt.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_is_one_line_and_exit_1(tmp_path):
    proc = _cli("gpu-report", "--out", str(tmp_path / "r"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "torch sees none here" in proc.stderr and "--device cpu --quick" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not espeak_available(), reason="the ASR steps need espeak-ng speech")
def test_cpu_quick_mode_runs_every_step_and_packs_one_archive(tmp_path, tts_onnx_dir):
    from speechtrt.asr.data import SynthConfig, synthesize

    inputs = tmp_path / "inputs"
    synthesize(inputs / "asr", SynthConfig(split="test", accents=("en-us", "en-gb"), speakers_per_accent=1,
                                           sentences_per_speaker=2))
    out = tmp_path / "gpu"
    proc = _cli("gpu-report", "--device", "cpu", "--quick", "--inputs", str(inputs), "--out", str(out),
                "--budget-s", "600")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "gpu_report.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["tts_bench", "tts_profile", "asr_eval", "stream_capacity"]
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    assert summary["device"]["type"] == "cpu" and summary["commit"]["sha"]
    assert "tts_headline_p50_ms" in summary["headline"] and "asr_rtfx" in summary["headline"]
    with tarfile.open(out / "gpu_report.tar.gz") as tar:
        names = tar.getnames()
    for want in ("gpu_report.md", "bench/tts_bench.json", "profile/profile.json", "eval/asr_eval.json",
                 "stream/stream.json"):
        assert want in names, names
