"""Audio files through libsndfile: every encoding a user may hand us reads back the same samples, and bad audio is
refused with a message that names the problem."""

import io

import numpy as np
import pytest
import soundfile

from speechtrt.errors import InputError
from speechtrt.models.audio import encode_audio, read_audio, write_wav

RATE = 16000


def _tone(n=4000):
    t = np.arange(n) / RATE
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt, subtype, tol", [
    ("WAV", "PCM_16", 1e-4), ("WAV", "PCM_24", 1e-6), ("WAV", "PCM_32", 1e-6), ("WAV", "FLOAT", 0.0),
    ("WAV", "DOUBLE", 1e-7), ("WAV", "PCM_U8", 1e-2), ("FLAC", "PCM_16", 1e-4), ("FLAC", "PCM_24", 1e-6),
])
def test_every_pcm_and_float_encoding_reads_back(tmp_path, fmt, subtype, tol):
    x = _tone()
    path = tmp_path / f"tone.{fmt.lower()}"
    soundfile.write(str(path), x, RATE, format=fmt, subtype=subtype)
    y, rate = read_audio(path)
    assert rate == RATE and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tol + 1e-9


def test_ogg_vorbis_is_lossy_but_close(tmp_path):
    x = _tone(16000)
    y, rate = read_audio(encode_audio(x, RATE, "ogg"))
    assert rate == RATE and abs(len(y) - len(x)) < 2048
    n = min(len(x), len(y))
    assert np.corrcoef(x[1000:n - 1000], y[1000:n - 1000])[0, 1] > 0.95


def test_stereo_comes_back_as_channels(tmp_path):
    x = np.stack([_tone(), -_tone()], axis=1)
    buf = io.BytesIO()
    soundfile.write(buf, x, 8000, format="WAV", subtype="PCM_16")
    y, rate = read_audio(buf.getvalue())
    assert rate == 8000 and y.shape == (4000, 2)


def test_write_wav_round_trip_by_suffix(tmp_path):
    x = _tone()
    for name in ("a.wav", "a.flac"):
        path = write_wav(tmp_path / name, x, RATE)
        assert soundfile.info(str(path)).format == name.split(".")[1].upper()
        assert np.max(np.abs(read_audio(path)[0] - x)) < 1e-4


@pytest.mark.parametrize("data, message", [
    (b"", r"is empty \(0 bytes\)"),
    (b"this is not audio, just text" * 10, "is not audio libsndfile can read"),
])
def test_bad_bytes_are_refused_by_name(data, message):
    with pytest.raises(InputError, match=message):
        read_audio(data)


def test_nan_and_inf_samples_are_refused(tmp_path):
    x = _tone()
    x[10], x[20] = np.nan, np.inf
    buf = io.BytesIO()
    soundfile.write(buf, x, RATE, format="WAV", subtype="FLOAT")
    with pytest.raises(InputError, match="2 NaN/Inf samples"):
        read_audio(buf.getvalue())


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="unknown audio format 'mp3'"):
        encode_audio(_tone(), RATE, "mp3")
