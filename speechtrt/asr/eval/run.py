"""Running a variant: length-bucketed padded batches, timed after one warm-up batch; and the seed's per-utterance
loop on the same utterances, so the batched speed-up is measured, not assumed.

Timing: compute = forward + greedy decode, summed over batches after one untimed warm-up batch. An utterance's
latency is the time of the batch that carried it (what a caller waiting for that transcript sees in offline batch
mode). Memory: the resident-set high-water mark of the variant's run (CPU), or the CUDA allocator's peak on a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechtrt.asr.decode import greedy_batch
from speechtrt.asr.eval.inputs import Prepared, buckets_of, pad_batch
from speechtrt.asr.eval.variants import CTCForward
from speechtrt.asr.lm import SEARCH_COLUMNS
from speechtrt.asr.metrics import score_pair
from speechtrt.models.audio import FEATURES, log_mel, read_wav, resample
from speechtrt.reporting import UsageSampler


@dataclass
class VariantRun:
    hypotheses: list[str]  # greedy, per prepared utterance
    log_probs: list[np.ndarray] | None  # per utterance [T', 1 + alphabet] (the columns the beam search reads)
    latency_s: list[float]  # per prepared utterance: its batch's compute time
    compute_s: float
    batches: int
    peak_memory_mb: float


def _search_positions(columns: np.ndarray | None) -> np.ndarray:
    """Where the columns the beam search reads sit in a forward's output (trimmed or full classifier)."""
    if columns is None:
        return SEARCH_COLUMNS
    return np.array([list(columns).index(c) for c in SEARCH_COLUMNS])


def run_batched(forward: CTCForward, prepared: list[Prepared], batch_frames: int, keep_log_probs: bool = False
                ) -> VariantRun:
    """Length-bucketed batches through ``forward`` with one untimed warm-up batch; greedy transcripts per utterance
    (and, with ``keep_log_probs``, each utterance's log-probabilities for a later beam search, kept untimed)."""
    batches = buckets_of(prepared, batch_frames)
    columns = forward.columns
    search = _search_positions(columns)
    hyps = [""] * len(prepared)
    kept: list[np.ndarray] | None = [None] * len(prepared) if keep_log_probs else None
    latency = [0.0] * len(prepared)
    x, n = pad_batch([prepared[i].features for i in batches[len(batches) // 2]])
    forward(x, n)  # warm-up
    total = 0.0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with UsageSampler(device) as usage:
        for ids in batches:
            x, n = pad_batch([prepared[i].features for i in ids])
            t0 = time.perf_counter()
            log_probs, out_lengths = forward(x, n)
            texts = greedy_batch(log_probs, out_lengths, columns)
            dt = time.perf_counter() - t0
            total += dt
            for i, t in zip(ids, texts):
                hyps[i], latency[i] = t, dt
            if kept is not None:
                for row, (i, frames) in enumerate(zip(ids, out_lengths)):
                    kept[i] = np.ascontiguousarray(log_probs[row, : int(frames)][:, search], dtype=np.float32)
    result = usage.result()
    peak = result["allocator_peak_mb"] if device == "cuda" else result["rss_peak_mb"]
    return VariantRun(hyps, kept, latency, total, len(batches), peak)


def _seed_ctc_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """The seed's greedy CTC decode: per-token ``.item()``, collapse repeats, drop blanks."""
    from speechtrt.models.text import asr_decode

    out = []
    for i in range(log_probs.size(0)):
        seq = log_probs[i, : lengths[i].item()].argmax(dim=-1)
        decoded, prev = [], -1
        for token in seq:
            token = token.item()
            if token != prev and token != 0:
                decoded.append(token)
            prev = token
        out.append(asr_decode(decoded))
    return out


def seed_loop(model: torch.nn.Module, prepared: list[Prepared], manifest_root: Path) -> dict:
    """The seed's evaluation loop on the same utterances: one at a time, features computed inside the loop,
    batch-1 forward, per-token ``.item()`` CTC decoding, per-utterance scoring.

    Returns transcripts, ``compute_seconds`` (forward + decode, after one warm-up utterance), ``end_to_end_seconds``
    (read + features + forward + decode + score) and per-utterance batch-1 latencies in ms.
    """
    model = model.float().eval()
    with torch.no_grad():
        f = prepared[0].features
        model(f[None], torch.tensor([f.shape[0]]))
    texts, compute, latency = [], 0.0, []
    t_start = time.perf_counter()
    for p in prepared:
        samples, rate = read_wav(p.row.path(manifest_root))
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        x = log_mel(resample(samples, rate, FEATURES.sample_rate))[None]
        t0 = time.perf_counter()
        with torch.no_grad():
            lp, ol = model(x, torch.tensor([x.shape[1]]))
            texts.append(_seed_ctc_decode(lp, ol)[0])
        dt = time.perf_counter() - t0
        compute += dt
        latency.append(dt * 1000)
        score_pair(p.reference, texts[-1])
    return {"texts": texts, "compute_seconds": compute, "end_to_end_seconds": time.perf_counter() - t_start,
            "latency_ms": latency}


def compare_runs(run: VariantRun, reference: VariantRun) -> dict:
    """How far a variant's outputs are from its model's torch FP32 run on the same utterances: the largest and the
    mean absolute difference of the log-probabilities the decoders read, and the share of identical greedy
    transcripts."""
    worst, total, count = 0.0, 0.0, 0
    for a, b in zip(run.log_probs, reference.log_probs):
        n = min(len(a), len(b))
        d = np.abs(a[:n] - b[:n])
        if d.size:
            worst = max(worst, float(d.max()))
            total += float(d.sum())
            count += d.size
    same = float(np.mean([a == b for a, b in zip(run.hypotheses, reference.hypotheses)]))
    return {"reference": "torch/fp32", "max_abs_logprob_diff": worst, "mean_abs_logprob_diff": total / max(count, 1),
            "greedy_identical": same}
