"""Greedy CTC: the incremental decoder (chunk by chunk, as streams use it) equals the whole-utterance best path."""

from __future__ import annotations

import numpy as np
import pytest

from speechtrt.asr.decode import IncrementalGreedy, greedy_batch, greedy_path
from speechtrt.models.text import BLANK, asr_decode, asr_encode, ctc_greedy


def _frames(rng, n: int) -> np.ndarray:
    """Argmax ids shaped like a CTC model's: runs of repeats, many blanks, a few characters."""
    ids = rng.choice([BLANK, BLANK, BLANK, *asr_encode("hello world")], size=n)
    return np.repeat(ids, rng.integers(1, 4, size=n))[:n]


@pytest.mark.parametrize("seed", range(5))
def test_incremental_equals_offline_greedy_for_any_chunking(seed):
    rng = np.random.default_rng(seed)
    ids = _frames(rng, 300)
    tokens, frames = greedy_path(ids)
    assert tokens == ctc_greedy(ids)
    log_probs = np.full((1, len(ids), 128), -10.0, dtype=np.float32)  # [B, T, V]
    log_probs[0, np.arange(len(ids)), ids] = 0.0
    assert greedy_batch(log_probs, np.array([len(ids)]))[0] == asr_decode(tokens)
    for _ in range(10):
        cuts = np.sort(rng.choice(np.arange(1, len(ids)), size=rng.integers(1, 30), replace=False))
        dec = IncrementalGreedy()
        seen = []
        for chunk in np.split(ids, cuts):
            dec.push(chunk)
            assert dec.text.startswith("".join(seen))  # never revised
            seen = [dec.text]
        assert dec.tokens == tokens and dec.token_frames == frames and dec.text == asr_decode(tokens)
        assert dec.frames == len(ids)


def test_a_repeat_across_a_chunk_boundary_is_one_token():
    dec = IncrementalGreedy()
    h = asr_encode("h")[0]
    assert dec.push([BLANK, h, h]) == 1
    assert dec.push([h, h, BLANK]) == 0  # still the same 'h'
    assert dec.push([h]) == 1  # a blank separated it: a new 'h'
    assert dec.text == "hh" and dec.token_frames == [1, 6]
    assert dec.push([]) == 0 and dec.frames == 7
