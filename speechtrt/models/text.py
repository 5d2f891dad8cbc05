"""Text front ends: the TTS character tokenizer and the ASR character vocabulary (both the seed's).

TTS: the seed maps ``ord(c) % 256`` over ``text.lower()``, which silently folds any non-Latin-1 character onto an
unrelated byte (``'—'`` becomes token 20). speechtrt keeps the seed's 256-entry table but first maps common
typographic characters to ASCII (dashes, curly quotes, ellipsis, non-breaking space) and strips accents that
Unicode can decompose; whatever still lies outside Latin-1 is refused with the characters named.

ASR: the seed's table: printable ASCII ``' '..'~'`` keeps its code point as index, 0 is the CTC blank and 1 stands
for an unknown character.
"""

from __future__ import annotations

import unicodedata

from speechtrt.errors import InputError

_TYPOGRAPHIC = {
    "\u2014": " - ",  # em dash
    "\u2013": " - ",  # en dash
    "\u2012": "-",
    "\u2010": "-",
    "\u2011": "-",
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
}


def normalize_tts_text(text: str) -> str:
    """Lower-case, map typographic characters to ASCII, drop decomposable accents, collapse whitespace."""
    out = []
    for ch in text:
        if ch in _TYPOGRAPHIC:
            out.append(_TYPOGRAPHIC[ch])
            continue
        if ord(ch) >= 256:
            # 'ő' -> 'o' + combining mark; keep the base letter when it is Latin-1
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            out.append(base if base and all(ord(c) < 256 for c in base) else ch)
            continue
        out.append(ch)
    return " ".join("".join(out).lower().split())


def tts_tokens(text: str, vocab_size: int = 256) -> list[int]:
    """Token ids for the TTS encoder: the seed's byte table after :func:`normalize_tts_text`.

    Raises :class:`InputError` for empty text and for characters outside the vocabulary, naming them.
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    norm = normalize_tts_text(text)
    if not norm:
        raise InputError("text is empty (or only whitespace): give at least one character to synthesize")
    bad = sorted({ch for ch in norm if ord(ch) >= vocab_size or not ch.isprintable()})
    if bad:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in bad[:8])
        raise InputError(
            f"text has {len(bad)} character(s) outside the TTS vocabulary (Latin-1, printable): {shown}; "
            "transliterate or remove them"
        )
    return [ord(ch) for ch in norm]


class ByteTokenizer:
    """The seed TTS model's text front end as an object: :func:`normalize_tts_text`, then the byte table.

    A TTS model's tokenizer (``model.tokenizer``; this one when a model has none) is what the TTS service calls once
    per text part, at the edge: ``normalize(text)`` for splitting and the frame rule, ``tokens(part)`` for the
    encoder. A trained voice brings its own (phonemes).
    """

    def __init__(self, vocab_size: int = 256):
        self.vocab_size = vocab_size

    def normalize(self, text: str) -> str:
        return normalize_tts_text(text)

    def tokens(self, text: str) -> list[int]:
        return tts_tokens(text, self.vocab_size)


def tokenizer_of(model) -> "ByteTokenizer":
    """The model's text front end: ``model.tokenizer`` when it has one, else the seed's byte table."""
    return getattr(model, "tokenizer", None) or ByteTokenizer(model.config.vocab_size)


# ASR: the seed's ``ASREvaluator`` table.
BLANK = 0
UNKNOWN = 1
_ASR_CHARS = {chr(i): i for i in range(32, 127)}
_ASR_INDEX = {i: c for c, i in _ASR_CHARS.items()}


def asr_encode(text: str) -> list[int]:
    """Target indices for CTC training: lower-cased printable ASCII keeps its code point, others map to UNKNOWN."""
    return [_ASR_CHARS.get(ch, UNKNOWN) for ch in text.lower()]


def asr_decode(indices) -> str:
    """Characters for non-blank indices (UNKNOWN and out-of-table indices become '?')."""
    return "".join(_ASR_INDEX.get(int(i), "?") for i in indices if int(i) != BLANK)


def ctc_greedy(ids) -> list[int]:
    """Collapse repeats, then drop blanks: the CTC best-path rule over one utterance's argmax ids."""
    out: list[int] = []
    prev = -1
    for i in ids:
        i = int(i)
        if i != prev and i != BLANK:
            out.append(i)
        prev = i
    return out
