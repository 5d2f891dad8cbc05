"""``speechtrt tts``: real audio files (WAV/FLAC by suffix), one per input line, the text rules through the voice's
tokenizer, and every bad flag refused in one line before work. The voice is the small model defined in
tests/models/test_own_model.py (its stop head fires after about 1.5 frames per character)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[2]
VOICE = "tests.models.test_own_model:tiny_tts"


def tts(*args, stdin: str | None = None):
    return subprocess.run([sys.executable, "-m", "speechtrt.cli", "tts", *args], capture_output=True, text=True,
                          cwd=ROOT, input=stdin, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": "/tmp",
                                                      "PYTHONPATH": str(ROOT)})


def tts_here(capsys, *args) -> tuple[int, str, str]:
    """The command in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from speechtrt.cli import main

    argv = sys.argv
    sys.argv = ["speechtrt", "tts", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return code, out.out, out.err


def test_one_text_to_a_wav_file_decoded_to_the_stop_token(tmp_path):
    out = tmp_path / "hello.wav"
    res = tts("Hello there.", "-o", str(out), "--voice", VOICE)
    assert res.returncode == 0, res.stderr
    audio, rate = soundfile.read(out)
    info = soundfile.info(out)
    assert (rate, info.format, info.subtype, info.channels) == (16000, "WAV", "PCM_16", 1)
    frames = len(audio) // 4  # 4 samples per decoder frame
    assert abs(frames - 1.5 * len("hello there.")) <= 2 and np.abs(audio).max() > 0
    assert "voice tiny-tts, torch fp32" in res.stderr


def test_flac_by_suffix_and_long_text_split_at_sentences(tmp_path):
    out = tmp_path / "long.flac"
    text = "The first sentence is here. A second one follows it! And the third, is it last?"
    res = tts(text, "-o", str(out), "--voice", VOICE)
    assert res.returncode == 0, res.stderr
    assert soundfile.info(out).format == "FLAC"
    assert "(3 parts)" in res.stdout


def test_input_file_one_audio_file_per_line(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("First line.\n\n  Second line, a bit longer.  \nThird.\n")
    res = tts("--input", str(lines), "-o", str(tmp_path / "speech"), "--voice", VOICE, "--format", "flac")
    assert res.returncode == 0, res.stderr
    files = sorted((tmp_path / "speech").iterdir())
    assert [f.name for f in files] == ["0001.flac", "0002.flac", "0003.flac"]
    lengths = [soundfile.info(f).frames for f in files]
    assert lengths[1] > lengths[0] > lengths[2]


def test_stdin_and_the_ort_backend(tmp_path):
    res = tts("--input", "-", "-o", str(tmp_path / "piped"), "--voice", VOICE, "--backend", "ort",
              "--artifacts", str(tmp_path / "art"), stdin="From a pipe.\nAgain.\n")
    assert res.returncode == 0, res.stderr
    assert sorted(f.name for f in (tmp_path / "piped").iterdir()) == ["0001.wav", "0002.wav"]
    assert list((tmp_path / "art").glob("*/tts_decoder_step.onnx"))


@pytest.mark.parametrize("args,message", [
    (["", "-o", "a.wav"], "text is empty"),
    (["  \t ", "-o", "a.wav"], "text is empty"),
    (["\u65e5\u672c ok"], "'\u65e5' (U+65E5), '\u672c' (U+672C)"),
    (["word " * 20], "a sentence has 99 tokens, more than the 64 one request holds"),
    (["hi", "-o", "a.mp3"], "-o a.mp3: the file's suffix picks the format; use .wav or .flac"),
    (["hi", "--backend", "tensorrt"], "unknown backend 'tensorrt' (--backend)"),
    (["hi", "--precision", "int4"], "unknown precision 'int4' (--precision)"),
    (["hi", "--backend", "ort", "--precision", "bf16"], "the ort backend runs fp32, fp16, int8"),
    (["hi", "--device", "gpu"], "--device must be cpu or cuda[:N]"),
    (["hi", "--voice", "no_such_module:make"], "cannot import module 'no_such_module'"),
    (["hi", "--voice", "asr-small"], "a TTS model is needed here"),
    (["hi", "--input", "x.txt"], "not both"),
    ([], "give the text to speak"),
    (["--input", "/no/such/file.txt"], "--input /no/such/file.txt: no such file"),
])
def test_bad_input_is_refused_in_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    voice = [] if "--voice" in args else ["--voice", VOICE]
    out = [] if "-o" in args or "--input" in args else ["-o", str(tmp_path / "x.wav")]
    code, _, err = tts_here(capsys, *args, *voice, *out)
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert not list(tmp_path.glob("*.wav"))


def test_a_bad_line_is_named(tmp_path, capsys):
    lines = tmp_path / "lines.txt"
    lines.write_text("fine\n\u65e5\u672c\n")
    code, _, err = tts_here(capsys, "--input", str(lines), "-o", str(tmp_path / "o"), "--voice", VOICE)
    assert code == 1 and "error: --input line 2: text has 2 character(s)" in err


def test_trt_without_a_gpu_is_refused_before_work(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    code, _, err = tts_here(capsys, "hi", "--backend", "trt", "--voice", VOICE, "-o", str(tmp_path / "a.wav"))
    assert code == 1 and "CUDA GPU" in err and not (tmp_path / "a.wav").exists()


def test_default_voice_is_voice_en_or_the_seeded_model_with_a_note(tmp_path):
    from speechtrt.models.loading import checkpoint_path

    res = tts("Hi.", "-o", str(tmp_path / "d.wav"))
    assert res.returncode == 0, res.stderr
    if checkpoint_path("voice-en"):
        assert "voice voice-en" in res.stderr
    else:
        notes = [line for line in res.stderr.splitlines() if line.startswith("note:")]
        assert len(notes) == 1 and "audio is noise" in notes[0]
        assert soundfile.info(tmp_path / "d.wav").samplerate == 22050
