"""Metrics against hand-computed cases: WER/CER, substitution/deletion/insertion counts, corpus pooling."""

import jiwer
import pytest

from speechtrt.asr.metrics import (breakdown, corpus_score, frequency_bin, length_bin, phoneme_class, score_pair,
                                   word_class)
from speechtrt.asr.normalize import normalize_text

CASES = [
    # reference, hypothesis, S, D, I, ref words
    ("a b c d", "a b c d", 0, 0, 0, 4),
    ("a b c d", "a x c d", 1, 0, 0, 4),
    ("a b c d", "a c d", 0, 1, 0, 4),
    ("a b c", "a b c d", 0, 0, 1, 3),
    ("hello world", "", 0, 2, 0, 2),
    ("the cat sat", "a cat sat down", 1, 0, 1, 3),
    ("one two three four five", "one three four five six", 0, 1, 1, 5),
]


@pytest.mark.parametrize("ref,hyp,s,d,i,n", CASES)
def test_word_counts_match_hand_alignment(ref, hyp, s, d, i, n):
    e = score_pair(ref, hyp)
    assert (e.substitutions, e.deletions, e.insertions, e.ref_words) == (s, d, i, n)
    assert e.hits == n - s - d
    assert e.wer == pytest.approx((s + d + i) / n)
    assert e.wer == pytest.approx(jiwer.wer(ref, hyp) if hyp else 1.0)


def test_cer_counts_characters_including_spaces():
    assert score_pair("abc", "abd").char_errors == 1
    e = score_pair("ab cd", "abcd")  # the space is deleted
    assert (e.ref_chars, e.char_errors) == (5, 1)
    assert corpus_score([e]).cer == pytest.approx(1 / 5)


def test_normaliser_applies_to_both_sides():
    assert normalize_text("Don't -- PANIC!") == "don't panic"
    assert normalize_text("'Hello,' she said.") == "hello she said"
    assert normalize_text("rock-and-roll") == "rock and roll"
    assert normalize_text("  ") == ""
    e = score_pair("Hello, World!", "hello world")
    assert e.word_errors == 0 and e.char_errors == 0


def test_corpus_wer_pools_errors_not_utterance_rates():
    long = score_pair("a b c d", "a b c x")  # 1 / 4
    short = score_pair("yes", "no")  # 1 / 1
    score = corpus_score([long, short])
    assert score.wer == pytest.approx(2 / 5)  # the mean of utterance rates would be 0.625
    assert (score.substitutions, score.deletions, score.insertions, score.ref_words) == (2, 0, 0, 5)


def test_breakdowns_by_word_type():
    e = score_pair("the elephant sat on the mat", "the elephants sat the mat")
    by_class = breakdown([e], word_class)
    assert by_class["content"]["words"] == 3 and by_class["content"]["substitutions"] == 1
    assert by_class["function"]["words"] == 3 and by_class["function"]["deletions"] == 1
    assert by_class["content"]["error_rate"] == pytest.approx(1 / 3)
    assert length_bin("on") == "1-3" and length_bin("elephant") == "7-9" and length_bin("extraordinary") == "10+"
    assert frequency_bin("the", {"the": 0}) == "top-100" and frequency_bin("zyx", {}) == "rare"


def test_phoneme_classes_of_ipa():
    assert phoneme_class("ðˈə") == "fricative"
    assert phoneme_class("tʃˈiːz") == "affricate"
    assert phoneme_class("ˈæpəl") == "vowel"
    assert phoneme_class("mˈæt") == "nasal"
    assert phoneme_class("kˈæt") == "plosive"
