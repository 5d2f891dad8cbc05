"""Error counts from jiwer's alignments (one over words, one over characters per utterance), and every measure
built from those counts.

WER and CER are **corpus** rates: total errors over total reference words (characters), never a mean of
per-utterance rates (which would weight a two-word sentence like a twenty-word one). Both sides go through
:func:`~speechtrt.asr.normalize.normalize_text` first. Characters are counted over the normalised text including
the single spaces between words.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import jiwer

from speechtrt.asr.normalize import normalize_text


@dataclass(frozen=True)
class UtteranceErrors:
    """Word and character edit counts of one normalised (reference, hypothesis) pair.

    ``ref_ops`` holds, per reference word, ``"C"`` (correct), ``"S"`` or ``"D"``; ``inserted`` the inserted
    hypothesis words. They feed the breakdowns by word type.
    """

    ref_words: int
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    ref_chars: int
    char_errors: int
    ref_tokens: tuple[str, ...] = ()
    ref_ops: tuple[str, ...] = ()
    inserted: tuple[str, ...] = ()

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.word_errors / self.ref_words if self.ref_words else float(self.word_errors > 0)


def _word_alignment(ref: list[str], hyp: list[str]):
    """Minimum-edit alignment ops over word lists: [(op, ref_index|None, hyp_index|None)]."""
    if not ref:
        return [("I", None, j) for j in range(len(hyp))]
    out = jiwer.process_words(" ".join(ref), " ".join(hyp) if hyp else "")
    ops = []
    for chunk in out.alignments[0]:
        kind = chunk.type
        if kind == "equal":
            ops += [("C", chunk.ref_start_idx + k, chunk.hyp_start_idx + k)
                    for k in range(chunk.ref_end_idx - chunk.ref_start_idx)]
        elif kind == "substitute":
            ops += [("S", chunk.ref_start_idx + k, chunk.hyp_start_idx + k)
                    for k in range(chunk.ref_end_idx - chunk.ref_start_idx)]
        elif kind == "delete":
            ops += [("D", chunk.ref_start_idx + k, None) for k in range(chunk.ref_end_idx - chunk.ref_start_idx)]
        elif kind == "insert":
            ops += [("I", None, chunk.hyp_start_idx + k) for k in range(chunk.hyp_end_idx - chunk.hyp_start_idx)]
    return ops


def char_edit_distance(ref: str, hyp: str) -> int:
    """Character edits (substitutions + deletions + insertions, unit costs) from jiwer's character alignment;
    spaces between words count as characters."""
    if not ref:
        return len(hyp)
    out = jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions


def score_pair(reference: str, hypothesis: str, normalized: bool = False) -> UtteranceErrors:
    """Counts for one utterance. ``normalized=True`` skips the normaliser (both sides already normalised)."""
    ref = reference if normalized else normalize_text(reference)
    hyp = hypothesis if normalized else normalize_text(hypothesis)
    ref_w, hyp_w = ref.split(), hyp.split()
    ops = _word_alignment(ref_w, hyp_w)
    n = Counter(op for op, _, _ in ops)
    ref_ops = [""] * len(ref_w)
    for op, i, _ in ops:
        if i is not None:
            ref_ops[i] = op
    return UtteranceErrors(
        ref_words=len(ref_w), hits=n["C"], substitutions=n["S"], deletions=n["D"], insertions=n["I"],
        ref_chars=len(ref), char_errors=char_edit_distance(ref, hyp), ref_tokens=tuple(ref_w),
        ref_ops=tuple(ref_ops), inserted=tuple(hyp_w[j] for op, _, j in ops if op == "I"),
    )


@dataclass(frozen=True)
class CorpusScore:
    """Corpus totals over a set of utterances."""

    utterances: int
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    ref_chars: int
    char_errors: int

    @property
    def wer(self) -> float:
        return (self.substitutions + self.deletions + self.insertions) / self.ref_words if self.ref_words else 0.0

    @property
    def cer(self) -> float:
        return self.char_errors / self.ref_chars if self.ref_chars else 0.0

    def to_json(self) -> dict:
        return {"utterances": self.utterances, "ref_words": self.ref_words, "wer": self.wer, "cer": self.cer,
                "substitutions": self.substitutions, "deletions": self.deletions, "insertions": self.insertions,
                "ref_chars": self.ref_chars, "char_errors": self.char_errors}


def corpus_score(errors: list[UtteranceErrors]) -> CorpusScore:
    return CorpusScore(
        utterances=len(errors), ref_words=sum(e.ref_words for e in errors),
        substitutions=sum(e.substitutions for e in errors), deletions=sum(e.deletions for e in errors),
        insertions=sum(e.insertions for e in errors), ref_chars=sum(e.ref_chars for e in errors),
        char_errors=sum(e.char_errors for e in errors),
    )


# ---------------------------------------------------------------- breakdowns by word type

FUNCTION_WORDS = frozenset("""
a an the and or but nor so yet for of in on at by to from with without about above below over under into onto
out up down off through between among against during before after since until while as than then if because
though although whether i me my mine myself you your yours yourself he him his himself she her hers herself it its
itself we us our ours ourselves they them their theirs themselves this that these those who whom whose which what
where when why how is am are was were be been being have has had having do does did doing will would shall
should can could may might must not no yes all any some each every both either neither one other another such
there here very too also just only own same more most less least much many few again once s t don't isn't it's
i'm you're he's she's we're they're i've you've we've they've i'll you'll he'll she'll we'll they'll i'd you'd
he'd she'd we'd they'd can't won't didn't doesn't wasn't weren't haven't hasn't hadn't wouldn't couldn't
shouldn't let's that's there's what's who's
""".split())
"""Closed-class English words (articles, pronouns, prepositions, conjunctions, auxiliaries, common contractions)."""

LENGTH_BINS = ((1, 3), (4, 6), (7, 9), (10, 99))
FREQUENCY_BINS = (("top-100", 0, 100), ("100-1k", 100, 1000), ("1k-5k", 1000, 5000), ("rare", 5000, None))


def word_class(word: str) -> str:
    return "function" if word in FUNCTION_WORDS else "content"


def length_bin(word: str) -> str:
    n = len(word.replace("'", ""))
    for lo, hi in LENGTH_BINS:
        if lo <= n <= hi:
            return f"{lo}-{hi}" if hi < 99 else f"{lo}+"
    return "0"


def frequency_bin(word: str, ranks: dict[str, int]) -> str:
    """Bin of ``word``'s rank in a reference word-frequency table (``rare`` includes words absent from it)."""
    r = ranks.get(word)
    for name, lo, hi in FREQUENCY_BINS:
        if r is not None and lo <= r and (hi is None or r < hi):
            return name
    return "rare"


def breakdown(errors: list[UtteranceErrors], classify) -> dict[str, dict]:
    """Per class of reference word: count, substitutions, deletions, and the word error rate ``(S + D) / count``.

    ``classify(word) -> str``. Insertions have no reference word; they are reported per class of the inserted
    word under ``insertions`` (not part of the rate).
    """
    table: dict[str, Counter] = {}
    for e in errors:
        for word, op in zip(e.ref_tokens, e.ref_ops):
            c = table.setdefault(classify(word), Counter())
            c["words"] += 1
            c[op] += 1
        for word in e.inserted:
            table.setdefault(classify(word), Counter())["insertions"] += 1
    out = {}
    for name in sorted(table):
        c = table[name]
        out[name] = {"words": c["words"], "substitutions": c["S"], "deletions": c["D"],
                     "insertions": c["insertions"],
                     "error_rate": (c["S"] + c["D"]) / c["words"] if c["words"] else None}
    return out


def word_ranks(texts) -> dict[str, int]:
    """Frequency rank (0 = most frequent) of each normalised word over ``texts``."""
    counts = Counter(w for t in texts for w in normalize_text(t).split())
    return {w: i for i, (w, _) in enumerate(counts.most_common())}


# ---------------------------------------------------------------- phoneme classes (espeak-ng)

_PHONEME_CLASSES = (
    ("plosive", "pbtdkgʔ"),
    ("affricate", "ʧʤ"),
    ("fricative", "fvθðszʃʒhx"),
    ("nasal", "mnŋ"),
    ("liquid", "lɹrɾɫ"),
    ("glide", "wj"),
)


def phoneme_class(ipa: str) -> str:
    """Class of the first phoneme of an IPA string (stress and length marks skipped): a consonant manner, or vowel."""
    for ch in ipa:
        if ch in "ˈˌː'ˑ ‍-":
            continue
        if ch in "tʃ" and ipa.startswith(("tʃ", "ˈtʃ", "ˌtʃ")):
            return "affricate"
        if ch == "d" and ("dʒ" in ipa[:4]):
            return "affricate"
        for name, chars in _PHONEME_CLASSES:
            if ch in chars:
                return name
        return "vowel"
    return "none"


def espeak_ipa(words, voice: str = "en-us") -> dict[str, str]:
    """IPA transcription of each word by espeak-ng (one call, one word per line); ``{}`` without espeak-ng."""
    import shutil
    import subprocess

    words = sorted(set(words))
    exe = shutil.which("espeak-ng")
    if not exe or not words:
        return {}
    proc = subprocess.run([exe, "-q", "--ipa", "-v", voice], input="\n".join(w + "." for w in words),
                          capture_output=True, text=True, timeout=120)
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or len(lines) != len(words):
        return {}
    return dict(zip(words, lines))
