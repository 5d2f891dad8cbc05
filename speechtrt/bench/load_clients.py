"""Load-test clients: one :class:`Target` interface, a network client of ``speechtrt serve`` and an in-process
client of the same services, so every workload in :mod:`speechtrt.bench.loadtest` runs unchanged against either.

Triton's KServe v2 API is a third target with the same four coroutines (:mod:`speechtrt.bench.triton_target`),
returned by :func:`make_target`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from speechtrt.errors import CapacityError, InputError
from speechtrt.models.audio import FEATURES

TARGETS = ("serve", "triton")


# ---------------------------------------------------------------- samples


@dataclass
class SpeechSample:
    ok: bool
    status: int | str
    latency_s: float = 0.0
    ttfa_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    audio_s: float = 0.0
    error: str | None = None


@dataclass
class UploadSample:
    ok: bool
    status: int | str
    latency_s: float = 0.0
    text: str = ""
    model: str | None = None
    route: str | None = None
    audio_s: float = 0.0
    error: str | None = None


@dataclass
class StreamSample:
    ok: bool
    status: int | str
    utterance: int = -1
    final: str = ""
    partial_latencies_s: list[float] = field(default_factory=list)
    audio_s: float = 0.0
    server_audio_s: float | None = None
    error: str | None = None


class Refused(Exception):
    """The target refused the request (429/503, WebSocket 1013, CapacityError); ``status`` says how."""

    def __init__(self, status, message: str = ""):
        super().__init__(message)
        self.status = status


def partial_latencies(sent: list[tuple[int, float]], partials: list[tuple[float, float]]) -> list[float]:
    """Latency of each partial: from the send of the frame holding the last sample its chunk needed (``end_s`` ×
    16 kHz plus the window overlap) to its arrival. ``sent``: (cumulative samples after a frame, send time)."""
    out = []
    if not sent:
        return out
    total = sent[-1][0]
    ends = [n for n, _ in sent]
    for received, end_s in partials:
        needed = min(round(end_s * FEATURES.sample_rate) + FEATURES.overlap, total)
        i = int(np.searchsorted(ends, needed))
        if i < len(sent):
            out.append(received - sent[i][1])
    return out


# ---------------------------------------------------------------- targets


class StreamClient(Protocol):
    async def send(self, samples: np.ndarray) -> None: ...

    async def finish(self) -> tuple[str, float | None]: ...  # final text, audio seconds the server accounted

    def partial_latencies(self) -> list[float]: ...

    async def abort(self) -> None: ...


class Target(Protocol):
    """What a workload talks to: a server over the network, or the same services in-process."""

    name: str

    async def speech(self, text: str) -> SpeechSample: ...

    async def transcribe(self, wav: bytes, dialect: str | None) -> UploadSample: ...

    async def open_stream(self, dialect: str | None) -> StreamClient: ...

    async def aclose(self) -> None: ...


class ServeTarget:
    """``speechtrt serve`` over HTTP (httpx) and WebSocket (websockets)."""

    name = "serve"

    def __init__(self, url: str, api_key: str | None = None, connections: int = 128):
        import httpx

        self.url = url.rstrip("/")
        self.ws_url = "ws" + self.url.removeprefix("http") + "/v1/stream"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=300,
                                        limits=httpx.Limits(max_connections=connections,
                                                            max_keepalive_connections=connections))

    async def speech(self, text: str) -> SpeechSample:
        t0 = time.perf_counter()
        first, last, gaps, nbytes = None, None, [], 0
        try:
            async with self.client.stream("POST", "/v1/audio/speech", json={
                    "model": "tts", "input": text, "voice": "alloy", "response_format": "pcm"}) as r:
                if r.status_code != 200:
                    body = json.loads(await r.aread())
                    return SpeechSample(False, r.status_code, time.perf_counter() - t0,
                                        error=body.get("error", {}).get("message"))
                rate = int(r.headers.get("x-speechtrt-sample-rate", 22050))
                async for chunk in r.aiter_raw():
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    elif now - last > 1e-3:
                        gaps.append(now - last)
                    last = now
                    nbytes += len(chunk)
        except Exception as exc:  # connection reset, timeout: an error of this request, not of the run
            return SpeechSample(False, "error", time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
        end = time.perf_counter()
        return SpeechSample(True, 200, end - t0, (first or end) - t0, gaps, nbytes / 2 / rate)

    async def transcribe(self, wav: bytes, dialect: str | None) -> UploadSample:
        t0 = time.perf_counter()
        data = {"model": "whisper-1", "response_format": "json"}
        if dialect:
            data["dialect"] = dialect
        try:
            r = await self.client.post("/v1/audio/transcriptions", files={"file": ("u.wav", wav, "audio/wav")},
                                       data=data)
        except Exception as exc:
            return UploadSample(False, "error", time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
        dt = time.perf_counter() - t0
        body = r.json()
        if r.status_code != 200:
            return UploadSample(False, r.status_code, dt, error=body.get("error", {}).get("message"))
        info = body.get("speechtrt", {})
        return UploadSample(True, 200, dt, body["text"], info.get("model"), info.get("route"))

    async def open_stream(self, dialect: str | None) -> "WsStream":
        return await WsStream.open(self.ws_url, dialect, self.headers)

    async def aclose(self) -> None:
        await self.client.aclose()


class WsStream:
    """One WebSocket stream: float32 16 kHz frames out, partials and the final in (read by a task)."""

    def __init__(self, ws):
        self.ws = ws
        self.sent: list[tuple[int, float]] = []
        self.partials: list[tuple[float, float]] = []
        self.total = 0
        self.final: asyncio.Future = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, dialect: str | None, headers: dict) -> "WsStream":
        import websockets

        ws = await websockets.connect(url, additional_headers=headers, max_size=None, compression=None)
        await ws.send(json.dumps({"type": "start", "sample_rate": FEATURES.sample_rate, "encoding": "float32",
                                  "dialect": dialect}))
        try:
            msg = json.loads(await ws.recv())
        except websockets.ConnectionClosed as exc:
            raise Refused(exc.rcvd.code if exc.rcvd else "closed", str(exc)) from None
        if msg.get("type") != "started":
            await ws.close()
            raise Refused(1013, msg.get("error", {}).get("message", str(msg)))
        return cls(ws)

    async def _read(self) -> None:
        import websockets

        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg["type"] == "partial":
                    self.partials.append((time.perf_counter(), msg["end"]))
                elif msg["type"] == "final":
                    self.final.set_result((msg["text"], msg["samples"] / FEATURES.sample_rate))
                elif msg["type"] == "error" and not self.final.done():
                    self.final.set_exception(RuntimeError(msg["error"]["message"]))
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.final.done():
                self.final.set_exception(RuntimeError(f"closed with {self.ws.close_code} before the final"))

    async def send(self, samples: np.ndarray) -> None:
        await self.ws.send(samples.astype("<f4").tobytes())
        self.total += len(samples)
        self.sent.append((self.total, time.perf_counter()))

    async def finish(self) -> tuple[str, float | None]:
        await self.ws.send(json.dumps({"type": "end"}))
        try:
            return await self.final
        finally:
            await self.reader
            await self.ws.close()

    def partial_latencies(self) -> list[float]:
        return partial_latencies(self.sent, self.partials)

    async def abort(self) -> None:
        self.reader.cancel()
        await self.ws.close()


class InProcessTarget:
    """The same services the server runs (TTS workers, transcription batchers, stream engine), called directly."""

    name = "in-process"

    def __init__(self, state):
        self.state = state

    async def speech(self, text: str) -> SpeechSample:
        worker = next(iter(self.state.tts.values()))
        t0 = time.perf_counter()
        first, last, gaps, samples = None, None, [], 0
        try:
            parts = worker.stream(text, split="sentences", lead_chars=self.state.config.tts.lead_chars or None)
            async for audio in parts:
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    gaps.append(now - last)
                last = now
                samples += len(audio)
        except CapacityError as exc:
            return SpeechSample(False, "capacity", time.perf_counter() - t0, error=str(exc))
        end = time.perf_counter()
        return SpeechSample(True, "ok", end - t0, (first or end) - t0, gaps, samples / worker.sample_rate)

    async def transcribe(self, wav: bytes, dialect: str | None) -> UploadSample:
        from speechtrt.serve.openai_api import decode_upload

        t0 = time.perf_counter()
        samples = await asyncio.to_thread(decode_upload, wav, self.state.admission, "transcription")
        route = self.state.router.transcription("whisper-1", dialect)
        result = await asyncio.wrap_future(self.state.asr[route.model].submit(samples))
        return UploadSample(True, "ok", time.perf_counter() - t0, result.text, route.model, route.reason)

    async def open_stream(self, dialect: str | None) -> "LocalStream":
        route = self.state.router.stream(None, dialect)
        asr = self.state.streams[route.model]
        stream = LocalStream(asyncio.get_running_loop())
        try:
            stream.session = asr.open(stream.on_partial)
        except CapacityError as exc:
            raise Refused("capacity", str(exc)) from None
        return stream

    async def aclose(self) -> None:
        pass


class LocalStream:
    """A stream on the in-process engine; a partial is 'received' when the engine's callback delivers it."""

    def __init__(self, loop):
        self.loop = loop
        self.session = None
        self.sent: list[tuple[int, float]] = []
        self.partials: list[tuple[float, float]] = []
        self.total = 0

    def on_partial(self, p) -> None:  # the engine's thread
        self.partials.append((time.perf_counter(), p.end_s))

    async def send(self, samples: np.ndarray) -> None:
        from speechtrt.serve.streams import BackpressureError

        x = samples.astype(np.float32)
        self.total += len(x)
        self.sent.append((self.total, time.perf_counter()))
        while True:
            try:
                self.session.push(x)
                return
            except BackpressureError:
                await asyncio.sleep(0.005)

    async def finish(self) -> tuple[str, float | None]:
        final = await asyncio.wrap_future(self.session.finalize())
        return final.text, final.duration_s

    def partial_latencies(self) -> list[float]:
        return partial_latencies(self.sent, self.partials)

    async def abort(self) -> None:
        self.session.cancel()


def make_target(kind: str, url: str | None = None, state=None, api_key: str | None = None,
                connections: int = 128) -> Target:
    """The client for ``kind``: ``serve`` (a URL), ``in-process`` (a loaded ServerState), ``triton`` (a running
    Triton's gRPC host:port, :class:`speechtrt.bench.triton_target.TritonTarget`)."""
    if kind == "serve":
        return ServeTarget(url, api_key, connections)
    if kind == "in-process":
        return InProcessTarget(state)
    if kind == "triton":
        from speechtrt.bench.triton_target import TritonTarget

        return TritonTarget(url)
    raise InputError(f"unknown target {kind!r}: choose one of {', '.join(TARGETS)}")
