"""Timestamps from CTC best paths: which output step emitted each character, grouped into words and segments.

The ASR models emit one output every 4 feature frames (their front end's stride) of 10 ms, so output ``k`` covers
``[k * 40 ms, (k + 1) * 40 ms)``. A word starts at its first character's output and ends after its last one; a
segment ends where the pause between two words exceeds ``pause_s`` (or at the end). Offline transcripts and
streams use the same functions, so their timings agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechtrt.models.audio import FEATURES
from speechtrt.models.text import BLANK, asr_decode, asr_encode

STRIDE_FRAMES = 4
OUTPUT_S = STRIDE_FRAMES * FEATURES.hop / FEATURES.sample_rate  # 0.04 s per model output


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float

    def to_json(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}


def emissions(ids, prev: int = -1, offset: int = 0) -> tuple[list[tuple[int, int]], int]:
    """CTC best-path emissions of argmax ``ids`` as ``(token, output index)``; ``prev``/``offset`` carry a stream's
    last id and output count across chunks. Returns the emissions and the new ``prev``."""
    out = []
    for k, tok in enumerate(np.asarray(ids).tolist()):
        if tok != prev and tok != BLANK:
            out.append((tok, offset + k))
        prev = tok
    return out, prev


def words_of(emitted: list[tuple[int, int]]) -> list[Word]:
    """Words (split at spaces) with start/end seconds from their characters' outputs."""
    words, chars, first, last = [], [], None, None
    for tok, k in [*emitted, (ord(" "), None)]:
        ch = asr_decode((tok,))
        if ch == " ":
            if chars:
                words.append(Word("".join(chars), first * OUTPUT_S, (last + 1) * OUTPUT_S))
            chars, first = [], None
            continue
        chars.append(ch)
        first = k if first is None else first
        last = k
    return words


def segments_of(words: list[Word], pause_s: float = 0.6) -> list[dict]:
    """OpenAI ``verbose_json`` segments: runs of words separated by pauses longer than ``pause_s`` (``tokens`` are
    the ASR vocabulary ids of the segment's characters; scores the models do not produce are left out)."""
    groups: list[list[Word]] = []
    for w in words:
        if groups and w.start - groups[-1][-1].end <= pause_s:
            groups[-1].append(w)
        else:
            groups.append([w])
    out = []
    for i, g in enumerate(groups):
        text = " ".join(w.word for w in g)
        out.append({"id": i, "seek": 0, "start": round(g[0].start, 3), "end": round(g[-1].end, 3), "text": text,
                    "tokens": asr_encode(text)})
    return out
