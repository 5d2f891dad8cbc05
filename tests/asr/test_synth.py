"""The synthesizer interface: espeak-ng, festival and flite really speak; a mixed set records synthesizer and voice;
a missing engine or voice is refused with what to install; old manifests still read."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from speechtrt.asr import synth as synth_module
from speechtrt.asr.data import (SynthConfig, Utterance, plan_utterances, read_manifest, speakers, synthesize,
                                write_manifest)
from speechtrt.asr.synth import SpeechRequest, parse_synthesizers, synthesizer
from speechtrt.errors import InputError
from speechtrt.models.audio import read_wav

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
needs_festival = pytest.mark.skipif(not synthesizer("festival").available(), reason="festival/sox not installed")
needs_flite = pytest.mark.skipif(not synthesizer("flite").available(), reason="flite/sox not installed")

SENTENCE = "The quick brown fox jumps over the lazy dog."


def _is_speech(samples: np.ndarray, min_seconds: float = 1.0) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert np.isfinite(samples).all()
    assert len(samples) / 16000 > min_seconds
    assert 0.02 < np.abs(samples).max() <= 1.0


@needs_espeak
def test_espeak_speaks_a_sentence_at_16k_in_every_english_voice_it_lists():
    engine = synthesizer("espeak")  # alias
    voices = engine.english_voices()
    assert {"en-us", "en-gb-scotland", "en-029"} <= set(voices) and voices["en-029"] == "en-029"
    _is_speech(engine.speak(SpeechRequest(SENTENCE, "en-gb-scotland", "m3", rate=160, pitch=40)))


@needs_festival
def test_festival_speaks_diphone_and_hts_voices_in_one_batch_and_rate_slows_it():
    engine = synthesizer("festival")
    assert {"kal_diphone", "cmu_us_slt_arctic_hts"} <= set(engine.english_voices())
    fast, slow, hts, shifted = engine.speak_many([
        SpeechRequest(SENTENCE, "kal_diphone", "s+030", rate=200),
        SpeechRequest(SENTENCE, "kal_diphone", "s+030", rate=130),
        SpeechRequest(SENTENCE, "cmu_us_slt_arctic_hts", "s-090", rate=175),  # 32 kHz voice, resampled
        SpeechRequest(SENTENCE, "kal_diphone", "s+330", rate=200, pitch=70),
    ])
    for samples in (fast, slow, hts, shifted):
        _is_speech(samples)
    assert len(slow) > 1.3 * len(fast)
    assert abs(len(shifted) - len(fast)) < 0.05 * len(fast)  # a pitch shift keeps the duration


@needs_flite
def test_flite_speaks_its_scottish_voice():
    engine = synthesizer("flite")
    assert engine.english_voices()["awb"] == "en-gb-scotland"
    _is_speech(engine.speak(SpeechRequest(SENTENCE, "awb", "s-150", rate=175)))


@pytest.mark.parametrize("engine", ["festival", "flite"])
def test_a_missing_voice_is_refused_naming_the_installed_ones(engine):
    s = synthesizer(engine)
    if not s.available():
        pytest.skip(f"{engine} not installed")
    with pytest.raises(InputError, match=rf"--voices: {engine} has no English voice no_such_voice; installed: "):
        s.check_voices(["no_such_voice"], "--voices")
    with pytest.raises(InputError, match="no_such_voice"):  # flite alone would fall back to kal without a word
        s.speak(SpeechRequest(SENTENCE, "no_such_voice", "s+030"))


def test_a_missing_engine_is_refused_with_what_to_install(monkeypatch):
    monkeypatch.setattr(synth_module.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match=r"synthesizer festival is not installed \(festival, sox not found\): "
                                         r"`apt-get install festival"):
        synthesizer("festival").speak(SpeechRequest(SENTENCE, "kal_diphone", "s+030"))
    with pytest.raises(InputError, match=r"--synthesizers festival: not installed"):
        parse_synthesizers("festival")
    with pytest.raises(InputError, match=r"--synthesizers: unknown synthesizer 'mbrola'; choose from espeak-ng"):
        parse_synthesizers("mbrola")


def test_shifted_engines_have_disjoint_train_and_test_speakers():
    for engine in ("festival", "flite"):
        s = synthesizer(engine)
        assert not set(s.variants("train")) & set(s.variants("test"))
    if synthesizer("festival").available():
        train = speakers("kal_diphone", "train", 12, engine="festival")
        test = speakers("kal_diphone", "test", 6, engine="festival")
        assert {sp.variant for sp in train}.isdisjoint({sp.variant for sp in test})
        assert all(sp.accent == "en-us" and sp.id.startswith("festival:kal_diphone/") for sp in train + test)


@needs_espeak
def test_espeak_speaker_ids_keep_their_old_form():
    speaker, *_ = next(plan_utterances(SynthConfig(split="test", accents=("en-us",), speakers_per_accent=1,
                                                   sentences_per_speaker=1)))
    assert re.fullmatch(r"en-us/\w+-r\d+-p\d+", speaker.id) and speaker.synthesizer == "espeak-ng"


@needs_espeak
@needs_festival
def test_a_mixed_set_records_synthesizer_and_voice_and_keeps_sentences_split(tmp_path):
    common = dict(accents=("en-us",), speakers_per_accent=1, sentences_per_speaker=2,
                  synthesizers=("espeak-ng", "festival"), voices=("festival:kal_diphone",))
    test = synthesize(tmp_path, SynthConfig(split="test", **common))
    train = synthesize(tmp_path, SynthConfig(split="train", jitter=True, **common))
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    assert [(r["synthesizer"], r["voice"], r["dialect"]) for r in rows] == [
        ("espeak-ng", "en-us", "en-us")] * 2 + [("festival", "kal_diphone", "en-us")] * 2
    test_rows, problems = read_manifest(test)
    train_rows, _ = read_manifest(train)
    assert not problems and len(train_rows) == 4
    assert {r.text for r in test_rows}.isdisjoint({r.text for r in train_rows})
    assert {r.speaker for r in test_rows}.isdisjoint({r.speaker for r in train_rows})
    assert test_rows[0].text == test_rows[2].text  # paired: every voice reads the same test sentences
    for row in test_rows:
        samples, rate = read_wav(row.path(tmp_path))
        assert rate == 16000 and row.duration == pytest.approx(len(samples) / 16000, abs=1e-3)


def test_manifests_without_synthesizer_fields_still_read_and_stay_as_they_were(tmp_path):
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"audio_filepath": "a.wav", "text": "hi there", "duration": 1.0, "dialect": "en-us",
                               "speaker": "s1"}) + "\n")
    (row,), problems = read_manifest(old)
    assert not problems and row.synthesizer == "" and row.voice == ""
    again = write_manifest(tmp_path / "again.jsonl", [row, Utterance("b.wav", "x", 1.0, "en-us", "s2", "flite", "awb")])
    first, second = (json.loads(line) for line in again.read_text().splitlines())
    assert "synthesizer" not in first and "voice" not in first
    assert second["synthesizer"] == "flite" and second["voice"] == "awb"


REFUSALS = [
    (["--synthesizers", "bogus"], "--synthesizers: unknown synthesizer 'bogus'"),
    (["--synthesizers", ""], "--synthesizers is empty"),
    (["--synthesizers", "espeak-ng", "--voices", "flite:awb"], "--voices 'flite:awb': flite is not in --synthesizers"),
    (["--synthesizers", "espeak-ng,festival", "--voices", "festival:nope"], "--voices: festival has no English voice"),
    (["--voices", "espeak-ng:en-us"], "espeak-ng voices are accents"),
    (["--voices", "kal_diphone"], "--voices 'kal_diphone': give <synthesizer>:<voice>"),
    (["--synth-speakers", "festival=many"], "--synth-speakers 'festival=many'"),
    (["--synth-speakers", "festival=2"], "--synth-speakers: festival not in --synthesizers"),
    (["--synthesizers", "espeak,festival", "--synth-speakers", "festival=7"],
     "--synth-speakers: 7 test speakers per voice of festival asked; its test variant pool has 6"),
]


@needs_espeak
@needs_festival
@pytest.mark.parametrize("args, text", REFUSALS, ids=[" ".join(a) for a, _ in REFUSALS])
def test_bad_synth_flags_are_refused_in_one_line_naming_the_flag(tmp_path, args, text):
    proc = subprocess.run([sys.executable, "-m", "speechtrt.cli", "data", "synth", "--out", str(tmp_path / "o"),
                           *args], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert text in lines[0]
    assert not (tmp_path / "o").exists()  # refused before anything is made
