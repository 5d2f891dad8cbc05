"""One small real server for the serve tests: seeded TTS (2 slots), asr-small + asr-medium, asr-stream (4 streams),
on 127.0.0.1 at a free port, routing by a fixed evaluation selection (tests/serve/data/selection.json). Started once, stopped after the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechtrt.models.audio import espeak_available, espeak_speech

ROOT = Path(__file__).resolve().parents[2]
SELECTION = ROOT / "tests" / "serve" / "data" / "selection.json"  # fixed routing (the committed report is regenerated)


def small_config(**overrides):
    from speechtrt.serve import ASRServeConfig, Limits, ServeConfig, StreamServeConfig, TTSServeConfig

    base = dict(
        port=0, threads=1, checkpoints=ROOT / "checkpoints", select=SELECTION,
        limits=Limits(max_body_bytes=2 * 2**20, max_text_chars=200, max_audio_s=20.0, stream_idle_s=2.0,
                      admission_wait_s=0.05),
        tts=TTSServeConfig(max_slots=2, max_concurrent=2, max_frames=80, max_text=64),
        asr=ASRServeConfig(models=("asr-small", "asr-medium"), max_concurrent=2, degrade_after_s=0.0),
        stream=StreamServeConfig(max_streams=3, max_batch=3),
    )
    base.update(overrides)
    return ServeConfig(**base)


@pytest.fixture(scope="session")
def server():
    from speechtrt.serve import running_server

    with running_server(small_config()) as srv:
        yield srv


@pytest.fixture(scope="session")
def utterances() -> dict[str, np.ndarray]:
    """Real espeak-ng speech at 16 kHz in three accents."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    return {"us": espeak_speech("hello world", "en-us"),
            "gb": espeak_speech("the quick brown fox jumps over the lazy dog", "en-gb"),
            "scot": espeak_speech("good morning, how are you today?", "en-gb-scotland")}


@pytest.fixture
def openai_client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
