"""``speechtrt build`` on the command line: engines, the summary table, and one-line errors."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from speechtrt.cli import app
from speechtrt.errors import BuildError, InputError

pytestmark = pytest.mark.slow


def _run(*args):
    return CliRunner().invoke(app, ["build", *args], env={"COLUMNS": "160", "SPEECHTRT_TRT": "tensorrt-rtx"})


def test_build_prints_the_summary_table(reduced_dir, tmp_path):
    engines = tmp_path / "engines"
    result = _run("--gpu", "sm89", "--model", "asr-small", "--fp32", "--int8", "--onnx-dir", str(reduced_dir),
                  "--engines-dir", str(engines), "--shape", "batch=1:4:8", "--workspace-mb", "256")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Building 2 engine(s) for sm89 (compute capability 8.9" in out and "TensorRT-RTX" in out
    for header in ("component", "precision", "plan MB", "build s", "INT8", "HALF", "FLOAT", "Q/DQ layers"):
        assert header in out
    rows = [line for line in out.splitlines() if line.startswith("│ asr_small")]
    assert len(rows) == 2 and "fp32" in rows[0] and "int8" in rows[1]
    int8_cells = [c.strip() for c in rows[1].strip("│ ").split("│")]
    assert int(int8_cells[4]) > 0 and int(int8_cells[7]) > 0  # INT8 tensors, Q/DQ layers
    assert sorted(p.name for p in (engines / "sm89" / "asr-small").iterdir()) == [
        "asr_small.fp32.plan", "asr_small.int8.plan", "manifest.json"]


def test_missing_graphs_point_to_calibrate_before_anything_is_built(reduced_dir, tmp_path):
    result = _run("--model", "asr-medium", "--fp16", "--onnx-dir", str(reduced_dir), "--engines-dir", str(tmp_path))
    assert isinstance(result.exception, BuildError)
    assert "asr_medium.fp16.onnx does not exist" in str(result.exception)
    assert "speechtrt calibrate" in str(result.exception)
    assert not any(tmp_path.iterdir())


def test_precision_flags_combine_and_default_to_fp32():
    from speechtrt.commands.build import _selected_precisions

    assert _selected_precisions(False, False, False) == ["fp32"]
    assert _selected_precisions(True, True, True) == ["fp32", "fp16", "int8"]
    assert _selected_precisions(False, True, True) == ["fp16", "int8"]


@pytest.mark.parametrize("args, error, match", [
    (["--gpu", "sm90"], BuildError, "TensorRT-RTX cannot compile for sm90"),
    (["--gpu", "gb200"], InputError, "unknown GPU architecture"),
    (["--model", "asr-small", "--shape", "beam=1:2:3"], InputError, "no selected graph has such a dim"),
    (["--model", "asr-small", "--shape", "batch=1:2:3", "--shape", "batch=1:2:4"], InputError, "more than once"),
])
def test_bad_requests_fail_before_building(tmp_path, args, error, match):
    result = _run(*args, "--onnx-dir", str(tmp_path), "--engines-dir", str(tmp_path / "engines"))
    assert isinstance(result.exception, error)
    assert match in str(result.exception)
    assert not (tmp_path / "engines").exists()


def test_console_command_prints_one_line_and_exits_1(tmp_path):
    env = dict(os.environ, SPEECHTRT_TRT="tensorrt-rtx", COLUMNS="400")
    proc = subprocess.run([sys.executable, "-m", "speechtrt.cli", "build", "--gpu", "sm90", "--engines-dir",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT-RTX cannot compile for sm90")
    assert "Traceback" not in proc.stderr
