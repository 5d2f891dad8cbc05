"""The voices' phoneme front end: espeak-ng phonemes, clause and word tokens, the text rules."""

import pytest

from speechtrt.errors import InputError
from speechtrt.models.phonemes import (EOS, PAD, TOKEN_ID, VOCAB, VOCAB_SIZE, WORD, clause_marks, line_symbols,
                                       normalize_voice_text, phoneme_ids, phoneme_symbols)
from speechtrt.models.audio import espeak_available

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")


def test_vocabulary_is_fixed_and_unique():
    assert len(set(VOCAB)) == VOCAB_SIZE == len(VOCAB)
    assert TOKEN_ID[PAD] == 0


@pytest.mark.parametrize("line, symbols", [
    ("h/@/l/'oU D/'e@", ["h", "@", "l", "'", "oU", WORD, "D", "'", "e@"]),
    ("_:/_:h/'aI", ["_:", "_:", "h", "'", "aI"]),  # quotation pauses glued to the next phoneme
    ("w/,V/n", ["w", ",", "V", "n"]),
    ("D/I2/; I#/l/'aI/dZ/@", ["D", "I2", ";", WORD, "I#", "l", "'", "aI", "dZ", "@"]),
])
def test_line_symbols(line, symbols):
    assert line_symbols(line) == symbols


@pytest.mark.parametrize("text, marks", [
    ("Hello there, my friend. How are you?", ["<,>", "<.>", "<?>"]),
    ('"Hi," he said! Well: fine', ["<,>", "<!>", "<;>"]),
    ("Wait... what?!", ["<.>", "<?>"]),
    ("e.g.mid-word and 3.5 stay", []),  # punctuation not followed by a space is no clause end
])
def test_clause_marks(text, marks):
    assert clause_marks(text) == marks


@pytest.mark.parametrize("text, norm", [
    ("  Hello\u00a0 there \u2014 friend\u2026 ", "Hello there - friend..."),
    ("\u201cQuoted\u201d caf\u00e9", '"Quoted" caf\u00e9'),
    ("Polish polish", "Polish polish"),  # case is kept: espeak-ng reads it
])
def test_normalisation(text, norm):
    assert normalize_voice_text(text) == norm


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_refused(text):
    with pytest.raises(InputError, match="empty"):
        phoneme_ids(text)


def test_unreadable_characters_are_named():
    with pytest.raises(InputError, match=r"U\+4E2D"):
        phoneme_ids("hello \u4e2d")


@needs_espeak
def test_sentence_tokens():
    symbols = phoneme_symbols("Hello there, my friend.")
    assert symbols == ["h", "@", "l", "'", "oU", WORD, "D", "'", "e@", "<,>", "m", "aI", WORD, "f", "r", "'", "E",
                       "n", "d", "<.>", EOS]
    ids = phoneme_ids("Hello there, my friend.")
    assert ids == [TOKEN_ID[s] for s in symbols] and 0 not in ids


@needs_espeak
def test_deterministic_and_final_clause_without_mark():
    a, b = phoneme_ids("Is it raining"), phoneme_ids("Is it raining")
    assert a == b
    assert phoneme_symbols("Is it raining")[-2:] == ["<|>", EOS]
    assert phoneme_symbols("Is it raining?")[-2:] == ["<?>", EOS]


@needs_espeak
def test_only_punctuation_has_nothing_to_speak():
    with pytest.raises(InputError, match="nothing espeak-ng speaks"):
        phoneme_ids("...")
