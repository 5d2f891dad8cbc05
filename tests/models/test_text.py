import pytest

from speechtrt.errors import InputError
from speechtrt.models.text import asr_decode, asr_encode, ctc_greedy, normalize_tts_text, tts_tokens


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello world!", [ord(c) for c in "hello world!"]),
        ("  Two   spaces\tand tab ", [ord(c) for c in "two spaces and tab"]),
        ("Café", [ord(c) for c in "café"]),  # Latin-1 stays as the seed's byte
    ],
)
def test_tts_tokens_are_the_seed_byte_table(text, expected):
    assert tts_tokens(text) == expected


def test_typographic_characters_map_to_ascii():
    assert normalize_tts_text("Some years ago\u2014never mind \u201chow\u201d it\u2019s\u2026") == (
        "some years ago - never mind \"how\" it's..."
    )
    assert normalize_tts_text("Dvo\u0159\u00e1k") == "dvorák"  # ř decomposes to r + caron; á is Latin-1


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_refused(text):
    with pytest.raises(InputError, match="empty"):
        tts_tokens(text)


def test_out_of_vocabulary_characters_are_named():
    with pytest.raises(InputError) as err:
        tts_tokens("hello 世界 \U0001F600")
    msg = str(err.value)
    assert "3 character(s) outside the TTS vocabulary" in msg
    assert "U+4E16" in msg and "U+1F600" in msg and "transliterate or remove" in msg


def test_asr_table_round_trip_and_ctc_rule():
    ids = asr_encode("Hi there")
    assert ids == [ord(c) for c in "hi there"]
    assert asr_decode(ids) == "hi there"
    assert asr_encode("é") == [1]  # unknown
    # CTC: repeats collapse unless a blank separates them; blanks vanish
    assert ctc_greedy([0, 104, 104, 0, 105, 105, 0, 105, 0]) == [104, 105, 105]
