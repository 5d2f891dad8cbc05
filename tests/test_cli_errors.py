"""Every user mistake through the real ``speechtrt`` entry point: a clear answer, the right exit code, no traceback.

Our own refusals (exit 1) are one line naming the flag and the fix, printed before any work starts; Typer's usage
errors (a value out of a declared range, a non-integer, an unknown option) print Typer's usage message and exit 2.
"""

import subprocess
import sys

import pytest

UNWRITABLE = "/dev/null/x"  # a path under a file: no folder can be made there

CASES = [
    # (args, exit code, text the message must hold)
    (["stream", "--streams", "0"], 2, "--streams"),
    (["stream", "--seconds", "0"], 2, "--seconds"),
    (["stream", "--streams", "many"], 2, "--streams"),
    (["stream", "--streams", "2", "--seconds", "1", "--chunk-ms", "-40"], 2, "--chunk-ms"),
    (["stream", "--jitter-ms", "-10"], None, "--jitter-ms"),
    (["stream", "--max-buffer-ms", "-5"], None, "--max-buffer-ms"),
    (["stream", "--threads", "-1"], None, "--threads"),
    (["stream", "--out", UNWRITABLE], 1, "cannot write to output folder"),
    (["stream", "--manifest", "/nonexistent/set.jsonl"], 1, "--manifest"),
    (["stream", "--no-such-option"], 2, "No such option"),
    (["eval", "--backends", "foo"], 1, "unknown backend"),
    (["eval", "--precisions", "fp64"], 1, "unknown precision"),
    (["eval", "--beam", "0"], None, "--beam"),
    (["eval", "--threads", "-1"], None, "--threads"),
    (["eval", "--n-boot", "-5"], None, "--n-boot"),
    (["eval", "--quick", "--out", UNWRITABLE], 1, "cannot write to output folder"),
    (["bench", "--repeats", "0"], 2, "--repeats"),
    (["bench", "--quick", "--warmup", "-1"], 2, "--warmup"),
    (["bench", "--backend", "tensorflow"], 1, "unknown backend"),
    (["bench", "--out", UNWRITABLE], 1, "cannot write to output folder"),
    (["profile", "--out", UNWRITABLE], 1, "cannot write to output folder"),
    (["data", "synth", "--speakers", "0"], 2, "--speakers"),
    (["data", "synth", "--out", UNWRITABLE], 1, "cannot write to output folder"),
    (["data", "synth", "--accents", "en-xx"], 1, "unknown accent"),
    (["export", "--model", "tts", "--out", UNWRITABLE], 1, "cannot write to output folder"),
    (["export", "--model", "asr-xl"], 1, "unknown model"),
    (["build", "--engine-dir", UNWRITABLE], 1, "cannot write to output folder"),
    (["train", "asr", "--size", "huge"], 1, "unknown ASR size"),
    (["train", "asr", "--minutes", "0"], 1, "--minutes"),
    (["calibrate", "--method", "minmax"], 1, "unknown calibration method"),
    (["gpu-report", "--device", "tpu"], 1, "--device"),
]


def _run(args):
    return subprocess.run([sys.executable, "-m", "speechtrt.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, code, text", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_user_mistake_gets_a_clear_answer(args, code, text):
    proc = _run(args)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode in ((1, 2) if code is None else (code,)), output
    assert text in output, output
    if proc.returncode == 1:  # our own refusal: one line
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    else:  # Typer's usage error: its usage line and the reason
        assert "Usage: " in output


def test_a_checkpoint_that_cannot_be_read_is_one_line(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint" * 20)
    proc = _run(["export", "--model", "asr-small", "--checkpoint", str(bad), "--out", str(tmp_path / "o")])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot be read (not a PyTorch checkpoint file)" in proc.stderr
    assert "weights_only" not in proc.stderr
