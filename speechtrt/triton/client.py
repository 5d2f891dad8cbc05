"""Clients of a speechtrt model repository on Triton, one per load shape: offline ASR batches, streaming ASR
sequences, TTS. What a load generator (``speechtrt loadtest --target triton``), a test or an application drives.

* :class:`TritonClient` — unary calls over HTTP or gRPC (KServe v2): :meth:`~TritonClient.asr_batch` (padded
  features of a batch of utterances → log-probs, lengths, greedy transcripts) and :meth:`~TritonClient.stream_step`
  (one chunk of one sequence, with its START/END flags: the sequence batcher's contract over either protocol).
  A gRPC client may be shared by threads; an HTTP client is made with ``concurrency`` connections.
* :class:`StreamingASRSession` — one sequence over its own gRPC bidirectional stream: chunks are sent without
  waiting (START on the first, END on the last), responses come back in order, each with its latency.
* :class:`TTSSession` — one gRPC stream to the decoupled ``tts`` model: the audio arrives as chunks, then the final
  flag; the time to the first chunk and to the end are measured.

A stream carries one sequence (or one TTS request at a time) because tritonclient reports a streamed error without
its request id: on a stream of its own, an error belongs to the oldest request in flight.

Wire contract (the repository's, both kinds): ``asr_<size>``: ``features [B, T, 80]`` FP32 + ``feature_lengths
[B, 1]`` INT64 → ``log_probs [B, ceil(T/4), V]``, ``output_lengths [B, 1]``. ``asr_stream_step``: ``features
[1, T, 80]`` + sequence id/START/END → ``log_probs [1, ceil(T/4), V]``. ``tts``: ``text`` BYTES [1] (+ optional
``n_frames`` INT32 [1]) → ``audio`` FP32 chunks.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from speechtrt.errors import SpeechTRTError

PROTOCOLS = ("http", "grpc")
STREAM_MODEL = "asr_stream_step"
CHUNK_FRAMES = 16  # the streaming model's chunk: 160 ms of 10 ms frames (a multiple of its stride 4)


class TritonRequestError(SpeechTRTError):
    """Triton answered a request with an error (its message is kept)."""


def _client_module(protocol: str):
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise SpeechTRTError(f"unknown protocol {protocol!r}: choose http or grpc")
    return module


def _input(module, name: str, array: np.ndarray, datatype: str):
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def greedy_text(log_probs: np.ndarray, length: int | None = None) -> str:
    """CTC best-path transcript of one utterance's ``log_probs [T, V]`` (its first ``length`` frames)."""
    from speechtrt.asr.decode import greedy_batch

    n = log_probs.shape[0] if length is None else int(length)
    return greedy_batch(log_probs[None], np.array([n]))[0]


def pad_features(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Utterances' features ``[T_i, 80]`` as one zero-padded batch ``[B, T_max, 80]`` and lengths ``[B]``."""
    lengths = np.array([len(f) for f in features], dtype=np.int64)
    batch = np.zeros((len(features), int(lengths.max()), features[0].shape[1]), dtype=np.float32)
    for i, f in enumerate(features):
        batch[i, : len(f)] = f
    return batch, lengths


@dataclass
class AsrBatchResult:
    log_probs: np.ndarray  # [B, T', V]
    output_lengths: np.ndarray  # [B]
    texts: list[str]
    latency_s: float


class TritonClient:
    """Unary requests to one server over ``protocol`` (``url`` is host:port of that protocol's endpoint)."""

    def __init__(self, url: str, protocol: str = "grpc", timeout_s: float = 60.0, concurrency: int = 1):
        self.protocol = protocol
        self.module = _client_module(protocol)
        self.timeout_s = timeout_s
        if protocol == "http":
            self.client = self.module.InferenceServerClient(url, concurrency=concurrency,
                                                            network_timeout=timeout_s, connection_timeout=timeout_s)
        else:
            self.client = self.module.InferenceServerClient(url)

    def ready(self) -> bool:
        try:
            return bool(self.client.is_server_ready())
        except Exception:  # not up yet: connection refused, reset, ...
            return False

    def model_config(self, model: str) -> dict:
        if self.protocol == "http":
            return self.client.get_model_config(model)
        return self.client.get_model_config(model, as_json=True)["config"]

    def _infer(self, model: str, inputs, outputs: list[str], **kwargs):
        from tritonclient.utils import InferenceServerException

        requested = [self.module.InferRequestedOutput(n) for n in outputs]
        try:
            if self.protocol == "http":
                return self.client.infer(model, inputs, outputs=requested, timeout=int(self.timeout_s * 1e6), **kwargs)
            return self.client.infer(model, inputs, outputs=requested, client_timeout=self.timeout_s, **kwargs)
        except InferenceServerException as exc:
            raise TritonRequestError(f"{model}: {exc.message() or exc}") from exc
        except OSError as exc:  # HTTP: refused, reset (gRPC reports these as InferenceServerException)
            raise TritonRequestError(f"{model}: cannot reach the server ({exc})") from exc

    def asr_batch(self, features: np.ndarray, lengths: np.ndarray, model: str = "asr_small") -> AsrBatchResult:
        """Offline ASR of a padded batch ``features [B, T, 80]`` with ``lengths [B]``."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1, 1)
        t0 = time.perf_counter()
        result = self._infer(model, [_input(self.module, "features", features, "FP32"),
                                     _input(self.module, "feature_lengths", lengths, "INT64")],
                             ["log_probs", "output_lengths"])
        latency = time.perf_counter() - t0
        log_probs, out_lengths = result.as_numpy("log_probs"), result.as_numpy("output_lengths").reshape(-1)
        texts = [greedy_text(lp, n) for lp, n in zip(log_probs, out_lengths)]
        return AsrBatchResult(log_probs, out_lengths, texts, latency)

    def stream_step(self, sequence_id: int, chunk: np.ndarray, start: bool = False, end: bool = False,
                    model: str = STREAM_MODEL) -> np.ndarray:
        """One chunk ``[T, 80]`` of sequence ``sequence_id`` → its ``log_probs [ceil(T/4), V]``."""
        chunk = np.ascontiguousarray(np.asarray(chunk, dtype=np.float32).reshape(1, -1, chunk.shape[-1]))
        result = self._infer(model, [_input(self.module, "features", chunk, "FP32")], ["log_probs"],
                             sequence_id=sequence_id, sequence_start=start, sequence_end=end)
        return result.as_numpy("log_probs")[0]

    def transcribe_stream(self, sequence_id: int, features: np.ndarray, chunk_frames: int = CHUNK_FRAMES,
                          model: str = STREAM_MODEL) -> str:
        """One utterance's ``features [T, 80]`` as a sequence of chunks, unary calls; the final transcript."""
        chunks = split_chunks(features, chunk_frames)
        outs = [self.stream_step(sequence_id, c, start=i == 0, end=i == len(chunks) - 1, model=model)
                for i, c in enumerate(chunks)]
        return greedy_text(np.concatenate(outs))

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def split_chunks(features: np.ndarray, chunk_frames: int = CHUNK_FRAMES) -> list[np.ndarray]:
    """``features [T, 80]`` cut into chunks of ``chunk_frames`` (a multiple of 4); the last may be shorter."""
    if chunk_frames <= 0 or chunk_frames % 4:
        raise SpeechTRTError(f"chunks of {chunk_frames} frames: the streaming model needs a positive multiple of 4")
    if len(features) == 0:
        raise SpeechTRTError("no feature frames to stream")
    return [features[i:i + chunk_frames] for i in range(0, len(features), chunk_frames)]


# ---------------------------------------------------------------- gRPC streams


@dataclass
class _InFlight:
    future: Future
    sent_at: float
    decoupled: bool
    parts: list = field(default_factory=list)
    first_at: float | None = None


class _Stream:
    """One gRPC client with one bidirectional stream; responses are matched to requests in order (see module)."""

    def __init__(self, url: str, timeout_s: float):
        import tritonclient.grpc as grpcclient

        self.module = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self.in_flight: "queue.SimpleQueue[_InFlight]" = queue.SimpleQueue()
        self.head: _InFlight | None = None
        self.lock = threading.Lock()
        self.client.start_stream(callback=self._on_response, stream_timeout=None)
        self.timeout_s = timeout_s

    def send(self, model: str, inputs, decoupled: bool = False, **kwargs) -> Future:
        pending = _InFlight(Future(), time.perf_counter(), decoupled)
        with self.lock:
            self.in_flight.put(pending)
            self.client.async_stream_infer(model, inputs, enable_empty_final_response=decoupled, **kwargs)
        return pending.future

    def _on_response(self, result, error) -> None:
        now = time.perf_counter()
        if self.head is None:
            try:
                self.head = self.in_flight.get_nowait()
            except queue.Empty:
                return
        pending = self.head
        if pending.first_at is None:
            pending.first_at = now
        if error is not None:
            self.head = None
            pending.future.set_exception(TritonRequestError(error.message() or str(error)))
            return
        if pending.decoupled:
            params = result.get_response().parameters
            final = params["triton_final_response"].bool_param if "triton_final_response" in params else False
            if result.get_response().outputs:
                pending.parts.append((now, result))
            if not final:
                return
            self.head = None
            pending.future.set_result((pending.sent_at, pending.first_at, now, pending.parts))
            return
        self.head = None
        pending.future.set_result((pending.sent_at, now, result))

    def close(self, cancel: bool = False) -> None:
        try:
            self.client.stop_stream(cancel_requests=cancel)
        finally:
            self.client.close()


@dataclass
class StepResult:
    log_probs: np.ndarray  # [T', V]
    latency_s: float  # send → response


class StreamingASRSession:
    """One streaming-ASR sequence over its own gRPC stream.

    ``send(chunk)`` returns at once with a future of :class:`StepResult`; the first chunk carries START and the one
    sent with ``end=True`` carries END. :meth:`finish` waits for every response and returns the transcript.
    """

    def __init__(self, url: str, sequence_id: int, model: str = STREAM_MODEL, timeout_s: float = 60.0):
        if sequence_id <= 0:
            raise SpeechTRTError(f"sequence ids are positive integers, got {sequence_id}")
        self.sequence_id = sequence_id
        self.model = model
        self.timeout_s = timeout_s
        self.stream = _Stream(url, timeout_s)
        self.futures: list[Future] = []
        self.ended = False

    def send(self, chunk: np.ndarray, end: bool = False) -> Future:
        if self.ended:
            raise SpeechTRTError(f"sequence {self.sequence_id} has ended; open a new session")
        chunk = np.ascontiguousarray(np.asarray(chunk, dtype=np.float32).reshape(1, -1, chunk.shape[-1]))
        raw = self.stream.send(self.model, [_input(self.stream.module, "features", chunk, "FP32")],
                               sequence_id=self.sequence_id, sequence_start=not self.futures, sequence_end=end)
        out: Future = Future()

        def done(f: Future) -> None:
            if f.exception() is not None:
                out.set_exception(f.exception())
                return
            sent, at, result = f.result()
            out.set_result(StepResult(result.as_numpy("log_probs")[0], at - sent))

        raw.add_done_callback(done)
        self.futures.append(out)
        self.ended = end
        return out

    def results(self) -> list[StepResult]:
        return [f.result(self.timeout_s) for f in self.futures]

    def finish(self) -> str:
        """Wait for every chunk's response; the transcript of the whole sequence."""
        return greedy_text(np.concatenate([r.log_probs for r in self.results()]))

    def close(self) -> None:
        self.stream.close()


@dataclass
class TTSAudio:
    audio: np.ndarray  # [samples] float32
    chunks: int
    first_chunk_s: float  # request sent → first audio chunk
    latency_s: float  # request sent → final flag


class TTSSession:
    """Requests to the decoupled ``tts`` model over one gRPC stream, one at a time (use a session per caller)."""

    def __init__(self, url: str, model: str = "tts", timeout_s: float = 120.0):
        self.model = model
        self.timeout_s = timeout_s
        self.stream = _Stream(url, timeout_s)

    def submit(self, text: str, n_frames: int | None = None) -> Future:
        m = self.stream.module
        inputs = [_input(m, "text", np.array([text.encode("utf-8")], dtype=np.object_), "BYTES")]
        if n_frames is not None:
            inputs.append(_input(m, "n_frames", np.array([n_frames], dtype=np.int32), "INT32"))
        return self.stream.send(self.model, inputs, decoupled=True)

    def synthesize(self, text: str, n_frames: int | None = None) -> TTSAudio:
        sent, first, end, parts = self.submit(text, n_frames).result(self.timeout_s)
        pieces = [r.as_numpy("audio") for _, r in parts]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return TTSAudio(audio, len(pieces), (parts[0][0] if parts else end) - sent, end - sent)

    def close(self) -> None:
        self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
