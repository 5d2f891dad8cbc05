"""TTS serving: batched encoder → in-flight decoder steps over a KV-cache pool → vocoder.

One :class:`TTSService` owns a model's three runners (encoder, decoder step, vocoder), a
:class:`~speechtrt.runtime.kv_pool.KVCachePool` and a :class:`~speechtrt.runtime.scheduler.Scheduler`. Each
iteration (:meth:`TTSService.step`) admits queued requests between decode steps (their texts are encoded together in
one batch and their cross-attention K/V written into their slots), runs one decoder step over every active slot, and
hands requests that reached their frame budget or stop token to the vocoder. The vocoder runs on a worker thread —
and on a second CUDA stream on GPU — so it overlaps the next decode steps. Requests of equal length are vocoded in
one batch; different lengths never share a batch (the vocoder's transposed convolutions would leak padding into the
last samples), so every output equals the request synthesized alone.

Text handling (all documented behaviour, see :func:`split_text`): a text is normalised once and each part tokenised
once, at :meth:`TTSService.submit`, by the model's tokenizer (:func:`~speechtrt.models.text.tokenizer_of`); the
scheduler carries the resulting :class:`TextPart` to the encoder.

* empty or whitespace-only text → :class:`~speechtrt.errors.InputError`;
* non-ASCII: typographic characters map to ASCII, decomposable accents are dropped, other Latin-1 characters are
  kept (the seed's byte vocabulary) and anything beyond Latin-1 is refused naming the characters
  (:func:`speechtrt.models.text.tts_tokens`);
* text longer than one slot holds (``max_text`` tokens, or more frames than ``max_frames``) is split at sentence
  boundaries into parts decoded as separate requests and concatenated; with ``long_text="refuse"``, or when a single
  sentence is still too long, it is refused with the maximum stated;
* ``submit(..., split="sentences")`` cuts at every sentence boundary instead, and ``lead_chars`` also cuts a short
  lead off the first sentence (:func:`lead_split`; a streaming caller hears it as soon as it is vocoded);
  ``on_part`` is called with each part's audio as it is ready.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.config import FrameRule, TTSConfig
from speechtrt.errors import CapacityError, InputError
from speechtrt.export.components import component
from speechtrt.models.text import tokenizer_of
from speechtrt.runtime.kv_pool import KVCachePool, PoolShape, slots_for_budget
from speechtrt.runtime.open import Artifacts, open_runner
from speechtrt.runtime.runner import TORCH_DTYPES, Runner, RunnerDecoderStep
from speechtrt.runtime.scheduler import DecodeRequest, Scheduler, SchedulerConfig
from speechtrt.vocab import check_backend, check_precision

_log = logging.getLogger("speechtrt.tts")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_CLAUSE_END = re.compile(r"(?<=[,:])\s+")


@dataclass(frozen=True)
class ServiceConfig:
    """How a TTS service runs. ``max_slots=None`` derives the slot count from ``kv_budget_mb``."""

    backend: str = "torch"  # torch | ort | trt
    precision: str = "fp32"  # fp32 | fp16 | bf16 (torch) | int8 (ort/trt graphs from `speechtrt calibrate`)
    device: str = "cpu"
    max_slots: int | None = 16
    kv_budget_mb: float = 1024.0
    max_frames: int = 1000
    max_text: int = 512
    max_queue: int = 1024
    max_admit_per_step: int | None = None
    frame_rule: FrameRule | None = FrameRule()  # None: decode until the stop token (trained models)
    stop_threshold: float = 0.5
    long_text: str = "split"  # split | refuse
    overlap_vocoder: bool = True
    cuda_graphs: bool = True
    onnx_dir: str = "out/onnx"
    engine_dir: str = "engines"
    threads: int | None = None  # ONNX Runtime intra-op threads (None: its default)


@dataclass
class TTSResult:
    request_id: str
    text: str
    audio: np.ndarray  # [samples] float32
    mel: np.ndarray  # [frames, mel_dim] float32
    frames: int
    latency_s: float  # submit → audio ready
    finish_reason: str
    parts: int = 1

    def rtf(self, sample_rate: int) -> float:
        """Latency over audio duration (the seed's definition)."""
        return self.latency_s / max(len(self.audio) / sample_rate, 1e-12)


@dataclass(frozen=True)
class TextPart:
    """One decoder request's text, as the scheduler carries it: normalised once, tokenised once."""

    handle: "TTSHandle"
    index: int  # position of this part in its request
    text: str  # normalised
    tokens: tuple[int, ...]


@dataclass(eq=False)
class TTSHandle:
    """A submitted text: its parts (decoder requests) and a future for the result."""

    request_id: str
    text: str
    parts: list[DecodeRequest]
    submitted_at: float
    future: Future = field(default_factory=Future)
    on_part: "Callable[[int, np.ndarray], None] | None" = None  # (part index, audio [samples]) on the vocoder thread
    _audio: dict = field(default_factory=dict)  # part index -> (mel, audio)
    _pending_parts: int = 0

    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> TTSResult:
        return self.future.result(timeout)


def lead_split(sentence: str, lead_chars: int) -> list[str]:
    """``[lead, rest]``: the sentence cut at its first word boundary at or after ``lead_chars`` characters (at a clause
    boundary, ``,`` or ``:``, when one comes before twice that), or ``[sentence]`` when nothing would be left. The
    first part of a streamed request is its lead: parts decode concurrently, so a short lead is heard first."""
    clause = next((m.start() for m in _CLAUSE_END.finditer(sentence) if lead_chars <= m.start() <= 2 * lead_chars),
                  None)
    word = next((i for i in range(lead_chars, len(sentence)) if sentence[i] == " "), None)
    cut = clause if clause is not None else word
    if cut is None or not sentence[cut:].strip():
        return [sentence]
    return [sentence[:cut], sentence[cut:].lstrip()]


def split_text(text: str, max_chars: int) -> list[str]:
    """Greedily pack sentences (split after ``. ! ? ;``) of a normalised ``text`` into parts of at most
    ``max_chars`` characters.

    Raises InputError naming the maximum when one sentence alone is longer.
    """
    parts: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text):
        if len(sentence) > max_chars:
            raise InputError(f"a sentence of {len(sentence)} characters exceeds the maximum of {max_chars} per "
                             f"request and has no sentence boundary to split at: {sentence[:40]!r}...")
        candidate = f"{current} {sentence}" if current else sentence
        if len(candidate) <= max_chars:
            current = candidate
        else:
            parts.append(current)
            current = sentence
    if current:
        parts.append(current)
    return parts


class TTSService:
    """In-flight TTS over one backend. Not thread-safe for stepping; ``submit`` and ``cancel`` may come from others."""

    def __init__(self, model, config: ServiceConfig = ServiceConfig(), *, encoder: Runner | None = None,
                 vocoder: Runner | None = None):
        """``encoder`` / ``vocoder``: runners to use instead of opening them on ``config.backend`` (a serving layer
        that reaches those graphs elsewhere, e.g. Triton's BLS calls to its own encoder and vocoder models)."""
        check_backend(config.backend)
        check_precision(config.precision, config.backend)
        if config.long_text not in ("split", "refuse"):
            raise InputError(f"long_text must be 'split' or 'refuse', got {config.long_text!r}")
        self.config = config
        self.model_config: TTSConfig = model.config
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda asked for, but CUDA is not available here; use --device cpu")
        max_text = min(config.max_text, self.model_config.max_text_len)
        max_frames = min(config.max_frames, self.model_config.max_frames)
        self.tokenizer = tokenizer_of(model)
        self.encoder, self.decoder, self.vocoder, kv_dtype = _open_runners(model, config, encoder, vocoder)
        slots = config.max_slots or slots_for_budget(self.model_config, int(config.kv_budget_mb * 2**20),
                                                     max_frames, max_text, kv_dtype)
        self.pool = KVCachePool(PoolShape.for_model(self.model_config, slots, max_frames, max_text), kv_dtype,
                                self.device)
        self.scheduler = Scheduler(SchedulerConfig(slots, max_frames, max_text, config.max_queue,
                                                   config.max_admit_per_step, config.stop_threshold))
        if config.backend == "torch" and self.device.type == "cuda" and config.cuda_graphs:
            from speechtrt.runtime.torch_cuda import GraphedDecoderStep

            self.decoder = GraphedDecoderStep(model, self.pool, TORCH_DTYPES[config.precision])
        self._lock = threading.Lock()
        self._handles: dict[str, TTSHandle] = {}
        self._next_id = 0
        self._vocoder_pool = ThreadPoolExecutor(1, thread_name_prefix="vocoder") if config.overlap_vocoder else None
        self._vocoder_jobs: list[Future] = []
        self._side_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.step_times_s: list[float] = []

    # ---- requests

    def frames_for(self, text: str) -> int:
        rule = self.config.frame_rule
        return rule.frames_for_text(len(text)) if rule else self.pool.shape.max_frames

    def _fits(self, n_chars: int) -> bool:
        rule = self.config.frame_rule
        frames = rule.frames_for_text(n_chars) if rule else 1
        return n_chars <= self.pool.shape.max_text and frames <= self.pool.shape.max_frames

    def _parts_of(self, text: str, n_frames: int | None = None, split: str = "fit",
                  lead_chars: int | None = None) -> list[str]:
        """The normalised text cut into parts one slot holds (see the module docstring)."""
        if split not in ("fit", "sentences"):
            raise InputError(f"split must be 'fit' or 'sentences', got {split!r}")
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        norm = self.tokenizer.normalize(text)
        if not norm:
            raise InputError("text is empty (or only whitespace): give at least one character to synthesize")
        if n_frames is not None:  # an explicit length is one request; the scheduler refuses it if it cannot fit
            return [norm]
        sentences = _SENTENCE_END.split(norm) if split == "sentences" else [norm]
        if split == "sentences" and lead_chars:
            sentences = lead_split(sentences[0], lead_chars) + sentences[1:]
        if len(sentences) == 1 and self._fits(len(norm)) and self._fits(len(text)):
            return [norm]
        max_chars = next((c for c in range(self.pool.shape.max_text, 0, -1) if self._fits(c)), 0)
        if self.config.long_text == "refuse" or max_chars == 0:
            raise InputError(f"text has {len(norm)} characters; the maximum per request is {max_chars} "
                             f"({self.pool.shape.max_text} tokens, {self.pool.shape.max_frames} frames); "
                             "shorten it or allow splitting at sentence boundaries")
        if split == "sentences":
            return [part for sentence in sentences for part in split_text(sentence, max_chars)]
        return split_text(norm, max_chars)

    def submit(self, text: str, n_frames: int | None = None, request_id: str | None = None, *,
               split: str = "fit", lead_chars: int | None = None,
               on_part: Callable[[int, np.ndarray], None] | None = None) -> TTSHandle:
        """Queue ``text``; returns a handle whose ``result()`` is a :class:`TTSResult`.

        ``n_frames`` overrides the frame rule for a single-part text. ``split="sentences"`` makes every sentence its
        own part, and with ``lead_chars`` the first sentence's lead (:func:`lead_split`) a part of its own;
        ``on_part(index, audio)`` is called (on the vocoder thread, parts in any order) as each part's audio is
        ready. Raises InputError for bad text and CapacityError when the queue cannot take every part.
        """
        parts_text = self._parts_of(text, n_frames, split, lead_chars)
        tokens = [tuple(self.tokenizer.tokens(part)) for part in parts_text]  # unsupported characters → InputError
        with self._lock:
            if self.scheduler.num_queued + len(parts_text) > self.config.max_queue:
                raise CapacityError(f"request refused: the queue is full ({self.scheduler.num_queued} of "
                                    f"{self.config.max_queue} waiting); retry later or raise max_queue")
            if request_id is None:
                request_id = f"tts-{self._next_id}"
                self._next_id += 1
            if request_id in self._handles:
                raise InputError(f"request id {request_id!r} is already in flight")
            handle = TTSHandle(request_id, text, [], time.perf_counter(), on_part=on_part)
            for i, part in enumerate(parts_text):
                if len(parts_text) == 1:  # the seed's rule counts the characters of the text as given
                    frames = n_frames if n_frames is not None else self.frames_for(text)
                else:
                    frames = self.frames_for(part)
                req = DecodeRequest(
                    text_len=len(tokens[i]), frame_budget=frames, use_stop=self.config.frame_rule is None,
                    request_id=f"{request_id}/{i}", payload=TextPart(handle, i, part, tokens[i]),
                )
                self.scheduler.submit(req)
                handle.parts.append(req)
            handle._pending_parts = len(handle.parts)
            self._handles[request_id] = handle
        return handle

    def cancel(self, request_id: str) -> bool:
        """Cancel every part of a request; its future raises CancelledError. False when unknown or finished."""
        with self._lock:
            handle = self._handles.get(request_id)
            if handle is None or handle.done():
                return False
            for req in handle.parts:
                self.scheduler.cancel(req.request_id)
            self._handles.pop(request_id, None)
            handle.future.cancel()
            return True

    def abort_all(self, exc: BaseException) -> int:
        """Cancel every request in flight; their futures raise ``exc`` (a failed step must not strand them)."""
        with self._lock:
            handles = list(self._handles.values())
            for handle in handles:
                for req in handle.parts:
                    self.scheduler.cancel(req.request_id)
                if not handle.future.done():
                    handle.future.set_exception(exc)
            self._handles.clear()
        return len(handles)

    # ---- the loop

    @property
    def idle(self) -> bool:
        return self.scheduler.idle and not any(not f.done() for f in self._vocoder_jobs)

    def step(self) -> bool:
        """One iteration: admit, decode one frame for every active slot, retire finished requests.

        Returns True while requests are queued or decoding.
        """
        t0 = time.perf_counter()
        with self._lock:
            plan = self.scheduler.schedule()
        for _, slot in plan.evicted:
            self.pool.release(slot)
        for move in plan.moves:
            self.pool.move(move.src, move.dst)
        if plan.admitted:
            self._encode(plan.admitted)
        n = len(plan.active)
        if n == 0:
            with self._lock:
                return not self.scheduler.idle
        self.decoder.step(self.pool, n)
        stop_flags = None
        if self.config.frame_rule is None:
            stop_flags = (self.pool.stop_prob[:n] > self.config.stop_threshold).tolist()
        elif self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # step time measures the step, not the launch
        with self._lock:
            outcome = self.scheduler.record_step(stop_flags, time.perf_counter() - t0)
        self.step_times_s.append(time.perf_counter() - t0)
        if outcome.finished:
            self._retire(outcome.finished)
        for _, slot in outcome.finished:
            self.pool.release(slot)
        for move in outcome.moves:
            self.pool.move(move.src, move.dst)
        with self._lock:
            return not self.scheduler.idle

    def run_until_idle(self, timeout_s: float | None = None) -> None:
        """Step until nothing is queued or decoding and every vocoder job has finished."""
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        while self.step():
            if deadline is not None and time.perf_counter() > deadline:
                raise TimeoutError(f"service still busy after {timeout_s} s")
        for job in list(self._vocoder_jobs):
            job.result()
        self._vocoder_jobs = [j for j in self._vocoder_jobs if not j.done()]

    def synthesize(self, text: str, n_frames: int | None = None) -> TTSResult:
        """Synthesize one text now (alongside whatever else is in flight)."""
        handle = self.submit(text, n_frames=n_frames)
        self.run_until_idle()
        return handle.result()

    def synthesize_batch(self, texts: list[str]) -> list[TTSResult]:
        handles = [self.submit(t) for t in texts]
        self.run_until_idle()
        return [h.result() for h in handles]

    def close(self) -> None:
        if self._vocoder_pool is not None:
            self._vocoder_pool.shutdown(wait=True)
        for r in (self.encoder, self.vocoder, getattr(self.decoder, "runner", None)):
            if r is not None and hasattr(r, "close"):
                r.close()

    # ---- stages

    def _encode(self, admitted: list[DecodeRequest]) -> None:
        """Encode the texts that join this step in one padded batch; write their cross K/V into their slots."""
        ids = [req.payload.tokens for req in admitted]
        longest = max(len(x) for x in ids)
        tokens = torch.zeros(len(ids), longest, dtype=torch.int64)
        for j, x in enumerate(ids):
            tokens[j, : len(x)] = torch.tensor(x)
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.int64)
        out = self.encoder.infer({"tokens": tokens.to(self.device), "text_lengths": lengths.to(self.device)})
        self.pool.load([req.slot for req in admitted], out["cross_k"], out["cross_v"], lengths.tolist())

    def _retire(self, finished: list[tuple[DecodeRequest, int]]) -> None:
        """Copy finished requests' mel out of the pool (before their slots are reused) and vocode them."""
        groups: dict[int, list[tuple[DecodeRequest, torch.Tensor]]] = {}
        for req, slot in finished:
            groups.setdefault(req.frames, []).append((req, self.pool.mel_of(slot, req.frames)))
        for items in groups.values():
            mel = torch.stack([m for _, m in items])  # [b, T, M]
            reqs = [r for r, _ in items]
            if self._vocoder_pool is None:
                self._vocode(reqs, mel, None)
                continue
            event = None
            if self._side_stream is not None:
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(self.device))
            self._vocoder_jobs.append(self._vocoder_pool.submit(self._vocode, reqs, mel, event))
        self._vocoder_jobs = [j for j in self._vocoder_jobs if not j.done()]

    def _vocode(self, reqs: list[DecodeRequest], mel: torch.Tensor, event) -> None:
        try:
            if self._side_stream is not None:
                with torch.cuda.stream(self._side_stream):
                    if event is not None:
                        self._side_stream.wait_event(event)
                    audio = self.vocoder.infer({"mel": mel}, stream=self._side_stream)["audio"]
                    audio_np = audio.float().cpu().numpy()
                self._side_stream.synchronize()
            else:
                audio_np = self.vocoder.infer({"mel": mel})["audio"].float().numpy()
            mel_np = mel.float().cpu().numpy()
        except BaseException as exc:  # surface the failure on every affected future
            for req in reqs:
                handle = req.payload.handle
                if not handle.future.done():
                    handle.future.set_exception(exc)
            raise
        for j, req in enumerate(reqs):
            handle, index = req.payload.handle, req.payload.index
            if handle.future.cancelled():
                continue
            handle._audio[index] = (mel_np[j], audio_np[j], req.finish_reason)
            handle._pending_parts -= 1
            if handle.on_part is not None:
                try:
                    handle.on_part(index, audio_np[j])
                except Exception:  # a listener that went away must not stall the other parts and requests
                    _log.exception("on_part listener of %s failed", handle.request_id)
            if handle._pending_parts == 0 and not handle.future.done():
                self._complete(handle)

    def _complete(self, handle: TTSHandle) -> None:
        order = sorted(handle._audio)
        mel = np.concatenate([handle._audio[i][0] for i in order])
        audio = np.concatenate([handle._audio[i][1] for i in order])
        reason = handle._audio[order[-1]][2] or "frame_budget"
        result = TTSResult(handle.request_id, handle.text, audio.astype(np.float32), mel.astype(np.float32),
                           mel.shape[0], time.perf_counter() - handle.submitted_at, reason, len(order))
        with self._lock:
            self._handles.pop(handle.request_id, None)
        if not handle.future.cancelled():
            handle.future.set_result(result)


def _open_runners(model, config: ServiceConfig, encoder: Runner | None = None, vocoder: Runner | None = None):
    """Encoder, decoder step and vocoder of ``model`` on the configured backend (those not given), and the KV pool's
    dtype."""
    artifacts = Artifacts(onnx_dir=Path(config.onnx_dir), engine_dir=Path(config.engine_dir), model=model,
                          model_name=getattr(model, "name", None))
    comps = {n: component(n, model.config) for n in ("tts_encoder", "tts_decoder_step", "tts_vocoder")}

    def open_(name):
        return open_runner(comps[name], config.backend, config.precision, config.device, artifacts,
                           threads=config.threads)

    encoder = encoder if encoder is not None else open_("tts_encoder")
    vocoder = vocoder if vocoder is not None else open_("tts_vocoder")
    if config.backend == "torch" and torch.device(config.device).type == "cuda" and config.cuda_graphs:
        # the step is captured on the pool as CUDA graphs (see TTSService.__init__), not run as a runner
        return encoder, None, vocoder, TORCH_DTYPES[config.precision]
    step = open_("tts_decoder_step")
    return encoder, RunnerDecoderStep(step), vocoder, step.dtype_of("past_k_0")
