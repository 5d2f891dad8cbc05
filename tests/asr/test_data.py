"""Synthesis of a tiny accented set with espeak-ng: manifest fields, audio, unseen sentences and speakers."""

import json
import shutil

import pytest

from speechtrt.asr.data import (ACCENTS, MANIFEST_KEYS, SynthConfig, load_sentences, read_manifest, sentence_split,
                                speakers, synthesize)
from speechtrt.models.audio import read_wav

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_sentences_from_the_installed_text_source_are_speakable():
    sentences = load_sentences()
    assert len(sentences) > 500
    assert not any(ch.isdigit() for s in sentences for ch in s)
    assert not any(s.startswith("-") for s in sentences)


def test_speakers_are_unseen_between_splits():
    for accent in ACCENTS:
        train = {s.variant for s in speakers(accent, "train", 8)}
        test = {s.variant for s in speakers(accent, "test", 4)}
        assert len(test) == 4 and not train & test


def test_synth_writes_manifest_and_16k_audio_with_unseen_sentences(tmp_path):
    accents = ("en-us", "en-gb-scotland")
    test_manifest = synthesize(tmp_path, SynthConfig(split="test", accents=accents, speakers_per_accent=2,
                                                     sentences_per_speaker=2))
    train_manifest = synthesize(tmp_path, SynthConfig(split="train", accents=accents, speakers_per_accent=2,
                                                      sentences_per_speaker=2, jitter=True))
    test_rows = [json.loads(line) for line in test_manifest.read_text().splitlines()]
    assert len(test_rows) == 2 * 2 * 2
    assert all(set(MANIFEST_KEYS) <= set(r) for r in test_rows)
    assert {r["dialect"] for r in test_rows} == set(accents)
    assert len({r["speaker"] for r in test_rows}) == 4
    rows, problems = read_manifest(test_manifest)
    assert not problems
    for row in rows:
        samples, rate = read_wav(row.path(tmp_path))
        assert rate == 16000 and samples.ndim == 1
        assert row.duration == pytest.approx(len(samples) / 16000, abs=1e-3) and row.duration > 0.5
        assert sentence_split(row.text) == "test"
    train_rows, _ = read_manifest(train_manifest)
    assert {r.text for r in train_rows}.isdisjoint({r.text for r in rows})
    assert {r.speaker for r in train_rows}.isdisjoint({r.speaker for r in rows})
    assert all(sentence_split(r.text) == "train" for r in train_rows)


def test_dev_split_uses_training_sentences_the_excluded_manifest_did_not(tmp_path):
    from speechtrt.asr.data import TRAIN_VARIANTS, Utterance, plan_utterances, write_manifest
    from speechtrt.asr.normalize import normalize_text

    train_cfg = SynthConfig(split="train", accents=("en-us",), speakers_per_accent=2, sentences_per_speaker=30)
    used = [sentence for _, sentence, _, _ in plan_utterances(train_cfg)]
    manifest = write_manifest(tmp_path / "train.jsonl",
                              [Utterance(f"wav/{i}.wav", s, 1.0, "en-us", "x") for i, s in enumerate(used)])
    dev = list(plan_utterances(SynthConfig(split="dev", accents=("en-us", "en-gb"), speakers_per_accent=2,
                                           sentences_per_speaker=40, exclude=(str(manifest),))))
    assert len(dev) == 2 * 2 * 40
    used_norm = {normalize_text(s) for s in used}
    assert all(sentence_split(s) == "train" and normalize_text(s) not in used_norm for _, s, _, _ in dev)
    assert all(speaker.variant in TRAIN_VARIANTS for speaker, *_ in dev)
    # a paired design like the test split: every dev speaker reads the same sentences
    by_speaker = {}
    for speaker, sentence, *_ in dev:
        by_speaker.setdefault(speaker.id, []).append(sentence)
    assert len({tuple(v) for v in by_speaker.values()}) == 1


def test_unknown_split_is_refused():
    from speechtrt.asr.data import plan_utterances
    from speechtrt.errors import InputError

    with pytest.raises(InputError, match="unknown split 'valid'"):
        list(plan_utterances(SynthConfig(split="valid")))
