"""The official ``openai`` client against a real server: speech, transcriptions, models, routing and degradation."""

from __future__ import annotations

import io

import httpx
import numpy as np
import soundfile

from speechtrt.models.audio import encode_audio, resample


def test_speech_through_the_openai_client_streams_every_sentence_as_a_part(server, openai_client):
    worker = server.state.tts["tts"]
    text = "Hi there. Bye now."
    wav = openai_client.audio.speech.create(model="tts", voice="alloy", input=text, response_format="wav")
    audio, rate = soundfile.read(io.BytesIO(wav.content), dtype="float32")
    assert rate == worker.sample_rate == 22050
    rule = worker.service.config.frame_rule
    frames = rule.frames_for_text(len("hi there.")) + rule.frames_for_text(len("bye now."))
    assert audio.shape == (frames * worker.service.model_config.samples_per_frame,)
    assert np.abs(audio).max() > 0
    with openai_client.audio.speech.with_streaming_response.create(model="tts-1", voice="nova", input=text,
                                                                    response_format="pcm") as resp:
        assert resp.headers["x-speechtrt-parts"] == "2" and resp.headers["x-speechtrt-model"] == "tts"
        assert resp.headers["transfer-encoding"] == "chunked"
        pcm = b"".join(resp.iter_bytes())
    same = np.frombuffer(pcm, "<i2").astype(np.float32) / 32767
    assert np.abs(same - audio).max() <= 1 / 32767  # the same request synthesized again: deterministic
    flac = openai_client.audio.speech.create(model="tts", voice="alloy", input=text, response_format="flac",
                                             speed=2.0)
    fast, _ = soundfile.read(io.BytesIO(flac.content), dtype="float32")
    assert abs(len(fast) - len(audio) / 2) <= 2  # twice as fast: half the samples


def test_transcription_through_the_openai_client_equals_the_model_offline(server, openai_client, utterances):
    x = utterances["gb"]
    tr = openai_client.audio.transcriptions.create(model="asr-small", file=("gb.wav", encode_audio(x, 16000)),
                                                   response_format="verbose_json",
                                                   timestamp_granularities=["word", "segment"])
    quantized = np.round(np.clip(x, -1, 1) * 32767) / 32768  # what the 16-bit WAV carries
    direct = server.state.asr["asr-small"].transcribe(quantized.astype(np.float32), timeout=60)
    assert tr.text == direct.text and len(tr.text.split()) >= 6
    assert abs(tr.duration - len(x) / 16000) < 1e-3
    assert [w.word for w in tr.words] == tr.text.split()
    assert all(a.end <= b.start + 1e-9 for a, b in zip(tr.words, tr.words[1:]))
    assert tr.segments and tr.segments[0].start <= tr.words[0].start and tr.segments[-1].end <= tr.duration + 0.05
    text = openai_client.audio.transcriptions.create(model="asr-small", file=("gb.wav", encode_audio(x, 16000)),
                                                     response_format="text")
    assert text.strip() == direct.text


def test_an_8khz_stereo_upload_is_accepted_and_resampled(server, openai_client, utterances):
    x = utterances["us"]
    x8 = resample(x, 16000, 8000)
    stereo = np.stack([x8, 0.5 * x8], axis=1)
    buf = io.BytesIO()
    soundfile.write(buf, stereo, 8000, format="WAV", subtype="FLOAT")
    tr = openai_client.audio.transcriptions.create(model="asr-small", file=("st.wav", buf.getvalue()))
    mono16 = resample(stereo.astype(np.float32).mean(axis=1), 8000, 16000)
    assert tr.text == server.state.asr["asr-small"].transcribe(mono16, timeout=60).text
    assert tr.text  # real words out of telephone-band audio


def test_models_lists_every_served_id(openai_client):
    ids = {m.id for m in openai_client.models.list().data}
    assert {"tts", "asr-small", "asr-medium", "asr-stream", "tts-1", "whisper-1"} <= ids


def test_dialect_routes_by_the_evaluation_and_overload_degrades_to_the_faster_model(server, utterances):
    """en-gb -> asr-small, en-us -> asr-medium (tests/serve/data/selection.json); with asr-medium saturated, an
    auto-routed upload goes to asr-small and says so; a pinned model waits and is refused instead."""
    wav = encode_audio(utterances["us"], 16000)

    def post(dialect, model="whisper-1"):
        return httpx.post(server.url + "/v1/audio/transcriptions", files={"file": ("a.wav", wav)},
                          data={"model": model, "dialect": dialect}, timeout=60)

    gb, us = post("en-gb"), post("en-us")
    assert gb.headers["x-speechtrt-model"] == "asr-small" and gb.headers["x-speechtrt-route"] == "selection"
    assert us.headers["x-speechtrt-model"] == "asr-medium" and us.json()["speechtrt"]["variant"].startswith("asr-med")
    assert post("xx-unknown").headers["x-speechtrt-route"] == "default"
    gate = server.state.gate("asr", "asr-medium")
    held = [server.call(gate.try_acquire) for _ in range(gate.capacity)]  # saturate asr-medium
    try:
        degraded = post("en-us")
        pinned = post("en-us", model="asr-medium")
    finally:
        for _ in held:
            server.call(gate.release)
    assert degraded.status_code == 200, degraded.text
    assert degraded.headers["x-speechtrt-model"] == "asr-small" and degraded.headers["x-speechtrt-degraded"] == "true"
    assert degraded.json()["speechtrt"]["route"] == "degraded"
    assert pinned.status_code == 429 and pinned.headers["retry-after"] == "1"
    assert pinned.json()["error"]["code"] == "capacity" and "asr-medium" in pinned.json()["error"]["message"]
    assert post("en-us").headers["x-speechtrt-model"] == "asr-medium"  # recovered
