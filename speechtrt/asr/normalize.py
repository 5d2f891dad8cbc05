"""The one text normaliser applied to references and hypotheses alike, before WER/CER and as CTC targets.

Rule (in order): typographic characters to ASCII and accents stripped (the TTS front end's
:func:`~speechtrt.models.text.normalize_tts_text`, which also lower-cases); hyphens, slashes and underscores become
spaces; every character other than ``a-z``, ``'`` and space is dropped; apostrophes that do not sit between two
letters are dropped (quotes, not contractions); whitespace collapses to single spaces.

So ``"Don't -- PANIC!"`` becomes ``"don't panic"``. Digits are dropped, not spelled out: the synthesized sets keep
only sentences without digits, and an external corpus should spell numbers in its references.
"""

from __future__ import annotations

import re

from speechtrt.models.text import normalize_tts_text

_SPLITTERS = re.compile(r"[-/_]+")
_DROP = re.compile(r"[^a-z' ]+")
_LOOSE_APOSTROPHE = re.compile(r"(?<![a-z])'|'(?![a-z])")

ALPHABET = "abcdefghijklmnopqrstuvwxyz' "
"""Every character the normaliser can emit; the trained models output only these (plus the CTC blank)."""


def normalize_text(text: str) -> str:
    """Normalised form of ``text`` (see the module docstring); empty when nothing speakable is left."""
    s = normalize_tts_text(text or "")
    s = _SPLITTERS.sub(" ", s)
    s = _DROP.sub("", s)
    s = _LOOSE_APOSTROPHE.sub("", s)
    return " ".join(s.split())
