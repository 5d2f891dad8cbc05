"""Calibration capture: real text, real speech, decoder-step inputs as they occur in KV-cached decoding."""

import numpy as np
import pytest
import torch

from speechtrt.errors import InputError
from speechtrt.export import component
from speechtrt.export.components import per_layer_feeds
from speechtrt.quantize.calib import (
    CALIB_VOICES, HELDOUT_VOICES, capture_stream, capture_tts, english_sentences, load_set, minibatches, speak_set,
    split_sentences,
)


def test_english_sentences_come_from_the_installed_package():
    sentences = english_sentences()
    assert len(sentences) > 300  # fortunes-min: ~800 entries, the long and non-ASCII ones dropped
    assert all(3 <= len(s.split()) and len(s) <= 200 and s.isascii() for s in sentences)
    assert len(set(sentences)) == len(sentences)
    calib, held = split_sentences(sentences, 40)
    assert calib and held and not set(calib) & set(held)
    assert all(len(s) <= 40 for s in calib + held)


def test_missing_text_source_says_what_to_install(tmp_path):
    with pytest.raises(InputError, match="apt-get install fortunes-min"):
        english_sentences(directory=tmp_path)


def test_calibration_and_heldout_voices_differ():
    assert not set(CALIB_VOICES) & set(HELDOUT_VOICES)


@pytest.mark.slow
def test_decoder_step_inputs_are_those_of_real_decoding(models):
    """Feeding a captured sample back to decode_step gives the frame that decoding produced at that position."""
    tts = models("tts")
    texts = ["a bird in hand.", "time flies."]
    sets = capture_tts(tts, texts, steps_per_text=3, seed=1)
    dec = sets["tts_decoder_step"].arrays
    n = len(dec["past_len"])
    assert n == 6 and np.all(np.diff(dec["past_len"]) >= 0)  # sorted by position
    assert dec["past_len"].min() == 0  # first steps included
    layers = tts.config.num_layers
    past_k = np.stack([dec[f"past_k_{i}"] for i in range(layers)])  # [L, N, H, P, D]
    p = past_k.shape[3]
    assert p == max(1, dec["past_len"].max())
    for i in range(n):
        # rows past the valid length are zero, rows inside are real (non-zero) keys
        assert not past_k[:, i, :, dec["past_len"][i]:].any()
        if dec["past_len"][i]:
            assert np.abs(past_k[:, i, :, : dec["past_len"][i]]).sum() > 0
    with torch.no_grad():
        feeds = {k: torch.from_numpy(v) for k, v in dec.items()}
        frame, _, k, _ = component("tts_decoder_step").wrap(tts)(*(feeds[s.name] for s in component("tts_decoder_step").inputs))
        # the next step's prev_frame of the same text is this step's output: check by recomputing one step
        last = int(np.argmax(dec["past_len"]))
        one = {k: v[last:last + 1] for k, v in feeds.items()}
        again, *_ = component("tts_decoder_step").wrap(tts)(*(one[s.name] for s in component("tts_decoder_step").inputs))
    assert torch.allclose(again[0], frame[last], atol=1e-5)  # a padded batch row equals the sequence alone
    assert np.abs(dec["prev_frame"][dec["past_len"] > 0]).sum() > 0  # real frames, not zeros, after step 0
    assert not dec["prev_frame"][dec["past_len"] == 0].any()  # decoding starts from a zero frame
    enc = sets["tts_encoder"].arrays
    assert enc["tokens"].shape == (2, max(len(t) for t in texts))
    assert sets["tts_vocoder"].arrays["mel"].shape[2] == 80


def test_speech_features_and_stream_states(models):
    utts = speak_set(["the quick brown fox jumps over the lazy dog."], ("en-gb-scotland",))
    feats = utts[0]["features"]
    assert feats.shape[1] == 80 and feats.shape[0] > 100 and np.isfinite(feats).all()
    assert feats.std() > 1.0  # speech, not silence
    stream = capture_stream(models("asr-stream"), utts * 2, samples=6, seed=0)
    assert stream["features"].shape == (6, 16, 80)
    assert stream["h"].shape[:2] == (4, 6)
    assert np.abs(stream["h"]).sum() > 0  # states carried from earlier chunks, not only the zero start


@pytest.mark.parametrize("batch, want", [(2, [(2, 3), (2, 7)]), (3, [(3, 5), (1, 7)]), (8, [(4, 7)])])
def test_minibatches_crop_to_their_longest_sample(batch, want):
    comp = component("asr_small")
    lengths = np.array([2, 3, 5, 7])
    arrays = {"features": np.ones((4, 9, 80), np.float32), "feature_lengths": lengths}
    feeds = minibatches(comp, arrays, batch)
    assert [f["features"].shape[:2] for f in feeds] == want


def test_minibatches_crop_past_and_text_of_the_decoder_step():
    comp = component("tts_decoder_step")
    arrays = per_layer_feeds({
        "prev_frame": np.zeros((3, 80), np.float32), "past_len": np.array([0, 2, 5]),
        "past_k": np.zeros((6, 3, 8, 9, 64), np.float32), "past_v": np.zeros((6, 3, 8, 9, 64), np.float32),
        "cross_k": np.zeros((6, 3, 8, 11, 64), np.float32), "cross_v": np.zeros((6, 3, 8, 11, 64), np.float32),
        "text_lengths": np.array([4, 6, 3]),
    }, 6)
    first, second = minibatches(comp, arrays, 2)
    assert first["past_k_0"].shape == (2, 8, 2, 64) and first["cross_v_5"].shape == (2, 8, 6, 64)
    assert second["past_v_3"].shape == (1, 8, 5, 64) and second["cross_k_1"].shape == (1, 8, 3, 64)
    only_first = minibatches(comp, {**arrays, "past_len": np.array([0, 0, 0])}, 3)[0]
    assert only_first["past_k_2"].shape[2] == 1  # the graph's past axis is at least 1 (a masked row)


def test_missing_inputs_and_missing_sets_are_named(tmp_path):
    with pytest.raises(InputError, match="lacks input.*feature_lengths"):
        minibatches(component("asr_small"), {"features": np.zeros((1, 5, 80), np.float32)}, 4)
    with pytest.raises(InputError, match="run `speechtrt calibrate` first"):
        load_set(tmp_path, "asr_small")
