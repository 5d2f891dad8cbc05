"""`speechtrt stream` refuses every user mistake before any work, through the real entry point: our own errors in one
line naming the flag (exit 1), Typer's range checks with its usage message (exit 2), never a Python traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    # args, exit code, what stderr must say
    (["--streams", "0"], 2, "'--streams'"),
    (["--seconds", "0"], 2, "'--seconds'"),
    (["--chunk-ms", "-40"], 2, "'--chunk-ms'"),
    (["--chunk-ms", "100"], 1, "--chunk-ms 100: the model consumes 4-frame (40 ms) steps; use a multiple of 40"),
    (["--jitter-ms", "-10"], 1, "--jitter-ms -10: jitter is a delay"),
    (["--max-buffer-ms", "-5"], 1, "--max-buffer-ms -5: a stream must buffer some audio"),
    (["--threads", "-1"], 1, "--threads -1: give 0 (library default) or a positive thread count"),
    (["--idle-timeout-s", "0"], 1, "--idle-timeout-s 0: give a positive number of seconds"),
    (["--backend", "foo"], 1, "unknown backend 'foo' (--backend): choose one of torch, ort, trt"),
    (["--precision", "fp64"], 1, "unknown precision 'fp64' (--precision)"),
    (["--backend", "trt", "--precision", "bf16"], 1, "precision 'bf16' (--precision): the trt backend runs"),
    (["--device", "tpu"], 1, "unknown device 'tpu' (--device)"),
    (["--out", "/proc/no/such/dir"], 1, "cannot write to output folder '/proc/no/such/dir' (--out"),
    (["--manifest", "/no/such/manifest.jsonl"], 1, "--manifest /no/such/manifest.jsonl does not exist"),
    (["--checkpoint", "/no/such/asr-stream.pt"], 1, "--checkpoint /no/such/asr-stream.pt does not exist"),
    (["--find-capacity", "--streams", "64", "--capacity-max", "8"], 1, "--capacity-max 8: the capacity search starts"),
]


@pytest.mark.parametrize("args, code, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_values_are_refused_before_any_work(tmp_path, args, code, message):
    proc = subprocess.run([sys.executable, "-m", "speechtrt.cli", "stream", "--out", str(tmp_path / "out"),
                           "--cache-dir", str(tmp_path / "cache"), *args],
                          capture_output=True, text=True, timeout=300, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                                                                              "HOME": str(tmp_path)})
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    if code == 1:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "cache" / "utterances").exists()  # refused before any work
