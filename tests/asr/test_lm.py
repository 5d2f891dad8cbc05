"""The word n-gram model and the CTC prefix beam search, on hand-made corpora and hand-built log-probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speechtrt.asr.lm import (EOS, SEARCH_COLUMNS, UNKNOWN_WORD, BeamConfig, NGramLM, ctc_beam_search,
                              tune_weights)
from speechtrt.asr.normalize import ALPHABET
from speechtrt.errors import InputError

CORPUS = ["the cat sat", "the cat ran", "a dog sat", "the dog ran home", "their cat sat"]


def _total(lm: NGramLM, context) -> float:
    words = sorted(lm.vocab) + [EOS, UNKNOWN_WORD]
    return sum(math.exp(lm.logp(context, w)) for w in words)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("context", [("<s>",), ("<s>", "the"), ("the", "cat"), ("dog", "ran"), ("zebra", "qux")])
def test_distribution_sums_to_one_over_vocabulary_end_and_unknown(order, context):
    lm = NGramLM(CORPUS, order=order)
    assert _total(lm, context) == pytest.approx(1.0, abs=1e-9)


def test_unigram_level_matches_hand_computation():
    # order 1: raw counts with one absolute discount, interpolated with the uniform over V + </s> + <unk>
    lm = NGramLM(["a b", "a"], order=1)
    # counts: a 2, b 1, </s> 2 -> n1 = 1 (b), n2 = 2 (a, </s>) -> D = 1 / (1 + 4) = 0.2; total 5, types 3
    d, total, types, uniform = 0.2, 5, 3, 1 / (2 + 2)
    expect_a = (2 - d) / total + d * types / total * uniform
    assert math.exp(lm.logp((), "a")) == pytest.approx(expect_a)
    assert math.exp(lm.logp((), "zzz")) == pytest.approx(d * types / total * uniform)


def test_context_shapes_probabilities_and_unknown_words_are_rare():
    lm = NGramLM(CORPUS, order=3)
    assert lm.logp(("<s>", "the"), "cat") > lm.logp(("<s>", "the"), "home")
    assert lm.logp(("the", "cat"), "sat") > lm.logp(("the", "cat"), "dog")
    assert lm.logp(("the",), "zebra") < lm.logp(("the",), "home")
    assert lm.perplexity(["the cat sat"]) < lm.perplexity(["home sat the"])
    assert "cat" in lm and "zebra" not in lm
    assert lm.is_prefix("ca") and not lm.is_prefix("cx")


def test_empty_text_is_refused():
    with pytest.raises(InputError, match="no usable sentence"):
        NGramLM(["", "123 !!"], order=2)


def _frames(spec: list[dict[str, float]]) -> np.ndarray:
    """[T, 1 + alphabet] log-probs from per-frame {char: prob} (the rest of the mass on the blank)."""
    out = np.full((len(spec), len(SEARCH_COLUMNS)), 1e-6)
    for t, probs in enumerate(spec):
        for ch, p in probs.items():
            out[t, 1 + ALPHABET.index(ch)] = p
        out[t, 0] = max(1e-6, 1.0 - sum(probs.values()))
    out /= out.sum(axis=1, keepdims=True)
    return np.log(out)


def _spell(text: str) -> list[dict[str, float]]:
    frames = []
    for ch in text:
        frames += [{ch: 0.95}, {}]
    return frames


def test_search_without_lm_reads_a_clear_spelling_and_ctc_repeats():
    assert ctc_beam_search(_frames(_spell("the cat")), None) == "the cat"
    # "a a" without a blank between collapses to one "a"; with a blank it is "aa"
    assert ctc_beam_search(_frames([{"a": 0.97}, {"a": 0.97}]), None) == "a"
    assert ctc_beam_search(_frames([{"a": 0.97}, {}, {"a": 0.97}]), None) == "aa"
    # full-width rows (the model's 1000 classes) are reduced to the searched columns
    wide = np.full((4, 1000), -30.0)
    wide[:, SEARCH_COLUMNS] = _frames(_spell("ab"))
    assert ctc_beam_search(wide, None) == "ab"


def test_lm_resolves_an_acoustically_ambiguous_word():
    lm = NGramLM(CORPUS * 3 + ["the cap fell"], order=3)
    ambiguous = _spell("the ca") + [{"t": 0.45, "p": 0.5}, {}] + _spell(" sat")
    assert ctc_beam_search(_frames(ambiguous), None) == "the cap sat"
    assert ctc_beam_search(_frames(ambiguous), lm, BeamConfig(alpha=1.0, beta=0.0)) == "the cat sat"


def test_search_refuses_log_probs_of_the_wrong_width():
    with pytest.raises(InputError, match="columns"):
        ctc_beam_search(np.zeros((5, 7)), None)


def test_tune_weights_scores_the_grid_and_picks_the_lowest_wer():
    lm = NGramLM(CORPUS * 3 + ["the cap fell"], order=3)
    ambiguous = _frames(_spell("the ca") + [{"t": 0.45, "p": 0.5}, {}] + _spell(" sat"))
    result = tune_weights([ambiguous], ["the cat sat"], lm, alphas=(0.0, 1.0), betas=(0.0,), beam=8)
    assert {(g["alpha"], g["beta"]) for g in result["grid"]} == {(0.0, 0.0), (1.0, 0.0)}
    assert result["alpha"] == 1.0 and result["wer"] == 0.0
    assert next(g for g in result["grid"] if g["alpha"] == 0.0)["wer"] == pytest.approx(1 / 3)
