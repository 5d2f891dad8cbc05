"""CTC decoding: greedy best path (whole utterances, or chunk by chunk for streams), and a lexicon pass that maps
each decoded word onto a known word.

Lexicon decoding (documented rule): after the greedy best path, every hypothesis word that is not in the lexicon
is replaced by the lexicon word with the smallest character edit distance, provided that distance is at most
``max(1, len(word) // 3)``; ties go to the more frequent word. Words already in the lexicon and words with no close
entry are kept. The lexicon is built from **text only** (the text source's training split, never the test
sentences), so test words missing from it stay as spelled (their rate is reported as the lexicon's OOV rate).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from speechtrt.asr.normalize import normalize_text
from speechtrt.models.text import BLANK, asr_decode


def greedy_path(ids) -> tuple[list[int], list[int]]:
    """Best path of one utterance with where each token starts: argmax ids [T] -> (token ids, output-frame index of
    each token). The same rule as :func:`greedy_batch` (repeats collapsed, blanks dropped), keeping positions."""
    decoder = IncrementalGreedy()
    decoder.push(ids)
    return list(decoder.tokens), list(decoder.token_frames)


class IncrementalGreedy:
    """Greedy CTC over a stream of argmax ids that arrive chunk by chunk.

    The collapse rule needs the last id of the previous chunk (a token repeated across a chunk boundary is one
    token), so that id is carried; nothing already emitted is ever revised, which makes the streamed transcript a
    prefix of itself at every step and, once the last chunk is pushed, equal to :func:`greedy_path` over the whole
    utterance. ``token_frames[k]`` is the output frame (counted from the stream's start) at which token ``k`` was
    emitted: multiply by the model's output frame shift for seconds.
    """

    __slots__ = ("prev", "frames", "tokens", "token_frames", "chars")

    def __init__(self):
        self.prev = -1  # last argmax id seen (BLANK included), carried across chunks
        self.frames = 0  # output frames consumed so far
        self.tokens: list[int] = []
        self.token_frames: list[int] = []
        self.chars: list[str] = []  # asr_decode of each token, so the text so far costs one join

    def push(self, ids) -> int:
        """Consume one chunk's argmax ids [T'] (any int sequence or array); returns how many tokens it added."""
        prev, start, added = self.prev, self.frames, 0
        for j, tok in enumerate(ids.tolist() if hasattr(ids, "tolist") else ids):
            tok = int(tok)
            if tok != prev and tok != BLANK:
                self.tokens.append(tok)
                self.token_frames.append(start + j)
                self.chars.append(asr_decode((tok,)))
                added += 1
            prev = tok
            self.frames += 1
        self.prev = prev
        return added

    @property
    def text(self) -> str:
        return "".join(self.chars)


def greedy_batch(log_probs: np.ndarray, lengths: np.ndarray, columns: np.ndarray | None = None) -> list[str]:
    """Best-path transcripts of a batch: log_probs [B, T, V], lengths [B] -> B strings (repeats collapsed, blanks
    dropped), vectorised over the batch. ``columns``: the token id of each column when the classifier was trimmed
    (default: column ``j`` is token ``j``)."""
    ids = np.asarray(log_probs).argmax(axis=-1)  # [B, T]
    if columns is not None:
        ids = np.asarray(columns)[ids]
    out = []
    for row, n in zip(ids, np.asarray(lengths)):
        row = row[: int(n)]
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != BLANK
        out.append(asr_decode(row[keep]))
    return out


@dataclass
class Lexicon:
    """Known words with their counts; :meth:`correct` applies the module's rule to a transcript."""

    counts: Counter = field(default_factory=Counter)
    source: str = ""

    def __post_init__(self):
        self._by_length: dict[int, list[str]] = {}
        for w, _ in self.counts.most_common():
            self._by_length.setdefault(len(w), []).append(w)
        self._cache: dict[str, str] = {}

    @classmethod
    def from_texts(cls, texts, source: str = "") -> "Lexicon":
        return cls(Counter(w for t in texts for w in normalize_text(t).split()), source)

    def __contains__(self, word: str) -> bool:
        return word in self.counts

    def __len__(self) -> int:
        return len(self.counts)

    def nearest(self, word: str) -> str:
        if word in self.counts:
            return word
        if word in self._cache:
            return self._cache[word]
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        limit = max(1, len(word) // 3)
        best, best_key = word, None
        for n in range(len(word) - limit, len(word) + limit + 1):
            candidates = self._by_length.get(n)
            if not candidates:
                continue
            for cand, dist, _ in process.extract(word, candidates, scorer=Levenshtein.distance,
                                                 score_cutoff=limit, limit=5):
                key = (dist, -self.counts[cand])
                if best_key is None or key < best_key:
                    best, best_key = cand, key
        self._cache[word] = best
        return best

    def correct(self, text: str) -> str:
        return " ".join(self.nearest(w) for w in normalize_text(text).split())

    def oov_rate(self, texts) -> float:
        words = [w for t in texts for w in normalize_text(t).split()]
        return sum(w not in self.counts for w in words) / len(words) if words else 0.0


def training_lexicon(text_source=None, test_fraction: float = 0.2) -> Lexicon:
    """Lexicon of the text source's training-split sentences (the sentences no test utterance uses)."""
    from speechtrt.asr.data import FORTUNES_DIR, load_sentences, sentence_split

    sentences = [s for s in load_sentences(text_source, min_words=1, max_words=60)
                 if sentence_split(s, test_fraction) == "train"]
    return Lexicon.from_texts(sentences, source=f"{text_source or FORTUNES_DIR} (train split)")
