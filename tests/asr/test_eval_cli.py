"""`speechtrt eval` through the real entry point: every user mistake is refused before any work starts, with one
line naming the flag, exit code 1 and no traceback (Typer's own usage errors: exit 2 with the usage message)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = str(REPO / "checkpoints" / "asr-small.pt")


def run_eval(*args, cwd):
    return subprocess.run([sys.executable, "-m", "speechtrt.cli", "eval", *args], capture_output=True, text=True,
                          cwd=cwd, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": "/tmp",
                                        "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("bad_ckpt")
    (root / "garbage.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"format": "speechtrt-checkpoint/1", "note": __import__("fractions").Fraction(1, 3)}, root / "obj.pt")
    (root / "copy").mkdir()
    (root / "copy" / "asr-small.pt").write_bytes(Path(SMALL).read_bytes())
    return root


CASES = [
    (["--backends", "foo"], "--backends foo"),
    (["--backends", "torch,foo"], "--backends foo"),
    (["--backends", ","], "--backends is empty"),
    (["--precisions", "fp64"], "--precisions fp64"),
    (["--beam", "0"], "--beam 0"),
    (["--threads", "-1"], "--threads -1"),
    (["--n-boot", "-5"], "--n-boot -5"),
    (["--batch-frames", "0"], "--batch-frames 0"),
    (["--lm-order", "0"], "--lm-order 0"),
    (["--decoder", "best"], "--decoder 'best'"),
    (["--manifest", "no/such/test.jsonl"], "--manifest no/such/test.jsonl does not exist"),
    (["--quick", "--tune-on", "no/dev.jsonl"], "--tune-on no/dev.jsonl does not exist"),
    (["--quick", "--calib-manifest", "no/dev.jsonl"], "--calib-manifest no/dev.jsonl does not exist"),
    (["--quick", "--checkpoints", "no/such.pt"], "--checkpoints: not found: no/such.pt"),
    (["--quick", "--checkpoints", "{bad}/garbage.pt"], "cannot be read (not a PyTorch checkpoint file)"),
    (["--quick", "--checkpoints", "{bad}/obj.pt"], "holds Python objects"),
    (["--quick", "--checkpoints", f"{SMALL},{{bad}}/copy/asr-small.pt"], "two checkpoints are named 'asr-small'"),
    (["--quick", "--checkpoints", SMALL, "--out", "/proc/no/such/dir"], "cannot write to output folder"),
    (["--held-out", "festival:"], "--held-out festival:: give synthesizers or <synthesizer>:<voice>"),
    (["--held-out", "flite", "--trained-on", "x.jsonl"], "--held-out and --trained-on both say"),
    (["--quick", "--trained-on", "no/train.jsonl"], "--trained-on no/train.jsonl does not exist"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_bad_flag_is_one_line_before_any_work(args, message, bad_checkpoints, tmp_path):
    args = [a.replace("{bad}", str(bad_checkpoints)) for a in args]
    result = run_eval(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "weights_only" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing synthesized, no report folder made


@pytest.mark.parametrize("args", [["--beam", "x"], ["--threads", "1.5"], ["--no-such-flag"]])
def test_typer_usage_errors_exit_2_with_the_usage_message(args, tmp_path):
    result = run_eval(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Usage:" in result.stderr and "Traceback" not in result.stderr
