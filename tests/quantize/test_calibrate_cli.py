"""`speechtrt calibrate` end to end on the small ASR model, and its answers to bad input."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from speechtrt.cli import app
from speechtrt.errors import InputError

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, ["calibrate", *args])


@pytest.mark.parametrize("args, message", [
    (["--method", "minmax"], "unknown calibration method 'minmax'"),
    (["--precision", "int4"], "--precision int4: unknown precision(s)"),
    (["--model", "asr-huge"], "unknown model 'asr-huge'"),
    (["--int8-high-precision", "bf16"], "unknown --int8-high-precision 'bf16'"),
    (["--checkpoint", "x.pt"], "--checkpoint belongs to one model"),
])
def test_bad_options_raise_input_errors(args, message):
    result = _invoke(*args)
    assert isinstance(result.exception, InputError)
    assert message in str(result.exception)


def test_missing_onnx_dir_is_a_clear_message(tmp_path):
    result = _invoke("--model", "asr-small", "--onnx-dir", str(tmp_path / "nowhere"), "--no-export",
                     "--calib-dir", str(tmp_path / "calib"))
    assert isinstance(result.exception, InputError)
    assert "does not exist: run `speechtrt export" in str(result.exception)
    (tmp_path / "file").write_text("")
    result = _invoke("--model", "asr-small", "--onnx-dir", str(tmp_path / "file"))
    assert "is a file, not a folder" in str(result.exception)


@pytest.mark.slow
def test_console_prints_one_line_and_exit_code_1(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "speechtrt.cli", "calibrate", "--method", "percentile"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "unknown calibration method 'percentile'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_calibrate_asr_small_exports_captures_quantizes_and_reports(tmp_path):
    onnx_dir, calib_dir, reports = tmp_path / "onnx", tmp_path / "calib", tmp_path / "reports"
    result = _invoke("--model", "asr-small", "--onnx-dir", str(onnx_dir), "--calib-dir", str(calib_dir),
                     "--samples", "8", "--heldout", "4", "--reports", str(reports), "--method", "max")
    assert result.exit_code == 0, (result.output, result.exception)
    for name in ("asr_small.onnx", "asr_small.fp16.onnx", "asr_small.int8.onnx", "asr_small.fp16.json",
                 "asr_small.int8.json"):
        assert (onnx_dir / name).is_file(), name
    manifest = json.loads((calib_dir / "manifest.json").read_text())
    entry = manifest["components"]["asr_small"]
    assert entry["calibration"]["samples"] == 8 and entry["heldout"]["samples"] == 4
    assert "fortunes-min" in manifest["text_source"] and entry["calibration"]["voices"]
    side = json.loads((onnx_dir / "asr_small.int8.json").read_text())
    assert side["quantization"]["method"] == "max"
    assert side["quantization"]["calibration"]["sha256"] == entry["calibration"]["sha256"]
    report = json.loads((reports / "fidelity.json").read_text())
    assert [(r["component"], r["precision"]) for r in report["results"]] == [("asr_small", "fp16"),
                                                                             ("asr_small", "int8")]
    assert report["ok"] and all(r["backend"] == "ort" for r in report["results"])
    assert "| asr_small | int8 | ort |" in (reports / "fidelity.md").read_text()
    assert "asr_small" in result.output and "fidelity report" in result.output


@pytest.mark.slow
def test_checkpoint_is_used_and_must_match_the_exported_graphs(tmp_path, models):
    import torch

    from speechtrt.export import component
    from speechtrt.pipeline import export_component
    from speechtrt.models import build_model, save_checkpoint
    from speechtrt.quantize.calib import load_model

    ckpt = save_checkpoint(build_model("asr-small", seed=7), tmp_path / "asr_small.pt")
    loaded = load_model("asr-small", ckpt)
    assert torch.equal(loaded.state_dict()["classifier.weight"], build_model("asr-small", seed=7).state_dict()["classifier.weight"])
    onnx_dir = tmp_path / "onnx"
    export_component(component("asr_small"), models("asr-small"), onnx_dir, check=False)  # from the seeded init
    result = _invoke("--model", "asr-small", "--onnx-dir", str(onnx_dir), "--checkpoint", str(ckpt),
                     "--calib-dir", str(tmp_path / "calib"))
    assert isinstance(result.exception, InputError)
    assert "exported from the seeded init" in str(result.exception) and "re-export it" in str(result.exception)
