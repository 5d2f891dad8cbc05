"""What one evaluation run is: :class:`EvalConfig`, its checks, and the constants the report states."""

from __future__ import annotations

from dataclasses import dataclass

from speechtrt.errors import InputError
from speechtrt.vocab import BACKENDS, PRECISIONS, parse_list

DECODERS = ("lm", "lexicon", "greedy")
"""Primary decoders: CTC beam search with a word n-gram model, nearest lexicon word per greedy word, best path."""

SILENCE_PEAK = 1e-3  # peak |sample| below this (−60 dBFS) counts as silence
WER_TOLERANCE = 0.01  # selection rule: variants within 1 WER point of the best count as equally accurate
GENERALIZATION_TARGETS = {"in_training_wer": 0.15, "held_out_voice_ratio": 1.3, "held_out_synthesizer_wer": 0.40}
"""Issue 17's targets, checked per variant: WER on trained voices and accents; held-out voices/accents' WER over
the in-training WER of the same run; WER on a synthesizer training never had."""
ACCENT_SYNTHESIZER = "espeak-ng"
"""The synthesizer whose voices are accents. The first generalization target is on *trained accents*: the
in-training utterances of this synthesizer (unseen speakers, unseen sentences); a model whose training had none of
it is held to the WER of all its in-training utterances instead, and the report says which."""
TRIM_TOLERANCE_NATS = 1e-3
"""Largest dropped log-mass (nats) on the development set for which ORT/TRT graphs compute only the classes the
decoders read: every kept log-probability then moves by at most this much (0.1 % in probability)."""


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. ``decoder`` picks the primary transcript (``lm``, ``lexicon`` or ``greedy``); greedy is
    always scored too. ``lm_alpha``/``lm_beta`` weigh the language model when ``tune_on`` (a development manifest,
    never the test set) is not given; with it they are chosen there by grid search."""

    manifest: str
    checkpoints: tuple[str, ...]
    backends: tuple[str, ...] = ("torch", "ort")
    precisions: tuple[str, ...] = ("fp32", "int8")
    decoder: str = "lm"
    lm_order: int = 3
    lm_alpha: float = 0.8
    lm_beta: float = 3.0
    beam: int = 16
    tune_on: str | None = None
    calib_manifest: str | None = None  # static INT8 activation ranges (default: tune_on); none: dynamic INT8
    batch_frames: int | None = None  # None: 2000 on a CPU, 64000 on a GPU (see inputs.auto_batch_frames)
    n_boot: int = 1000
    seed: int = 0
    out_dir: str = "reports"
    seed_loop: bool = True
    threads: int = 1
    text_source: str | None = None
    plots: bool = True
    trim_classifier: bool = True  # ORT/TRT compute only the decoders' classes when the dev set shows it is safe
    held_out: tuple[str, ...] = ()  # synthesizers / synthesizer:voice units no model heard (default: sidecars)
    trained_on: str | None = None  # the training manifest of every checkpoint (default: their sidecars)


def _at_least(value, low: int, flag: str, what: str) -> None:
    if value < low:
        raise InputError(f"{flag} {value}: {what} must be at least {low}")


def check_config(cfg: EvalConfig) -> EvalConfig:
    """``cfg`` when every value makes sense, else an InputError naming the flag (before any work starts).

    Backends and precisions must be names from :mod:`speechtrt.vocab` (a typo must not turn into an empty report);
    a known pair that cannot run here (torch FP16 on a CPU, TensorRT without a GPU) is reported as not run instead.
    """
    parse_list(",".join(cfg.backends), BACKENDS, "--backends", "backend")
    parse_list(",".join(cfg.precisions), PRECISIONS, "--precisions", "precision")
    if not cfg.checkpoints:
        raise InputError("--checkpoints is empty: give one or more ASR checkpoints (comma-separated)")
    if cfg.decoder not in DECODERS:
        raise InputError(f"--decoder {cfg.decoder!r}: unknown; choose one of {', '.join(DECODERS)}")
    _at_least(cfg.beam, 1, "--beam", "the beam width")
    _at_least(cfg.lm_order, 1, "--lm-order", "the n-gram order")
    _at_least(cfg.threads, 1, "--threads", "the thread count")
    _at_least(cfg.n_boot, 1, "--n-boot", "the number of bootstrap resamples")
    if cfg.batch_frames is not None:
        _at_least(cfg.batch_frames, 1, "--batch-frames", "the padded frames per batch")
    if cfg.held_out and cfg.trained_on:
        raise InputError("--held-out and --trained-on both say what training heard: give one")
    bad = [u for u in cfg.held_out if not u.partition(":")[0].strip() or (":" in u and not u.partition(":")[2].strip())]
    if bad:
        raise InputError(f"--held-out {','.join(bad)}: give synthesizers or <synthesizer>:<voice>, e.g. "
                         "flite,espeak-ng:en-029,festival:ked_diphone")
    return cfg
