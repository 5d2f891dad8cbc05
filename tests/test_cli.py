"""The command line: the product's commands are listed, and user mistakes end in one clear line with exit 1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PRODUCT_COMMANDS = ("export", "calibrate", "build", "bench", "eval", "stream")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "speechtrt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_help_lists_the_product_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in PRODUCT_COMMANDS:
        assert f" {name} " in result.stdout, name


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("speechtrt ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "--model", "whisper"], "unknown model 'whisper'"),
        (["export", "--model", "tts", "--out", "/proc/no/such/dir"], "cannot write to output folder"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(args, message):
    result = run_cli(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_export_command_writes_graph_sidecar_and_prints_parity(tmp_path):
    result = run_cli("export", "--model", "asr-stream", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "asr_stream_step" in result.stdout and "parity" in result.stdout
    side = json.loads((tmp_path / "asr_stream_step.json").read_text())
    assert side["parity"]["ok"] and side["parity"]["max_rel_l2"] <= 1e-4
    assert (tmp_path / "asr_stream_step.onnx").stat().st_size > 1_000_000


def test_export_from_checkpoint_records_its_source(tmp_path):
    from speechtrt.models import build_asr, save_checkpoint

    ckpt = save_checkpoint(build_asr("small", seed=9), tmp_path / "small.pt", meta={"note": "test"})
    result = run_cli("export", "--model", "asr-small", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    source = json.loads((tmp_path / "o" / "asr_small.json").read_text())["source"]
    assert source["checkpoint"] == str(ckpt) and source["note"] == "test"
    bad = run_cli("export", "--model", "tts", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"))
    assert bad.returncode == 1 and "does not export them" in bad.stderr


def test_the_command_line_starts_without_torch_onnxruntime_or_fastapi():
    """`speechtrt --help`, `--version` and usage errors answer without the heavy libraries (they took ~4 s to load);
    a command imports what it needs when it runs."""
    code = ("import sys, speechtrt.cli; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'fastapi', 'onnx', 'tensorrt_rtx_bindings') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    help_text = run_cli("--help")
    assert help_text.returncode == 0 and all(c in help_text.stdout for c in ("export", "tts", "serve", "triton"))


@pytest.mark.parametrize("argv", [
    ["export", "--model", "voice-eng"],
    ["calibrate", "--model", "asr-huge"],
    ["build", "--gpu", "sm80", "--model", "missing.pt"],
    ["bench", "--model", "whisper"],
    ["tts", "hello", "-o", "hello.wav", "--voice", "voice-eng"],
    ["tts-quality", "--voice", ""],
])
def test_a_mistyped_model_is_refused_before_torch_loads(argv, tmp_path):
    """A model name that names nothing is refused in one line naming the flag and what works (with the closest
    shipped name), before the command imports torch."""
    code = ("import sys, speechtrt.cli\n"
            f"sys.argv = ['speechtrt', *{argv!r}]\n"
            "try:\n    speechtrt.cli.main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print('exit', code, 'torch' in sys.modules, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr.strip().endswith("exit 1 False"), proc.stdout + proc.stderr
    message = proc.stdout + proc.stderr
    flag = "--voice" if argv[0].startswith("tts") else "--model"
    assert flag in message and "Traceback" not in message
    if "voice-eng" in argv:
        assert "did you mean 'voice-en'?" in message
    elif "missing.pt" in argv:
        assert "no such checkpoint file" in message
    elif argv[-1]:
        assert "give one of tts, asr-small, asr-medium, asr-large, asr-stream" in message
