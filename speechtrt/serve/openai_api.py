"""OpenAI-compatible routes: ``POST /v1/audio/speech``, ``POST /v1/audio/transcriptions``, ``GET /v1/models``.

Routes validate into typed requests and await the services; they never compute. Speech streams each part's audio
(split at every sentence) as the vocoder finishes it, with chunked transfer; ``flac`` is encoded whole at the end.
Transcriptions decode the upload once (libsndfile: any WAV/FLAC/OGG, any rate and channel count), mix to mono,
resample to 16 kHz once and join the model's next batch. A client that goes away cancels its work at once.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from speechtrt.errors import CapacityError, InputError
from speechtrt.models.audio import FEATURES, encode_audio, read_audio, resample
from speechtrt.serve.errors import APIError, bad_request
from speechtrt.serve.models import OPENAI_VOICES, TTS_MODELS
from speechtrt.serve.routing import ASR_ALIASES, TTS_ALIASES, Route
from speechtrt.serve.state import ServerState

router = APIRouter()

SPEECH_FORMATS = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


class ClientGone(Exception):
    """The client disconnected before its answer was ready (its work was cancelled)."""


def state_of(request: Request) -> ServerState:
    return request.app.state.speechtrt


def require_ready_and_key(request: Request) -> ServerState:
    """Every /v1 route: the API key (when one is set; checked before the body by ``RequireKey`` too), then
    readiness."""
    state = state_of(request)
    state.admission.check_key(request.headers.get("authorization"))
    if not state.ready:
        raise state.admission.refusal("http", "not_ready", False, "the server is still loading its models")
    return state


# ---------------------------------------------------------------- requests


class SpeechRequest(BaseModel):
    """OpenAI's speech request. ``stream_format`` ``sse`` is not served (audio streams as chunked bytes)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str
    voice: str = "alloy"
    response_format: str = "wav"
    speed: float = 1.0
    stream_format: str = "audio"

    @field_validator("input")
    @classmethod
    def _input_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("input is empty: give the text to speak")
        return v

    @field_validator("response_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in SPEECH_FORMATS:
            raise ValueError(f"response_format {v!r} is not served: choose one of {', '.join(SPEECH_FORMATS)}")
        return v

    @field_validator("speed")
    @classmethod
    def _speed_range(cls, v: float) -> float:
        if not (0.25 <= v <= 4.0) or not math.isfinite(v):
            raise ValueError(f"speed {v} is outside 0.25..4.0")
        return v

    @field_validator("stream_format")
    @classmethod
    def _stream_format(cls, v: str) -> str:
        if v != "audio":
            raise ValueError(f"stream_format {v!r} is not served: audio streams as chunked bytes ('audio')")
        return v


# ---------------------------------------------------------------- helpers


def wav_header(sample_rate: int, n_samples: int | None) -> bytes:
    """A 16-bit mono PCM WAV header; ``n_samples`` None writes the streaming form (sizes 0xFFFFFFFF)."""
    data = 0xFFFFFFFF if n_samples is None else 2 * n_samples
    riff = 0xFFFFFFFF if n_samples is None else 36 + data
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16) + b"data" + struct.pack("<I", data))


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def speed_factors(speed: float) -> tuple[int, int]:
    """``speed`` as the polyphase ratio ``(rate_in, rate_out)`` that plays the audio ``speed`` times faster."""
    q = round(speed * 100)
    g = math.gcd(q, 100)
    return q // g, 100 // g


def at_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """Audio played ``speed`` times faster by resampling (the pitch moves with it)."""
    if speed == 1.0:
        return audio
    rate_in, rate_out = speed_factors(speed)
    return resample(audio, rate_in, rate_out)


async def until_disconnect(request: Request) -> None:
    """Returns when the client goes away (after the body was read, ``receive`` only reports that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, future: asyncio.Future):
    """The future's result, or ClientGone (and the future cancelled) if the client leaves first."""
    watcher = asyncio.ensure_future(until_disconnect(request))
    try:
        done, _ = await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        future.cancel()
        raise ClientGone()
    finally:
        watcher.cancel()


def not_served(kind: str, model: str, served) -> APIError:
    what = f"{kind} model" if kind else "model"
    return APIError(404, f"the {what} {model!r} is not served here; served: {', '.join(served) or 'none'}",
                    "model", "model_not_found")


# ---------------------------------------------------------------- speech


@router.post("/v1/audio/speech")
async def speech(req: SpeechRequest, request: Request, state: ServerState = Depends(require_ready_and_key)):
    name = next(iter(state.tts), None) if req.model in TTS_ALIASES else req.model
    if name not in state.tts:
        raise not_served("speech", req.model, [*state.tts, *TTS_ALIASES])
    worker = state.tts[name]
    voices = (*TTS_MODELS[name].voices, *OPENAI_VOICES)
    if req.voice not in voices:
        raise bad_request(f"voice {req.voice!r} is not served by {name}: choose one of {', '.join(voices)}", "voice")
    state.admission.check_text(req.input)
    received = time.perf_counter()
    gate = state.gate("tts", name)
    await gate.acquire()
    try:
        parts = worker.stream(req.input, split="sentences", lead_chars=state.config.tts.lead_chars or None)
    except CapacityError as exc:
        gate.release()
        raise state.admission.refusal(f"tts:{name}", "max_queue", worker.service.config.max_queue, str(exc))
    except BaseException:
        gate.release()
        raise
    rate = worker.sample_rate
    headers = {"x-speechtrt-model": name, "x-speechtrt-sample-rate": str(rate),
               "x-speechtrt-parts": str(parts.parts)}
    metrics = state.metrics

    if req.response_format == "flac":
        try:
            pieces = await unless_disconnected(request, asyncio.ensure_future(_collect(parts)))
        except BaseException:
            parts.cancel()
            raise
        finally:
            gate.release()
        audio = at_speed(np.concatenate(pieces), req.speed) if pieces else np.zeros(0, np.float32)
        metrics.time_to_first_audio.labels(name).observe(time.perf_counter() - received)
        return Response(encode_audio(audio, rate, "flac"), media_type=SPEECH_FORMATS["flac"], headers=headers)

    total = None
    frames = parts.total_frames
    if frames is not None:
        spf = worker.service.model_config.samples_per_frame
        rate_in, rate_out = speed_factors(req.speed)
        total = sum(math.ceil(r.frame_budget * spf * rate_out / rate_in) for r in parts.handle.parts)

    released = False

    def finish() -> None:  # once: when the body ends, fails, or is never started (the client left first)
        nonlocal released
        if not released:
            released = True
            parts.cancel()  # no-op when finished; frees the slots when the client went away
            gate.release()

    async def body():
        first, last_sent = True, None
        try:
            async for audio in parts:
                chunk = pcm16(at_speed(audio, req.speed))
                now = time.perf_counter()
                if first:
                    metrics.time_to_first_audio.labels(name).observe(now - received)
                    if req.response_format == "wav":
                        chunk = wav_header(rate, total) + chunk
                    first = False
                else:
                    metrics.chunk_latency.labels(f"tts:{name}").observe(now - last_sent)
                last_sent = now
                yield chunk
        finally:
            finish()

    return ClosingStreamingResponse(body(), finish, media_type=SPEECH_FORMATS[req.response_format],
                                    headers=headers)


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends, even when its body never started."""

    def __init__(self, content, on_close, **kwargs):
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def _collect(parts) -> list[np.ndarray]:
    return [audio async for audio in parts]


# ---------------------------------------------------------------- transcriptions


def decode_upload(data: bytes, admission, service: str) -> np.ndarray:
    """Upload bytes -> 16 kHz mono float32 (InputError for empty, non-audio, NaN/Inf; 413 over the duration)."""
    samples, rate = read_audio(data)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise InputError("uploaded audio has no samples: send a file with at least a few milliseconds of sound")
    admission.check_audio_seconds(samples.shape[0] / rate, service)
    return resample(samples, rate, FEATURES.sample_rate)


@router.post("/v1/audio/transcriptions")
async def transcriptions(
    request: Request,
    file: UploadFile = File(...),
    model: str = Form(...),
    response_format: str = Form("json"),
    language: str | None = Form(None),
    prompt: str | None = Form(None),
    temperature: float | None = Form(None),
    dialect: str | None = Form(None),
    timestamp_granularities: list[str] = Form([], alias="timestamp_granularities[]"),
    state: ServerState = Depends(require_ready_and_key),
):
    if response_format not in TRANSCRIPTION_FORMATS:
        raise bad_request(f"response_format {response_format!r} is not served: choose one of "
                          f"{', '.join(TRANSCRIPTION_FORMATS)}", "response_format")
    if language and not language.lower().startswith("en"):
        raise bad_request(f"language {language!r}: the served models transcribe English ('en')", "language")
    if not dialect and language and "-" in language:  # "en-gb" given as the language
        dialect = language.lower()
    try:
        route = state.router.transcription(model, dialect)
    except LookupError:
        raise not_served("transcription", model, [*state.asr, *ASR_ALIASES]) from None
    received = time.perf_counter()
    data = await file.read()
    samples = await asyncio.to_thread(decode_upload, data, state.admission, "transcription")
    route, gate = await _admit_transcription(state, route)
    try:
        future = asyncio.wrap_future(state.asr[route.model].submit(samples))
        result = await unless_disconnected(request, future)
    finally:
        gate.release()
    state.metrics.routed.labels("transcription", state.router.dialect_label(dialect), route.model).inc()
    headers = {"x-speechtrt-model": route.model, "x-speechtrt-route": route.reason,
               "x-speechtrt-degraded": str(route.reason == "degraded").lower()}
    info = {"model": route.model, "route": route.reason, "dialect": dialect, "variant": route.variant,
            "degraded": route.reason == "degraded", "latency_s": round(time.perf_counter() - received, 4),
            "batch": result.batch}
    if response_format == "text":
        return PlainTextResponse(result.text, headers=headers)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(subtitles(result.segments, response_format), headers=headers)
    body = {"text": result.text, "speechtrt": info}
    if response_format == "verbose_json":
        body = {"task": "transcribe", "language": "english", "duration": round(result.duration_s, 3),
                "text": result.text, "segments": result.segments, **body}
        if "word" in timestamp_granularities:
            body["words"] = [w.to_json() for w in result.words]
    return JSONResponse(body, headers=headers)


async def _admit_transcription(state: ServerState, route: Route):
    """A permit for the routed model; an auto-routed upload goes to the faster model when the routed one has been
    saturated for ``degrade_after_s``, or when its wait runs out and the faster one has room (counted)."""
    cfg = state.config.asr
    gate = state.gate("asr", route.model)
    faster = state.router.faster(route.model) if route.auto else None

    def degrade() -> tuple[Route, object] | None:
        if faster is None:
            return None
        other = state.gate("asr", faster)
        if not other.try_acquire():
            return None
        state.metrics.degraded.labels("transcription", route.model, faster).inc()
        return Route(faster, "degraded", route.dialect, route.variant), other

    if faster is not None and not gate.free and gate.saturated_for() >= cfg.degrade_after_s:
        moved = degrade()
        if moved:
            return moved
    try:
        await gate.acquire()
    except APIError as refusal:
        moved = degrade() if refusal.status == 429 else None
        if moved:
            return moved
        raise
    return route, gate


def subtitles(segments: list[dict], fmt: str) -> str:
    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        h, ms = divmod(ms, 3_600_000)
        m, ms = divmod(ms, 60_000)
        s, ms = divmod(ms, 1000)
        sep = "," if fmt == "srt" else "."
        return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"

    blocks = [f"{stamp(s['start'])} --> {stamp(s['end'])}\n{s['text']}" for s in segments]
    if fmt == "srt":
        return "".join(f"{i}\n{b}\n\n" for i, b in enumerate(blocks, 1))
    return "WEBVTT\n\n" + "".join(f"{b}\n\n" for b in blocks)


# ---------------------------------------------------------------- models


def model_cards(state: ServerState) -> list[dict]:
    cards = []
    for kind, names in (("speech", state.tts), ("transcription", state.asr), ("stream", state.streams)):
        for name in names:
            cards.append({"id": name, "object": "model", "created": state.created, "owned_by": "speechtrt",
                          "kind": kind, "description": state.descriptions.get(name, "")})
    if state.tts:
        first = next(iter(state.tts))
        cards += [{"id": a, "object": "model", "created": state.created, "owned_by": "speechtrt", "kind": "speech",
                   "alias_of": first} for a in TTS_ALIASES]
    if state.asr:
        cards += [{"id": a, "object": "model", "created": state.created, "owned_by": "speechtrt",
                   "kind": "transcription", "alias_of": "routed by dialect" if state.router.selection else
                   state.router.default} for a in ASR_ALIASES]
    return cards


@router.get("/v1/models")
async def list_models(state: ServerState = Depends(require_ready_and_key)):
    return {"object": "list", "data": model_cards(state)}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, state: ServerState = Depends(require_ready_and_key)):
    for card in model_cards(state):
        if card["id"] == model_id:
            return card
    raise not_served("", model_id, [c["id"] for c in model_cards(state)])
