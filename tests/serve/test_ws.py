"""WS /v1/stream with a real ``websockets`` client: finals equal the offline transcript, partials carry timestamps,
bad input closes with the reason, a vanished client frees its slot, a full server answers 1013."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import websockets

from tests.serve.conftest import pcm16


def wait_until(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def stream(url, samples_bytes: bytes, start: dict, frame: int = 3200, pace_s: float = 0.0):
    """Send a start, the audio in frames, an end; return (started, partials, final, close code)."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(start))
        started = json.loads(await ws.recv())
        for i in range(0, len(samples_bytes), frame):
            await ws.send(samples_bytes[i:i + frame])
            if pace_s:
                await asyncio.sleep(pace_s)
        await ws.send(json.dumps({"type": "end"}))
        partials, final = [], None
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "partial":
                partials.append(msg)
            else:
                final = msg
        return started, partials, final, ws.close_code


def test_streamed_final_equals_the_offline_transcript(server, utterances):
    x = utterances["scot"]
    pcm = pcm16(x)
    started, partials, final, code = asyncio.run(stream(server.ws_url, pcm, {
        "type": "start", "sample_rate": 16000, "encoding": "pcm16", "dialect": "en-gb-scotland"}, frame=2722))
    offline = server.state.streams["asr-stream"].offline_text(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768)
    assert code == 1000 and final["type"] == "final"
    assert final["text"] == offline and len(offline.split()) >= 3
    assert started["model"] == "asr-stream" and started["chunk_ms"] == 160
    ends = [p["end"] for p in partials]
    assert ends == sorted(ends) and ends[-1] >= len(x) / 16000 - 0.2
    assert partials[-1]["text"] == final["text"]
    assert " ".join(w["word"] for w in final["words"]) == " ".join(final["text"].split())
    assert abs(final["duration"] - len(x) / 16000) < 1e-3


def test_float32_frames_at_another_rate_are_resampled(server, utterances):
    from speechtrt.models.audio import resample

    x = utterances["us"]
    x24 = resample(x, 16000, 24000)
    _, _, final, code = asyncio.run(stream(server.ws_url, x24.astype("<f4").tobytes(), {
        "type": "start", "sample_rate": 24000, "encoding": "float32"}, frame=4 * 2400))
    assert code == 1000 and final["text"]


async def expect_close(url, messages, start=True):
    """Send ``messages`` (after a valid start when ``start``); return (error message, close code)."""
    async with websockets.connect(url) as ws:
        if start:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "float32"}))
            assert json.loads(await ws.recv())["type"] == "started"
        for m in messages:
            await ws.send(m)
        error = None
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "error":
                    error = msg["error"]
        except websockets.ConnectionClosedError:  # a close code other than 1000/1001
            pass
        return error, ws.close_code


@pytest.mark.parametrize("messages, start, code, says", [
    (["hello there"], True, 1003, "expected binary audio"),
    ([b"\x00\x00\x80"], True, 1007, "not a whole number of float32 samples"),
    ([np.array([0.1, np.nan, 0.2], "<f4").tobytes()], True, 1007, "NaN/Inf"),
    ([json.dumps({"type": "pause"})], True, 1008, "unknown control message"),
    ([b"\x00\x01"], False, 1003, "first message must be the JSON start"),
    ([json.dumps({"type": "start", "sample_rate": 100})], False, 1008, "sample_rate"),
    (["{not json"], False, 1003, "not JSON"),
])
def test_bad_stream_input_closes_with_the_reason(server, messages, start, code, says):
    error, close = asyncio.run(expect_close(server.ws_url, messages, start))
    assert close == code and says in error["message"], error
    assert wait_until(lambda: server.state.streams["asr-stream"].open_streams == 0)  # the slot was freed


def test_a_vanished_client_frees_its_slot_and_others_are_unaffected(server, utterances):
    asr = server.state.streams["asr-stream"]
    x = utterances["gb"]

    async def vanish():
        ws = await websockets.connect(server.ws_url)
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "float32"}))
        await ws.recv()
        await ws.send(x[: len(x) // 2].astype("<f4").tobytes())
        ws.transport.abort()  # no close handshake: the client is simply gone

    async def both():
        other = asyncio.create_task(stream(server.ws_url, x.astype("<f4").tobytes(), {
            "type": "start", "sample_rate": 16000, "encoding": "float32"}, frame=4 * 1600, pace_s=0.02))
        await vanish()
        return await other

    _, _, final, code = asyncio.run(both())
    assert code == 1000 and final["text"] == asr.offline_text(x)
    assert wait_until(lambda: asr.open_streams == 0 and server.state.gate("stream", "asr-stream").in_flight == 0)


def test_a_full_server_answers_1013_and_admits_again_after(server):
    capacity = server.state.gate("stream", "asr-stream").capacity

    async def run():
        held = []
        for _ in range(capacity):
            ws = await websockets.connect(server.ws_url)
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            assert json.loads(await ws.recv())["type"] == "started"
            held.append(ws)
        error, code = await expect_close(server.ws_url, [json.dumps({"type": "start", "sample_rate": 16000})],
                                         start=False)
        for ws in held:
            await ws.send(json.dumps({"type": "end"}))
            async for _ in ws:
                pass
        return error, code

    error, code = asyncio.run(run())
    assert code == 1013 and error["code"] == "capacity" and f"capacity={capacity}" in error["message"]
    _, _, final, code = asyncio.run(stream(server.ws_url, b"", {"type": "start", "sample_rate": 16000}))
    assert code == 1000 and final["text"] == ""


def test_a_silent_stream_is_closed_at_the_idle_limit(server):
    async def silent():
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            await ws.recv()
            await ws.send(np.zeros(1600, "<i2").tobytes())
            msgs = []
            try:
                async for raw in ws:  # nothing more is sent
                    msgs.append(json.loads(raw))
            except websockets.ConnectionClosedError:
                pass
            return msgs, ws.close_code

    t0 = time.monotonic()
    msgs, code = asyncio.run(silent())
    err = next(m["error"] for m in msgs if m["type"] == "error")
    assert code == 1008 and err["code"] == "stream_idle_s" and "stream_idle_s=2.0" in err["message"]
    assert 1.9 < time.monotonic() - t0 < 10
