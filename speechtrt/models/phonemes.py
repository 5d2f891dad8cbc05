"""The phoneme front end of the trained voices: text → espeak-ng phonemes → a small fixed vocabulary of token ids.

Phonemes come from ``espeak-ng -q -x --sep=/`` (Kirshenbaum-style ASCII mnemonics) with the voice the model was
trained on, so the tokens say exactly what espeak-ng would speak. One subprocess call per text; the result is a pure
function of the text and the voice.

Tokens, in order of a text:

* phonemes (``h @ l oU``), each preceded by its stress mark when it has one (``'`` primary, ``,`` secondary);
* espeak-ng's pauses (``_:`` for a quotation mark or ``--``, ``_`` short, ``_!`` and ``_|``), and ``;``, its
  liaison mark;
* ``<w>`` between the words of a clause;
* one clause token per clause espeak-ng makes: ``<.>`` ``<?>`` ``<!>`` ``<,>`` ``<;>`` (``;`` and ``:``) taken from
  the text's punctuation, or ``<|>`` when the text has no mark there (a line break, a missing final stop);
* ``<eos>`` at the end.

espeak-ng starts a new clause (a new output line) at ``. , ; : ? !`` followed by a space or the end of the text. The
text's punctuation runs are matched to espeak-ng's clauses in order; when the counts differ (a construction the rule
does not model), every clause takes ``<|>`` except the last, which keeps the text's final mark. Phonemes outside the
vocabulary (rare foreign or spelled-out symbols) become ``<unk>``.

Text rules: empty or whitespace-only text raises :class:`~speechtrt.errors.InputError`; typographic characters map to
ASCII (dashes, curly quotes, ellipsis); characters outside Latin-1 that do not decompose to it are refused, named.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata

from speechtrt.errors import InputError
from speechtrt.models.text import _TYPOGRAPHIC

PAD, UNK, EOS, WORD = "<pad>", "<unk>", "<eos>", "<w>"
CLAUSE_TOKENS = ("<.>", "<?>", "<!>", "<,>", "<;>", "<|>")
STRESS = ("'", ",")
PAUSES = ("_:", "_!", "_|", "_")
PHONEMES = (
    # consonants
    "p", "b", "t", "d", "k", "g", "f", "v", "T", "D", "s", "z", "S", "Z", "h", "x", "tS", "dZ", "m", "n", "N",
    "l", "r", "w", "j", "?", "t#", "t2", "n-", "r-",
    # vowels and diphthongs
    "I", "I#", "I2", "i", "i:", "E", "a", "a#", "a:", "aa", "A:", "A@", "0", "O", "O:", "O2", "O@", "o", "o@",
    "OI", "U", "U@", "u:", "V", "@", "@2", "@L", "@-", "3", "3:", "e@", "eI", "aI", "aI3", "aI@", "aU", "oU", "i@",
    "i@3", "a#:",
    # liaison
    ";",
)
VOCAB: tuple[str, ...] = (PAD, UNK, EOS, WORD, *CLAUSE_TOKENS, *STRESS, *PAUSES, *PHONEMES)
"""The fixed token table (index = token id). ``<pad>`` is 0, so zero-padded batches need no other value."""

TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)

_PIECE = re.compile(r"(_[:!|]?)|([',])|([^_',]+)")
_PUNCT_RUN = re.compile(r"[.,;:?!]+(?=[\s\"')\]]*(?:\s|$))")


def normalize_voice_text(text: str) -> str:
    """Typographic characters → ASCII, decomposable accents dropped, whitespace collapsed; case kept (espeak-ng
    reads case: ``Polish`` vs ``polish``). Raises InputError for empty text and non-Latin-1 characters, named."""
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    out = []
    for ch in text:
        if ch in _TYPOGRAPHIC:
            out.append(_TYPOGRAPHIC[ch])
        elif ord(ch) >= 256:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            out.append(base if base and all(ord(c) < 256 for c in base) else ch)
        else:
            out.append(ch)
    norm = " ".join("".join(out).split())
    if not norm:
        raise InputError("text is empty (or only whitespace): give at least one word to synthesize")
    bad = sorted({ch for ch in norm if ord(ch) >= 256 or not ch.isprintable()})
    if bad:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in bad[:8])
        raise InputError(f"text has {len(bad)} character(s) the voice cannot read (outside Latin-1 or not "
                         f"printable): {shown}; transliterate or remove them")
    return norm


def espeak_phonemes(text: str, voice: str = "en-us") -> list[str]:
    """espeak-ng's phoneme lines (one per clause) for already-normalised ``text``; one subprocess call."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise InputError("espeak-ng is not installed: `apt-get install espeak-ng` (Debian/Ubuntu)")
    proc = subprocess.run([exe, "-q", "-x", "--sep=/", "-v", voice, "--", text], capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise InputError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}")
    return [line.strip() for line in proc.stdout.decode("utf-8", errors="replace").splitlines() if line.strip()]


def clause_marks(text: str) -> list[str]:
    """The clause token of each punctuation run that ends a clause for espeak-ng, in order."""
    marks = []
    for run in _PUNCT_RUN.findall(text):
        if "?" in run:
            marks.append("<?>")
        elif "!" in run:
            marks.append("<!>")
        elif "." in run:
            marks.append("<.>")
        elif ";" in run or ":" in run:
            marks.append("<;>")
        else:
            marks.append("<,>")
    return marks


def line_symbols(line: str) -> list[str]:
    """Symbols of one espeak-ng ``-x --sep=/`` clause line: ``h/@/l/'oU D/'e@`` -> h @ l ' oU <w> D ' e@."""
    out: list[str] = []
    for w, word in enumerate(line.split()):
        if w:
            out.append(WORD)
        for piece in word.split("/"):
            for pause, stress, phone in _PIECE.findall(piece):
                out.append(pause or stress or phone)
    return out


def phoneme_symbols(text: str, voice: str = "en-us") -> list[str]:
    """The token strings of ``text`` (see the module docstring), ending in ``<eos>``."""
    norm = normalize_voice_text(text)
    lines = espeak_phonemes(norm, voice)
    if not lines:
        raise InputError(f"text {norm[:40]!r} has nothing espeak-ng speaks (only punctuation or symbols)")
    marks = clause_marks(norm)
    if len(marks) == len(lines):
        ends = marks
    elif len(marks) == len(lines) - 1:  # no mark after the last clause
        ends = [*marks, "<|>"]
    else:
        ends = ["<|>"] * (len(lines) - 1) + [marks[-1] if marks else "<|>"]
    out: list[str] = []
    for line, end in zip(lines, ends):
        out.extend(line_symbols(line))
        out.append(end)
    out.append(EOS)
    return out


def symbols_to_ids(symbols: list[str]) -> list[int]:
    return [TOKEN_ID.get(s, TOKEN_ID[UNK]) for s in symbols]


def phoneme_ids(text: str, voice: str = "en-us") -> list[int]:
    """Token ids of ``text`` for a voice's encoder (``<pad>`` = 0 never occurs). Raises InputError for empty text
    or characters the voice cannot read."""
    return symbols_to_ids(phoneme_symbols(text, voice))
