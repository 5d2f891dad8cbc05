"""The load test's Triton target: the same four coroutines as :class:`~speechtrt.bench.load_clients.ServeTarget`,
over Triton's KServe v2 API (gRPC) through :mod:`speechtrt.triton.client`.

Triton's models take what the repository's contract says, so the client side does what ``speechtrt serve`` does
inside the server: uploads are decoded and turned into log-mel features here (offline ASR: ``asr_<size>``,
Triton's dynamic batcher joins concurrent requests), and a stream's audio becomes 16-frame feature chunks sent
as one sequence over its own gRPC stream (START … END, the sequence batcher keeps the state on one instance). A
chunk is sent as soon as the audio that completes it arrived, so a chunk's response time is its partial latency.
TTS is the decoupled ``tts`` model (audio chunks, then the final flag).
"""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import torch

from speechtrt.bench.load_clients import Refused, SpeechSample, UploadSample
from speechtrt.models.audio import FEATURES, log_mel, log_mel_frames, read_audio, resample

CHUNK_FRAMES = 16
_sequence_ids = itertools.count(1)


def _refusal(exc: Exception) -> Exception:
    text = str(exc)
    if "exceeds" in text or "queue" in text.lower() or "unavailable" in text.lower():
        return Refused("triton", text)
    return exc


class TritonTarget:
    """A running Triton server with a speechtrt CPU repository (``grpc_url`` is host:port)."""

    name = "triton"

    def __init__(self, grpc_url: str, asr_model: str = "asr_small", sample_rate: int = 22050):
        from speechtrt.triton.client import TritonClient

        self.grpc_url = grpc_url
        self.asr_model = asr_model
        self.sample_rate = sample_rate  # of the TTS model's audio
        self.client = TritonClient(grpc_url, "grpc")

    async def speech(self, text: str) -> SpeechSample:
        from speechtrt.triton.client import TTSSession

        def run():
            with TTSSession(self.grpc_url) as session:
                return session.synthesize(text)

        try:
            audio = await asyncio.to_thread(run)
        except Exception as exc:  # a refusal or an error of this request only
            return SpeechSample(False, "error", error=str(exc)[:200])
        return SpeechSample(True, 200, audio.latency_s, audio.first_chunk_s, [],
                            len(audio.audio) / self.sample_rate)

    async def transcribe(self, wav: bytes, dialect: str | None) -> UploadSample:
        t0 = time.perf_counter()
        samples, rate = read_audio(wav)
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        samples = resample(samples, rate, FEATURES.sample_rate)
        feats = log_mel(samples).numpy()[None]
        try:
            result = await asyncio.to_thread(self.client.asr_batch, feats, np.array([feats.shape[1]]), self.asr_model)
        except Exception as exc:
            return UploadSample(False, "error", time.perf_counter() - t0, error=str(exc)[:200])
        return UploadSample(True, 200, time.perf_counter() - t0, result.texts[0], self.asr_model, "triton",
                            len(samples) / FEATURES.sample_rate)

    async def open_stream(self, dialect: str | None) -> "TritonStream":
        return await asyncio.to_thread(TritonStream, self.grpc_url)

    async def aclose(self) -> None:
        self.client.close()


class TritonStream:
    """One sequence: audio in, 160 ms feature chunks out on the sequence's gRPC stream."""

    def __init__(self, grpc_url: str):
        from speechtrt.triton.client import StreamingASRSession

        self.session = StreamingASRSession(grpc_url, next(_sequence_ids))
        self.samples = np.zeros(0, dtype=np.float32)
        self.sent_frames = 0
        self.latencies: list[float] = []
        self.pending = []

    def _window(self, frames: int) -> np.ndarray:
        """Features of the next ``frames`` frames (frame i covers samples [i·hop, i·hop + n_fft))."""
        start = self.sent_frames * FEATURES.hop
        span = (frames - 1) * FEATURES.hop + FEATURES.n_fft
        x = self.samples[start:start + span]
        if x.shape[0] < span:
            x = np.pad(x, (0, span - x.shape[0]))
        windows = torch.from_numpy(np.ascontiguousarray(x))[None].unfold(1, FEATURES.n_fft, FEATURES.hop)
        return log_mel_frames(windows, FEATURES)[0].numpy()

    def _ready_frames(self) -> int:
        return max(0, FEATURES.frames_for(self.samples.shape[0]) - self.sent_frames)

    async def send(self, samples: np.ndarray) -> None:
        self.samples = np.concatenate([self.samples, np.asarray(samples, dtype=np.float32)])
        # a chunk goes out once a frame beyond it exists, so the last frames always travel with END
        while self._ready_frames() > CHUNK_FRAMES:
            self.pending.append(self.session.send(self._window(CHUNK_FRAMES)))
            self.sent_frames += CHUNK_FRAMES

    async def finish(self) -> tuple[str, float | None]:
        rest = self._ready_frames()  # 1..16 frames, or 0 for a stream that never received a whole frame
        self.pending.append(self.session.send(self._window(max(rest, 1)), end=True))
        self.sent_frames += rest
        try:
            text = await asyncio.to_thread(self.session.finish)
            self.latencies = [r.latency_s for r in self.session.results()]
        finally:
            await asyncio.to_thread(self.session.close)
        return text, self.samples.shape[0] / FEATURES.sample_rate

    def partial_latencies(self) -> list[float]:
        return self.latencies

    async def abort(self) -> None:
        await asyncio.to_thread(self.session.close)
