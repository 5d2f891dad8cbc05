"""Word-level decoding for CTC: an n-gram language model and a CTC prefix beam search that consults it.

**Language model.** :class:`NGramLM` is an interpolated Kneser–Ney model (Chen & Goodman) of order ``n`` over
normalised words (:func:`~speechtrt.asr.normalize.normalize_text`), trained on text only. The highest order uses
raw counts, lower orders use continuation counts (the number of distinct words seen before an n-gram), except
n-grams that start at the sentence start ``<s>``, which keep raw counts. Each order has one absolute discount
``D = n1 / (n1 + 2·n2)`` from its count-of-counts. The unigram level is interpolated with a uniform distribution
over the vocabulary plus one unknown word, so an out-of-vocabulary word has a small, finite probability.

**Search.** :func:`ctc_beam_search` is the CTC prefix beam search (Hannun et al., 2014) over the normaliser's
alphabet. A hypothesis scores ``log P_ctc(prefix) + α · log P_lm(words) + β · |words|``: the language model is
applied each time a word is completed (a space is emitted) and, at the end, to the last word and the sentence end.
``α`` weighs the language model against the acoustics and ``β`` offsets its bias towards fewer words. Both are
chosen on a development set whose sentences the language model has not seen (:func:`tune_weights`), never on the
test set.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from speechtrt.asr.normalize import ALPHABET, normalize_text
from speechtrt.errors import InputError
from speechtrt.models.text import BLANK, asr_encode

BOS, EOS = "<s>", "</s>"


class NGramLM:
    """Interpolated Kneser–Ney word n-gram model; :meth:`logp` gives natural-log probabilities."""

    def __init__(self, sentences: Iterable[str], order: int = 3, source: str = ""):
        if order < 1:
            raise InputError(f"language model order must be at least 1, not {order}")
        self.order = order
        self.source = source
        raw: list[Counter] = [Counter() for _ in range(order + 1)]  # raw[k][ngram of length k]
        n_sentences = 0
        self.training_sentences: set[str] = set()
        for text in sentences:
            norm = normalize_text(text)
            words = norm.split()
            if not words:
                continue
            n_sentences += 1
            self.training_sentences.add(norm)
            seq = (BOS, *words, EOS)
            for k in range(1, order + 1):
                for i in range(len(seq) - k + 1):
                    gram = seq[i:i + k]
                    if k == 1 and gram[0] == BOS:
                        continue
                    raw[k][gram] += 1
        if not n_sentences:
            raise InputError("the language model's text has no usable sentence")
        self.sentences = n_sentences
        # counts used at each order: raw at the top and for n-grams starting at <s>, continuation below
        self._counts: list[dict[tuple, int]] = [dict() for _ in range(order + 1)]
        self._counts[order] = dict(raw[order])
        for k in range(1, order):
            cont: Counter = Counter()
            for gram in raw[k + 1]:
                cont[gram[1:]] += 1
            for gram, c in raw[k].items():
                self._counts[k][gram] = c if gram[0] == BOS else cont.get(gram, 0)
            self._counts[k] = {g: c for g, c in self._counts[k].items() if c > 0}
        self.vocab = {g[0] for g in self._counts[1] if g[0] != EOS}
        self._discount = [0.0] * (order + 1)
        self._ctx_total: list[dict[tuple, int]] = [dict() for _ in range(order + 1)]
        self._ctx_types: list[dict[tuple, int]] = [dict() for _ in range(order + 1)]
        for k in range(1, order + 1):
            coc = Counter(self._counts[k].values())
            n1, n2 = coc.get(1, 0), coc.get(2, 0)
            self._discount[k] = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
            total, types = defaultdict(int), defaultdict(int)
            for gram, c in self._counts[k].items():
                total[gram[:-1]] += c
                types[gram[:-1]] += 1
            self._ctx_total[k], self._ctx_types[k] = dict(total), dict(types)
        self._uniform = 1.0 / (len(self.vocab) + 2)  # vocabulary + </s> + one unknown word
        self._cache: dict[tuple, float] = {}
        self._prefixes: set[str] | None = None

    def is_prefix(self, partial: str) -> bool:
        """Whether some vocabulary word starts with ``partial`` (the search charges a word that cannot become
        a known one as unknown at once, instead of when it ends)."""
        if self._prefixes is None:
            self._prefixes = {w[:i] for w in self.vocab for i in range(1, len(w) + 1)}
        return partial in self._prefixes

    def __contains__(self, word: str) -> bool:
        return word in self.vocab

    def _prob(self, context: tuple, word: str) -> float:
        k = len(context) + 1
        if k == 1:
            lower = self._uniform
        else:
            lower = self._prob(context[1:], word)
        total = self._ctx_total[k].get(context)
        if not total:
            return lower
        d = self._discount[k]
        c = self._counts[k].get((*context, word), 0)
        return max(c - d, 0.0) / total + d * self._ctx_types[k][context] / total * lower

    def logp(self, context: Sequence[str], word: str) -> float:
        """``log P(word | context)`` (natural log); ``context`` holds the preceding words, ``<s>`` first at a
        sentence start; only its last ``order − 1`` words are used."""
        ctx = tuple(context)[-(self.order - 1):] if self.order > 1 else ()
        key = (ctx, word)
        value = self._cache.get(key)
        if value is None:
            value = math.log(self._prob(ctx, word))
            self._cache[key] = value
        return value

    def sentence_logp(self, text: str) -> float:
        """Log-probability of a whole normalised sentence, end marker included."""
        ctx: tuple = (BOS,)
        total = 0.0
        for w in (*normalize_text(text).split(), EOS):
            total += self.logp(ctx, w)
            ctx = (*ctx, w)[-(self.order - 1):] if self.order > 1 else ()
        return total

    def perplexity(self, texts: Iterable[str]) -> float:
        """Per-word perplexity (end markers counted as words) of ``texts``."""
        logp, n = 0.0, 0
        for t in texts:
            words = normalize_text(t).split()
            if words:
                logp += self.sentence_logp(t)
                n += len(words) + 1
        return math.exp(-logp / n) if n else float("nan")


def training_lm(text_source=None, test_fraction: float = 0.2, order: int = 3, exclude: Iterable[str] = ()
                ) -> NGramLM:
    """The n-gram model of the text source's training-split sentences (never a test sentence), without the
    normalised sentences in ``exclude`` (a development set's, when tuning the decoder's weights)."""
    from speechtrt.asr.data import FORTUNES_DIR, load_sentences, sentence_split

    skip = {normalize_text(s) for s in exclude}
    sentences = [s for s in load_sentences(text_source, min_words=1, max_words=60)
                 if sentence_split(s, test_fraction) == "train" and normalize_text(s) not in skip]
    return NGramLM(sentences, order=order, source=f"{text_source or FORTUNES_DIR} (train split)")


# ---------------------------------------------------------------- search

_CHARS = ALPHABET
SEARCH_COLUMNS = np.array([BLANK, *asr_encode(ALPHABET)])
"""The log-probability columns the search reads, in order: the blank, then the normaliser's alphabet."""
_NEG = -1e30


def _logadd(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b <= _NEG:
        return a
    return a + math.log1p(math.exp(b - a))


@dataclass(frozen=True)
class BeamConfig:
    """Search settings. ``alpha``/``beta``: language-model weight and word bonus; ``beam``: hypotheses kept per
    frame; ``prune``: characters whose log-probability at a frame is below this are not tried there."""

    alpha: float = 0.8
    beta: float = 1.5
    beam: int = 16
    prune: float = -8.0


UNKNOWN_WORD = "<unk>"


class _Hyp:
    # pb / pnb: log P_ctc of the prefix ending in blank / not; lm: log P_lm of its completed words; pending: the
    # unknown-word charge of a partial word that is no known word's prefix (0 otherwise); ctx: LM context
    __slots__ = ("pb", "pnb", "lm", "pending", "ctx", "words")

    def __init__(self, lm_score: float, ctx: tuple, words: int, pending: float = 0.0):
        self.pb = _NEG
        self.pnb = _NEG
        self.lm = lm_score
        self.pending = pending
        self.ctx = ctx
        self.words = words


def _child(parent: _Hyp, text: str, lm: NGramLM | None, order: int) -> _Hyp:
    """The hypothesis for ``text``, ``parent``'s text plus one character: a space completes the last word (the
    language model scores it); a letter that leaves the partial word no known word's prefix charges the
    unknown-word probability once, so such prefixes do not outrank real words until they end."""
    if lm is None:
        return _Hyp(0.0, (), 0)
    if text.endswith(" "):
        word = text[:-1].rsplit(" ", 1)[-1]
        ctx = (*parent.ctx, word)[-(order - 1):] if order > 1 else ()
        return _Hyp(parent.lm + lm.logp(parent.ctx, word), ctx, parent.words + 1)
    pending = parent.pending
    if not pending and not lm.is_prefix(text.rsplit(" ", 1)[-1]):
        pending = lm.logp(parent.ctx, UNKNOWN_WORD)
    return _Hyp(parent.lm, parent.ctx, parent.words, pending)


def ctc_beam_search(log_probs: np.ndarray, lm: NGramLM | None, cfg: BeamConfig = BeamConfig()) -> str:
    """Best transcript of one utterance. ``log_probs``: [T, V] CTC log-probabilities over the seed's character
    table (only the blank and the normaliser's alphabet are searched), or [T, 1 + alphabet] already reduced to
    :data:`SEARCH_COLUMNS`. Without ``lm`` this is a plain prefix beam search."""
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim == 2 and lp.shape[1] > len(SEARCH_COLUMNS):
        lp = lp[:, SEARCH_COLUMNS]  # [T, 1 + len(ALPHABET)]
    if lp.ndim != 2 or lp.shape[1] != len(SEARCH_COLUMNS):
        raise InputError(f"log-probabilities of shape {tuple(np.shape(log_probs))} do not fit the search's "
                         f"{len(SEARCH_COLUMNS)} columns (blank + alphabet)")
    order = lm.order if lm is not None else 1
    alpha = cfg.alpha if lm is not None else 0.0
    beta = cfg.beta if lm is not None else 0.0
    start = _Hyp(0.0, (BOS,), 0)
    start.pb = 0.0
    beams: dict[str, _Hyp] = {"": start}

    def score(h: _Hyp) -> float:
        return _logadd(h.pb, h.pnb) + alpha * (h.lm + h.pending) + beta * h.words

    for frame in lp:
        nxt: dict[str, _Hyp] = {}
        candidates = np.flatnonzero(frame[1:] > cfg.prune) + 1
        blank = frame[0]
        for text, h in beams.items():
            total = _logadd(h.pb, h.pnb)
            same = nxt.get(text)
            if same is None:
                same = nxt[text] = _Hyp(h.lm, h.ctx, h.words, h.pending)
            same.pb = _logadd(same.pb, total + blank)
            last = text[-1] if text else ""
            for i in candidates:
                ch = _CHARS[i - 1]
                p = frame[i]
                if ch == last:
                    same.pnb = _logadd(same.pnb, h.pnb + p)  # a repeat without a blank collapses
                    if ch == " ":
                        same.pnb = _logadd(same.pnb, h.pb + p)  # "space blank space" is still one space
                        continue
                    via = h.pb + p  # the same letter again after a blank
                elif ch == " " and not text:
                    continue  # no leading space
                else:
                    via = total + p
                new_text = text + ch
                new = nxt.get(new_text)
                if new is None:
                    new = nxt[new_text] = _child(h, new_text, lm, order)
                new.pnb = _logadd(new.pnb, via)
        beams = dict(sorted(nxt.items(), key=lambda kv: score(kv[1]), reverse=True)[: cfg.beam])

    best_text, best = "", -math.inf
    for text, h in beams.items():
        s = _logadd(h.pb, h.pnb)
        lm_total, words = h.lm, h.words
        if lm is not None:
            ctx = h.ctx
            tail = text.rsplit(" ", 1)[-1] if text and not text.endswith(" ") else ""
            if tail:
                lm_total += lm.logp(ctx, tail)
                ctx = (*ctx, tail)[-(order - 1):] if order > 1 else ()
                words += 1
            lm_total += lm.logp(ctx, EOS)
        s += alpha * lm_total + beta * words
        if s > best:
            best_text, best = text, s
    return " ".join(best_text.split())


def tune_weights(log_probs: Sequence[np.ndarray], references: Sequence[str], lm: NGramLM,
                 alphas: Sequence[float] = (0.3, 0.5, 0.8, 1.0, 1.3), betas: Sequence[float] = (0.0, 1.0, 2.0, 3.0),
                 beam: int = 8, log=None) -> dict:
    """Grid search of ``(alpha, beta)`` by corpus WER on a development set (per-utterance log-probs [T, V] and
    references). Returns ``{"alpha", "beta", "wer", "grid": [...]}``; ties go to the smaller ``alpha``."""
    from speechtrt.asr.metrics import corpus_score, score_pair

    if not log_probs:
        raise InputError("tuning the decoder needs at least one development utterance")
    grid = []
    for a in alphas:
        for b in betas:
            cfg = BeamConfig(alpha=a, beta=b, beam=beam)
            hyps = [ctc_beam_search(x, lm, cfg) for x in log_probs]
            wer = corpus_score([score_pair(r, h) for r, h in zip(references, hyps)]).wer
            grid.append({"alpha": a, "beta": b, "wer": wer})
            if log:
                log(f"  alpha {a:.2f} beta {b:.2f}: WER {wer:.4f}")
    best = min(grid, key=lambda g: (g["wer"], g["alpha"], g["beta"]))
    return {**best, "grid": grid}
