"""Offline transcription: concurrent uploads batched into one model call (bounded wait, bounded batch).

One :class:`OfflineASR` per served model runs a thread that takes the oldest upload, waits up to ``max_wait_ms``
for more (up to ``max_batch`` uploads and ``max_batch_frames`` padded feature frames), computes their log-mel
features, pads them into one batch, runs the model's runner (from ``open_runner``) and decodes each row: CTC best
path (``greedy``), the lexicon pass (``lexicon``) or the n-gram beam search (``lm``, the evaluation's default weights).
Uploads are resampled to 16 kHz mono before they get here. A cancelled future (the client went away) is skipped if
it has not started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import torch

from speechtrt.models.audio import FEATURES, log_mel
from speechtrt.serve.metrics import ServerMetrics
from speechtrt.models.text import asr_encode
from speechtrt.serve.timing import OUTPUT_S, Word, emissions, segments_of, words_of

log = logging.getLogger("speechtrt.serve")


@dataclass(frozen=True)
class Transcript:
    text: str
    duration_s: float
    words: list[Word]  # empty when the decoder's words do not align one-to-one with the best path's
    segments: list[dict]  # OpenAI verbose_json segments
    model: str
    compute_s: float  # the batch's model + decode time
    batch: int  # uploads in that batch


@dataclass
class _Job:
    samples: np.ndarray  # float32 [N] at 16 kHz
    frames: int
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class OfflineASR:
    """Batched transcription with one model on one runner."""

    def __init__(self, name: str, runner, *, max_batch: int = 8, max_wait_ms: float = 20.0,
                 max_batch_frames: int = 12000, decoder=None, metrics: ServerMetrics | None = None):
        self.name = name
        self.runner = runner
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_batch_frames = max_batch_frames
        self.decoder = decoder  # None: greedy; else a callable (greedy text, log_probs [T', V]) -> text
        self.metrics = metrics
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._busy = 0
        self._thread: threading.Thread | None = None

    @property
    def queued(self) -> int:
        return len(self._jobs)

    @property
    def active(self) -> int:
        return self._busy

    def start(self) -> "OfflineASR":
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name=f"speechtrt-asr-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if hasattr(self.runner, "close"):
            self.runner.close()

    def submit(self, samples: np.ndarray) -> Future:
        """Queue 16 kHz mono float32 samples; the future resolves to a :class:`Transcript`."""
        job = _Job(np.ascontiguousarray(samples, dtype=np.float32), FEATURES.frames_for(len(samples)))
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def transcribe(self, samples: np.ndarray, timeout: float | None = None) -> Transcript:
        return self.submit(samples).result(timeout)

    # ---- the thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stop:
                    self._cond.wait()
                if self._stop and not self._jobs:
                    return
                batch = self._gather()
            if batch:
                self._run(batch)

    def _gather(self) -> list[_Job]:
        """Under the lock: the oldest live job, and the jobs that join it within its wait, in arrival order."""
        deadline = self._jobs[0].arrived + self.max_wait_s
        while len(self._jobs) < self.max_batch and not self._stop:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        batch, longest = [], 0
        while self._jobs and len(batch) < self.max_batch:
            job = self._jobs[0]
            longer = max(longest, job.frames)
            if batch and longer * (len(batch) + 1) > self.max_batch_frames:
                break
            self._jobs.popleft()
            if not job.future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            batch.append(job)
            longest = longer
        self._busy = len(batch)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        t0 = time.perf_counter()
        try:
            feats = [log_mel(j.samples) for j in batch]
            lengths = torch.tensor([max(1, f.shape[0]) for f in feats], dtype=torch.int64)
            x = torch.zeros(len(batch), int(lengths.max()), FEATURES.n_mels)
            for i, f in enumerate(feats):
                x[i, : f.shape[0]] = f
            out = self.runner.infer({"features": x, "feature_lengths": lengths})
            log_probs = out["log_probs"].float().cpu().numpy()  # [B, T', V]
            out_lengths = out["output_lengths"].cpu().numpy()
            results = []
            for i, job in enumerate(batch):
                lp = log_probs[i, : int(out_lengths[i])]
                emitted, _ = emissions(lp.argmax(-1))
                words = words_of(emitted)
                text = " ".join(w.word for w in words)
                if self.decoder is not None:
                    text, words = _retimed(words, self.decoder(text, lp))
                results.append((text, words, segments_of(words) if words else _one_segment(text, emitted)))
        except Exception as exc:  # a failed batch fails its uploads, not the server
            log.exception("transcription batch of %s failed", self.name)
            for job in batch:
                job.future.set_exception(exc)
            self._busy = 0
            return
        dt = time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.batch_size.labels(f"asr:{self.name}").observe(len(batch))
        self._busy = 0
        for job, (text, words, segments) in zip(batch, results):
            job.future.set_result(Transcript(text, len(job.samples) / FEATURES.sample_rate, words, segments,
                                             self.name, dt, len(batch)))


def _retimed(words: list[Word], decoded: str) -> tuple[str, list[Word]]:
    """A decoder's text with the best path's word timings when the word counts match (else no word timings)."""
    new = decoded.split()
    if len(new) == len(words):
        return decoded, [Word(n, w.start, w.end) for n, w in zip(new, words)]
    return decoded, []


def _one_segment(text: str, emitted: list[tuple[int, int]]) -> list[dict]:
    """One segment spanning the best path's first to last emission (when words carry no timing)."""
    if not text:
        return []
    start, end = (emitted[0][1], emitted[-1][1] + 1) if emitted else (0, 0)
    return [{"id": 0, "seek": 0, "start": round(start * OUTPUT_S, 3), "end": round(end * OUTPUT_S, 3),
             "text": text, "tokens": asr_encode(text)}]


def make_decoder(kind: str):
    """``greedy`` → None; ``lexicon`` → nearest training-lexicon word per word; ``lm`` → the evaluation's n-gram
    beam search (order 3, alpha 0.8, beta 3.0, beam 16)."""
    if kind == "greedy":
        return None
    if kind == "lexicon":
        from speechtrt.asr.decode import training_lexicon

        lexicon = training_lexicon()
        return lambda text, log_probs: lexicon.correct(text)
    if kind == "lm":
        from speechtrt.asr.lm import BeamConfig, ctc_beam_search, training_lm

        lm, beam = training_lm(order=3), BeamConfig(alpha=0.8, beta=3.0, beam=16)
        return lambda text, log_probs: ctc_beam_search(log_probs, lm, beam)
    raise ValueError(f"unknown decoder {kind!r}")
