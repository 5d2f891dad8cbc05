"""Recordings for the load generator come through the one manifest reader: bad rows are skipped and listed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechtrt.errors import InputError
from speechtrt.models.audio import write_wav
from speechtrt.stream.loadgen import Recording, SkippedInput, load_recordings


def test_bad_rows_are_skipped_and_listed_and_the_rest_plays(tmp_path):
    tone = (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    write_wav(tmp_path / "good.wav", tone, 8000)  # 8 kHz: resampled to 16 kHz
    (tmp_path / "text.wav").write_text("not audio")
    rows = [
        json.dumps({"audio_filepath": "good.wav", "text": "a tone", "dialect": "en-us", "speaker": "sine"}),
        "{not json",
        json.dumps({"text": "no audio path"}),
        json.dumps({"audio_filepath": "missing.wav", "text": "gone"}),
        json.dumps({"audio_filepath": "text.wav", "text": "garbage"}),
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    recordings, skipped = load_recordings(manifest)
    assert len(recordings) == 1 and isinstance(recordings[0], Recording)
    r = recordings[0]
    assert (r.utt_id, r.text, r.dialect, r.speaker) == ("good", "a tone", "en-us", "sine")
    assert r.samples.dtype == np.float32 and r.duration_s == pytest.approx(1.0, abs=1e-3)
    assert [s.where for s in skipped] == ["line 2", "line 3", "missing.wav", "text.wav"]
    assert all(isinstance(s, SkippedInput) and s.reason for s in skipped)
    assert "not JSON" in skipped[0].reason and "does not exist" in skipped[2].reason


def test_a_manifest_with_nothing_playable_is_refused(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "missing.wav", "text": "x"}) + "\n")
    with pytest.raises(InputError, match="no playable utterance.*missing.wav"):
        load_recordings(manifest)
    with pytest.raises(InputError, match="does not exist"):
        load_recordings(tmp_path / "nope.jsonl")
