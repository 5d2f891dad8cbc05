"""Inputs: every usable utterance of a manifest loaded once, the problems met on the way, and padded batches.

Bad inputs are never fatal: refused ones (``skipped``) and repaired ones (``repaired``) are listed in the report.
Development and calibration sets go through the same loader and must not share a sentence with the test set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.asr.data import Utterance, read_manifest
from speechtrt.asr.eval.config import SILENCE_PEAK
from speechtrt.asr.normalize import normalize_text
from speechtrt.errors import InputError
from speechtrt.models.audio import FEATURES, log_mel, read_wav, resample


@dataclass
class Prepared:
    """An utterance ready for every model: normalised reference, features and the repairs applied."""

    index: int
    row: Utterance
    reference: str
    features: torch.Tensor  # [T, 80]
    seconds: float
    repairs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InputProblem:
    """One manifest line or utterance that was refused (``action='skipped'``) or repaired (``'repaired'``)."""

    index: int
    audio_filepath: str
    problem: str
    action: str
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def prepare_inputs(manifest: str | Path, workers: int = 1) -> tuple[list[Prepared], list[InputProblem]]:
    """Load every utterance of ``manifest``; return the usable ones (in manifest order) and every problem met.

    Refused (skipped, listed): bad manifest line, missing file, unreadable file, empty reference, silence, audio
    shorter than one 25 ms window. Repaired (kept, listed): stereo (averaged to mono), a sample rate other than
    16 kHz (polyphase-resampled to 16 kHz). Features run with one torch thread whatever the run's thread count (one
    utterance is too small to split: intra-op threads made the 480-utterance test set take 0.8 s instead of 0.3 s
    on 2 threads), in ``workers`` threads over utterances (measured on 2 cores: 0.23 s against 0.25 s serial; small,
    because these short torch calls mostly run one at a time).
    """
    rows, line_problems = read_manifest(manifest)
    root = Path(manifest).parent
    problems = [InputProblem(p.line, "", "bad_manifest_line", "skipped", p.reason) for p in line_problems]
    intra_op = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers > 1 and len(rows) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda ir: _prepare_one(ir[0], ir[1], root), enumerate(rows)))
        else:
            results = [_prepare_one(i, row, root) for i, row in enumerate(rows)]
    finally:
        torch.set_num_threads(intra_op)
    prepared = []
    for item, found in results:
        problems.extend(found)
        if item is not None:
            prepared.append(item)
    return prepared, problems


def _prepare_one(i: int, row: Utterance, root: Path) -> tuple[Prepared | None, list[InputProblem]]:
    """One manifest row: its :class:`Prepared` utterance (``None`` when refused) and the problems met."""
    path = row.path(root)

    def refuse(kind: str, detail: str) -> tuple[None, list[InputProblem]]:
        return None, [*found, InputProblem(i, row.audio_filepath, kind, "skipped", detail)]

    found: list[InputProblem] = []
    if not path.is_file():
        return refuse("missing_audio", f"{path} does not exist")
    try:
        samples, rate = read_wav(path)
    except InputError as exc:
        return refuse("unreadable_audio", str(exc))
    repairs = []
    if samples.ndim == 2:
        found.append(InputProblem(i, row.audio_filepath, "stereo", "repaired",
                                  f"{samples.shape[1]} channels averaged to mono"))
        repairs.append("downmixed")
        samples = samples.mean(axis=1)
    if rate != FEATURES.sample_rate:
        found.append(InputProblem(i, row.audio_filepath, "wrong_sample_rate", "repaired",
                                  f"{rate} Hz resampled to {FEATURES.sample_rate} Hz"))
        repairs.append("resampled")
        samples = resample(samples, rate, FEATURES.sample_rate)
    reference = normalize_text(row.text)
    if not reference:
        return refuse("empty_reference", f"reference {row.text!r} is empty after normalisation")
    if samples.size < FEATURES.n_fft:
        return refuse("too_short", f"{samples.size} samples, fewer than one {FEATURES.n_fft}-sample window")
    peak = float(np.max(np.abs(samples)))
    if peak < SILENCE_PEAK:
        return refuse("silence", f"peak {peak:.1e} below {SILENCE_PEAK:g} (−60 dBFS)")
    return Prepared(i, row, reference, log_mel(samples), samples.size / FEATURES.sample_rate, repairs), found


def length_buckets(lengths: list[int], batch_frames: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches with ``longest × count ≤ batch_frames`` (at least one each)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur = [], []
    for i in order:
        if cur and lengths[i] * (len(cur) + 1) > batch_frames:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def buckets_of(prepared: list[Prepared], batch_frames: int) -> list[list[int]]:
    """:func:`length_buckets` over the utterances' feature frames."""
    return length_buckets([p.features.shape[0] for p in prepared], batch_frames)


def auto_batch_frames() -> int:
    """Padded frames per batch. On a CPU the convolution front end is fastest on cache-sized batches (measured on
    the small model, 1 thread: 2000 frames 3.3 s, 16000 frames 6.2 s for the same 72 utterances); a GPU wants
    large batches."""
    return 64000 if torch.cuda.is_available() else 2000


def pad_batch(feats: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[T_i, 80]`` → zero-padded ``[B, max T, 80]`` float32 and lengths ``[B]`` int64."""
    lengths = np.array([f.shape[0] for f in feats], dtype=np.int64)
    x = np.zeros((len(feats), int(lengths.max()), feats[0].shape[1]), dtype=np.float32)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f.numpy()
    return x, lengths


def largest_batch(prepared: list[Prepared], batch_frames: int) -> tuple[int, int]:
    """(rows, frames) the run will send at most: the bucket with the most rows, the longest utterance (a
    TensorRT profile must cover both)."""
    rows = max(len(b) for b in buckets_of(prepared, batch_frames))
    return rows, max(p.features.shape[0] for p in prepared)


def load_dev_set(manifest: str, test_refs: list[str], role: str) -> list[Prepared]:
    """The usable utterances of a ``role`` (development / calibration) manifest. Refused when it has none or shares
    a sentence with the test set: tuning and calibration must not see the test data."""
    prepared, _ = prepare_inputs(manifest)
    if not prepared:
        raise InputError(f"{role} manifest {manifest} has no usable utterance")
    shared = {p.reference for p in prepared} & set(test_refs)
    if shared:
        raise InputError(f"{role} manifest {manifest} shares {len(shared)} sentence(s) with the test manifest: use a "
                         "set made with `speechtrt data synth --split dev --exclude <training manifest>`")
    return prepared


def calibration_batches(prepared: list[Prepared], source: str, log: Callable[[str], None] = print,
                        max_batches: int = 16, batch_frames: int = 2000) -> list[np.ndarray]:
    """Up to ``max_batches`` padded feature batches of ``prepared`` (from ``source``) for static INT8 and FP16
    calibration, spread over the length buckets."""
    batches = buckets_of(prepared, batch_frames)
    step = max(1, len(batches) // max_batches)
    out = [pad_batch([prepared[i].features for i in ids])[0] for ids in batches[::step][:max_batches]]
    log(f"static INT8 calibration: {len(out)} batches from {source}")
    return out
