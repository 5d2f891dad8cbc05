"""``WS /v1/stream``: streaming ASR over a WebSocket.

Protocol (JSON text messages, binary audio)::

    client: {"type": "start", "sample_rate": 16000, "encoding": "pcm16" | "float32",
             "dialect": "en-gb" (optional), "model": "asr-stream" (optional)}
    server: {"type": "started", "stream_id", "model", "route", "sample_rate", "chunk_ms", "limits"}
    client: binary frames of mono little-endian samples, any size (pcm16: 2 bytes each, float32: 4)
    server: {"type": "partial", "text", "start": 0.0, "end": seconds of audio decoded}   (after every model step)
    client: {"type": "end"}
    server: {"type": "final", "text", "duration", "samples" (16 kHz samples received), "words": [{"word", "start",
             "end"}], "model"}, then close 1000

Errors: ``{"type": "error", "error": {"message", "type", "param", "code"}}`` then a close whose code says what
happened — 1003 text where audio was expected, 1007 audio that cannot be decoded (odd byte count, NaN/Inf),
1008 protocol or limit (missing start, idle longer than ``stream_idle_s``, more than ``max_audio_s``, API key),
1009 a frame over ``max_frame_bytes``, 1013 no free stream slot (try again later) or the server is draining.
Audio at another rate is resampled frame by frame (send 16 kHz for finals identical to the offline transcript).
A client that disconnects cancels its stream; its slot frees at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from speechtrt.errors import CapacityError, InputError
from speechtrt.models.audio import FEATURES, resample
from speechtrt.serve.errors import (WS_INTERNAL, WS_INVALID_PAYLOAD, WS_NORMAL, WS_POLICY,
                                    WS_UNSUPPORTED_DATA, APIError, limit_exceeded)
from speechtrt.serve.streams import BackpressureError, Partial
from speechtrt.serve.state import ServerState

log = logging.getLogger("speechtrt.serve")
router = APIRouter()

ENCODINGS = {"pcm16": ("<i2", 2), "float32": ("<f4", 4)}
RATES = (8000, 192000)


@dataclass(frozen=True)
class StartMessage:
    sample_rate: int
    encoding: str
    dialect: str | None
    model: str | None

    @classmethod
    def parse(cls, text: str) -> "StartMessage":
        msg = _json(text)
        if msg.get("type") != "start":
            raise APIError(400, f"the first message must be {{\"type\": \"start\", \"sample_rate\": ...}}, got type "
                           f"{msg.get('type')!r}", "type", "protocol", close_code=WS_POLICY)
        rate = msg.get("sample_rate")
        if not isinstance(rate, int) or isinstance(rate, bool) or not RATES[0] <= rate <= RATES[1]:
            raise APIError(400, f"start.sample_rate must be an integer in {RATES[0]}..{RATES[1]} Hz, got {rate!r}",
                           "sample_rate", "invalid_value", close_code=WS_POLICY)
        encoding = msg.get("encoding", "pcm16")
        if encoding not in ENCODINGS:
            raise APIError(400, f"start.encoding {encoding!r}: choose one of {', '.join(ENCODINGS)}", "encoding",
                           "invalid_value", close_code=WS_POLICY)
        dialect, model = msg.get("dialect"), msg.get("model")
        for name, value in (("dialect", dialect), ("model", model)):
            if value is not None and not isinstance(value, str):
                raise APIError(400, f"start.{name} must be a string, got {type(value).__name__}", name,
                               "invalid_value", close_code=WS_POLICY)
        return cls(rate, encoding, dialect, model)


def _json(text: str) -> dict:
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise APIError(400, f"text message is not JSON ({exc.msg} at {exc.pos}): send audio as binary frames and "
                       "control messages as JSON", None, "invalid_json", close_code=WS_UNSUPPORTED_DATA) from None
    if not isinstance(msg, dict):
        raise APIError(400, f"control message must be a JSON object, got {type(msg).__name__}", None,
                       "invalid_json", close_code=WS_UNSUPPORTED_DATA)
    return msg


def decode_frame(data: bytes, encoding: str) -> np.ndarray:
    """One binary frame -> float32 samples, or an APIError closing with 1007."""
    dtype, width = ENCODINGS[encoding]
    if len(data) % width:
        raise APIError(400, f"binary frame of {len(data)} bytes is not a whole number of {encoding} samples "
                       f"({width} bytes each)", None, "invalid_audio", close_code=WS_INVALID_PAYLOAD)
    x = np.frombuffer(data, dtype).astype(np.float32)
    if encoding == "pcm16":
        return x / 32768.0
    finite = np.isfinite(x)
    if not finite.all():
        raise APIError(400, f"frame has {int((~finite).sum())} NaN/Inf samples of {x.size}: send finite float32 "
                       "audio", None, "invalid_audio", close_code=WS_INVALID_PAYLOAD)
    return x


async def _receive(ws: WebSocket, idle_s: float) -> dict:
    try:
        async with asyncio.timeout(idle_s):  # a timer on this task, not a task per message as wait_for makes
            message = await ws.receive()
    except TimeoutError:
        raise limit_exceeded("stream_idle_s", idle_s, f"nothing received for {idle_s:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message


class _Arrivals:
    """When each frame's audio arrived, by cumulative 16 kHz sample count, for partial latency."""

    def __init__(self):
        self._q: deque[tuple[int, float]] = deque()
        self.total = 0

    def add(self, n: int, at: float) -> None:
        self.total += n
        self._q.append((self.total, at))

    def latency(self, end_s: float, now: float) -> float | None:
        """Seconds since the frame that completed the audio a partial up to ``end_s`` needed arrived."""
        needed = min(round(end_s * FEATURES.sample_rate) + FEATURES.overlap, self.total)
        while len(self._q) > 1 and self._q[0][0] < needed:
            self._q.popleft()
        return now - self._q[0][1] if self._q else None


@router.websocket("/v1/stream")
async def stream(ws: WebSocket):
    state: ServerState = ws.app.state.speechtrt
    limits = state.config.limits
    metrics = state.metrics
    await ws.accept()
    status, session, gate, sender = WS_NORMAL, None, None, None
    finalized = False
    try:
        state.admission.check_key(ws.headers.get("authorization"), ws.query_params.get("api_key"))
        if not state.ready:
            raise state.admission.refusal("stream", "not_ready", False, "the server is still loading its models")
        first = await _receive(ws, limits.stream_idle_s)
        if first.get("text") is None:
            raise APIError(400, "the first message must be the JSON start message, got binary data", None,
                           "protocol", close_code=WS_UNSUPPORTED_DATA)
        start = StartMessage.parse(first["text"])
        try:
            route = state.router.stream(start.model, start.dialect)
        except LookupError:
            raise APIError(404, f"the streaming model {start.model!r} is not served here; served: "
                           f"{', '.join(state.streams) or 'none'}", "model", "model_not_found",
                           close_code=WS_POLICY) from None
        gate = state.gate("stream", route.model)
        await gate.acquire()
        asr = state.streams[route.model]
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue = asyncio.Queue()
        try:
            session = asr.open(lambda p: loop.call_soon_threadsafe(updates.put_nowait, p))
        except CapacityError as exc:
            raise state.admission.refusal(f"stream:{route.model}", "max_streams", asr.capacity, str(exc)) from None
        metrics.routed.labels("stream", state.router.dialect_label(start.dialect), route.model).inc()
        await ws.send_json({"type": "started", "stream_id": session.id, "model": route.model, "route": route.reason,
                            "variant": route.variant, "sample_rate": asr.sample_rate, "encoding": start.encoding,
                            "chunk_ms": asr.config.chunk_ms,
                            "limits": {"max_audio_s": limits.max_audio_s, "stream_idle_s": limits.stream_idle_s,
                                       "max_frame_bytes": limits.max_frame_bytes}})
        arrivals = _Arrivals()
        sender = asyncio.create_task(_send_partials(ws, updates, arrivals, metrics, route.model))
        await _receive_audio(ws, session, start, state, arrivals)
        final = await asyncio.wrap_future(session.finalize())
        finalized = True
        updates.put_nowait(None)
        await sender
        await ws.send_json({"type": "final", "text": final.text, "duration": round(final.duration_s, 3),
                            "samples": final.samples, "words": [w.to_json() for w in final.words],
                            "model": route.model})
        await ws.close(WS_NORMAL)
    except WebSocketDisconnect:
        status = 1001  # the client went away: its stream is cancelled below
    except (APIError, InputError) as exc:
        err = exc if isinstance(exc, APIError) else APIError(400, str(exc), None, "invalid_audio",
                                                               close_code=WS_INVALID_PAYLOAD)
        status = err.close_code
        await _close_with(ws, err, sender)
    except Exception as exc:  # a bug or a failed model step: tell the client, keep serving the others
        log.exception("stream failed")
        status = WS_INTERNAL
        await _close_with(ws, APIError(500, f"stream failed: {exc.__class__.__name__}: {exc}", None,
                                       "server_error", close_code=WS_INTERNAL), sender)
    finally:
        if sender is not None and not sender.done():
            sender.cancel()
        if session is not None and not finalized:
            session.cancel()
        if gate is not None:
            gate.release()
        metrics.requests.labels("/v1/stream", str(status)).inc()


async def _receive_audio(ws: WebSocket, session, start: StartMessage, state: ServerState, arrivals) -> None:
    """Push binary frames until the client's ``end``; backpressure waits (TCP pushes back on the client)."""
    limits = state.config.limits
    rate = start.sample_rate
    while True:
        message = await _receive(ws, limits.stream_idle_s)
        data = message.get("bytes")
        if data is None:
            text = message.get("text") or ""
            msg = _json(text) if text.lstrip().startswith("{") else None
            if msg is None:
                raise APIError(400, f"expected binary audio frames or a JSON control message ({{\"type\": \"end\"}});"
                               f" got text {text[:40]!r}", None, "protocol", close_code=WS_UNSUPPORTED_DATA)
            if msg.get("type") == "end":
                return
            raise APIError(400, f"unknown control message type {msg.get('type')!r} while streaming: send audio or "
                           "{\"type\": \"end\"}", "type", "protocol", close_code=WS_POLICY)
        if len(data) > limits.max_frame_bytes:
            raise limit_exceeded("max_frame_bytes", limits.max_frame_bytes, f"binary frame of {len(data)} bytes",
                                 413)
        if not data:
            continue
        samples = decode_frame(data, start.encoding)
        if rate != FEATURES.sample_rate:
            samples = resample(samples, rate, FEATURES.sample_rate)
        if (session.pushed + len(samples)) / FEATURES.sample_rate > limits.max_audio_s:
            state.metrics.refused.labels("stream", "max_audio_s").inc()
            raise limit_exceeded("max_audio_s", limits.max_audio_s, "the stream's audio is longer than the server "
                                 "accepts")
        arrivals.add(len(samples), time.perf_counter())
        while True:
            try:
                session.push(samples)
                break
            except BackpressureError:
                await asyncio.sleep(0.005)


async def _send_partials(ws: WebSocket, updates: asyncio.Queue, arrivals: _Arrivals, metrics, model: str) -> None:
    """Send each step's partial (the newest when several queued); returns at the None the handler queues last."""
    while True:
        p: Partial | None = await updates.get()
        last = p is None
        while not updates.empty() and not last:
            nxt = updates.get_nowait()
            last = nxt is None
            p = p if nxt is None else nxt
        if p is not None:
            now = time.perf_counter()
            lat = arrivals.latency(p.end_s, now)
            if lat is not None:
                metrics.chunk_latency.labels(f"stream:{model}").observe(lat)
            await ws.send_json({"type": "partial", "text": p.text, "start": 0.0, "end": round(p.end_s, 3)})
        if last:
            return


async def _close_with(ws: WebSocket, err: APIError, sender) -> None:
    if sender is not None and not sender.done():
        sender.cancel()
    try:
        await ws.send_json({"type": "error", **err.body()})
        await ws.close(err.close_code, err.message.encode()[:120].decode(errors="ignore"))
    except Exception:  # the client is already gone
        pass
