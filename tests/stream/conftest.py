"""Shared fixtures: the seeded streaming model, its torch step and a few real espeak-ng utterances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechtrt.models import build_model
from speechtrt.models.audio import espeak_available, espeak_speech, log_mel
from speechtrt.models.text import asr_decode, ctc_greedy
from speechtrt.stream.step import StepConfig, StepModel

torch.set_num_threads(1)

SPOKEN = (
    ("hello world", "en-us"),
    ("the quick brown fox jumps over the lazy dog", "en-gb-scotland"),
    ("good morning, how are you today?", "en-gb"),
    ("to be or not to be", "en-us-nyc"),
)


@pytest.fixture(scope="session")
def model():
    return build_model("asr-stream")


@pytest.fixture(scope="session")
def step(model):
    """The eager torch step on the CPU (FP32: the runner wraps the caller's model, no copy)."""
    return StepModel.open(StepConfig(), model)


@pytest.fixture(scope="session")
def speech() -> list[np.ndarray]:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    return [espeak_speech(text, voice) for text, voice in SPOKEN]


def offline(step, samples: np.ndarray):
    """(log-probs [T', V], token ids, text) of one whole utterance in one pass from the start state."""
    feats = log_mel(samples)
    log_probs = step.offline(feats[None])[0]
    tokens = tuple(ctc_greedy(log_probs.argmax(-1).tolist()))
    return log_probs, tokens, asr_decode(tokens)


def play_and_finalize(engine, streams: dict[str, np.ndarray], rng, lo: int, hi: int, timeout: float = 60) -> dict:
    """Push each stream's audio in random pieces of ``lo..hi`` samples into a running engine, finalize every stream
    and wait: stream id -> final result."""
    for sid, audio in streams.items():
        pos = 0
        while pos < len(audio):
            n = int(rng.integers(lo, hi))
            engine.push(sid, audio[pos: pos + n])
            pos += n
    futures = {sid: engine.finalize_async(sid) for sid in streams}
    return {sid: f.result(timeout=timeout) for sid, f in futures.items()}
