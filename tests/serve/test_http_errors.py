"""Bad requests over the wire: each is one clear 4xx in OpenAI's error shape naming the field or limit, and the
server keeps serving. Overload at twice the TTS capacity: the excess is refused, every admitted request completes."""

from __future__ import annotations

import asyncio
import io
import time

import httpx
import numpy as np
import pytest
import soundfile

from speechtrt.models.audio import encode_audio


def nan_wav() -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, np.array([0.0, np.nan, 0.1] * 2000, np.float32), 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


SPEECH = "/v1/audio/speech"
TRANSCRIBE = "/v1/audio/transcriptions"
CASES = [
    # (name, method kwargs, status, param, code, message fragment)
    ("malformed json", dict(url=SPEECH, content=b'{"model": "tts", "input": ', headers={"content-type":
     "application/json"}), 400, None, "invalid_json", "not valid JSON"),
    ("missing input", dict(url=SPEECH, json={"model": "tts", "voice": "alloy"}), 400, "input", "missing_field",
     "input: required"),
    ("empty text", dict(url=SPEECH, json={"model": "tts", "input": "   "}), 400, "input", "invalid_value",
     "input is empty"),
    ("text over the limit", dict(url=SPEECH, json={"model": "tts", "input": "a" * 201}), 400, "input",
     "max_text_chars", "max_text_chars=200"),
    ("unsupported format", dict(url=SPEECH, json={"model": "tts", "input": "hi", "response_format": "mp3"}), 400,
     "response_format", "invalid_value", "'mp3' is not served"),
    ("unknown voice", dict(url=SPEECH, json={"model": "tts", "input": "hi", "voice": "zz"}), 400, "voice",
     "invalid_value", "voice 'zz'"),
    ("unknown model", dict(url=SPEECH, json={"model": "nope", "input": "hi"}), 404, "model", "model_not_found",
     "'nope' is not served"),
    ("text outside the vocabulary", dict(url=SPEECH, json={"model": "tts", "input": "hi \u4e16"}), 400, None,
     "invalid_value", "outside the TTS vocabulary"),
    ("missing file", dict(url=TRANSCRIBE, data={"model": "whisper-1"}), 400, "file", "missing_field",
     "file: required"),
    ("0-byte upload", dict(url=TRANSCRIBE, files={"file": ("a.wav", b"")}, data={"model": "whisper-1"}), 400, None,
     "invalid_value", "empty (0 bytes)"),
    ("non-audio upload", dict(url=TRANSCRIBE, files={"file": ("a.wav", b"this is not audio" * 50)},
     data={"model": "whisper-1"}), 400, None, "invalid_value", "not audio"),
    ("NaN audio", dict(url=TRANSCRIBE, files={"file": ("a.wav", nan_wav())}, data={"model": "whisper-1"}), 400,
     None, "invalid_value", "NaN/Inf"),
    ("audio over the limit", dict(url=TRANSCRIBE, files={"file": ("a.wav", encode_audio(np.zeros(16000 * 21),
     16000))}, data={"model": "whisper-1"}), 413, "file", "max_audio_s", "max_audio_s=20.0"),
    ("body over the limit", dict(url=TRANSCRIBE, files={"file": ("a.wav", b"\0" * (2 * 2**20 + 1))},
     data={"model": "whisper-1"}), 413, None, "max_body_bytes", "max_body_bytes=2097152"),
    ("not English", dict(url=TRANSCRIBE, files={"file": ("a.wav", encode_audio(np.zeros(1600), 16000))},
     data={"model": "whisper-1", "language": "fr"}), 400, "language", "invalid_value", "English"),
    ("no such route", dict(url="/v1/audio/translations", json={}), 404, None, None, "no route POST"),
]


@pytest.mark.parametrize("name, kwargs, status, param, code, says", CASES, ids=[c[0] for c in CASES])
def test_bad_requests_get_one_clear_error(server, name, kwargs, status, param, code, says):
    kwargs = dict(kwargs)
    r = httpx.post(server.url + kwargs.pop("url"), timeout=30, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param and err["code"] == code and says in err["message"], err
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")


def test_the_server_keeps_serving_after_bad_requests(server):
    r = httpx.post(server.url + SPEECH, json={"model": "tts", "input": "Still here."}, timeout=60)
    assert r.status_code == 200 and r.content[:4] == b"RIFF"
    assert httpx.get(server.url + "/ready").json()["status"] == "ready"


def test_api_key_is_required_when_set(server):
    state = server.state
    state.admission.api_key = "sekret"
    try:
        r = httpx.get(server.url + "/v1/models")
        wrong = httpx.post(server.url + SPEECH, content=b"{not even json", headers={"Authorization": "Bearer no"})
        ok = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer sekret"})
        health = httpx.get(server.url + "/health")
    finally:
        state.admission.api_key = None
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"  # before the body is parsed
    assert ok.status_code == 200 and health.status_code == 200


def test_overload_at_twice_the_capacity_refuses_the_excess_and_completes_the_rest(server):
    worker = server.state.tts["tts"]
    gate = server.state.gate("tts", "tts")
    n = 2 * gate.capacity
    sentences = ("one two.", "three.", "four.")  # each fits a slot (80 frames)
    text = " ".join(s.capitalize() for s in sentences)

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post(SPEECH, json={"model": "tts", "input": text,
                                                                    "response_format": "pcm"}) for _ in range(n)))

    responses = asyncio.run(fire())
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code in (429, 503)]
    assert len(ok) + len(refused) == n and ok and refused
    frames = sum(worker.service.config.frame_rule.frames_for_text(len(s)) for s in sentences)
    reference = np.frombuffer(ok[0].content, "<i2").astype(np.int32)
    for r in ok:  # every admitted request completed, in full, with the same audio (batched: within float rounding)
        assert len(r.content) == 2 * frames * worker.service.model_config.samples_per_frame
        assert np.abs(np.frombuffer(r.content, "<i2") - reference).max() <= 2
    for r in refused:
        assert r.headers["retry-after"] and r.json()["error"]["code"] == "capacity"
        assert f"capacity={gate.capacity}" in r.json()["error"]["message"]
    # nothing admitted is left behind: no permit, no slot, no queued part, no request handle
    assert gate.in_flight == 0 and worker.active == 0 and worker.queued == 0
    assert not worker.service._handles


def test_a_client_that_leaves_mid_speech_frees_its_slots_at_once(server):
    worker = server.state.tts["tts"]
    gate = server.state.gate("tts", "tts")
    text = "One two three. Four five six. Seven eight. Ten eleven. Twelve thirteen."  # five parts, two slots
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", SPEECH, json={"model": "tts", "input": text, "response_format": "pcm"}) as r:
            assert r.status_code == 200
            next(r.iter_raw())  # the first part arrived; the rest is still decoding
            assert worker.active + worker.queued > 0
        # leaving the block closes the connection mid-response
    t0 = time.monotonic()
    while (worker.active or worker.queued or gate.in_flight) and time.monotonic() - t0 < 3:
        time.sleep(0.01)
    assert worker.active == 0 and worker.queued == 0 and gate.in_flight == 0 and not worker.service._handles
    assert httpx.post(server.url + SPEECH, json={"model": "tts", "input": "Next."}, timeout=60).status_code == 200
