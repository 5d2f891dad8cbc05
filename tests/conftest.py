"""Shared fixtures. GPU tests skip themselves without CUDA; exported graphs are made once per test session."""

from __future__ import annotations

import os

import pytest
import torch

# `make test` runs two pytest workers (one per core of the CI machine); a lone pytest keeps both cores for torch.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def models():
    """One seeded instance per CLI model name, built lazily."""
    from speechtrt.models import build_model

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build_model(name, seed=0)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory, models):
    """All seven components exported (FP32, parity-checked) into one folder for the whole session."""
    from speechtrt.export import components_for
    from speechtrt.pipeline import export_component

    out = tmp_path_factory.mktemp("onnx")
    for comp in components_for("all"):
        export_component(comp, models(comp.model), out, check=False)
    return out


@pytest.fixture(scope="session")
def tts_model(models):
    """The seeded TTS model (seed 0), shared by runtime, service and bench tests."""
    return models("tts")


@pytest.fixture(scope="session")
def tts_onnx_dir(onnx_dir):
    """Folder holding tts_encoder / tts_decoder_step / tts_vocoder (FP32), exported once per session."""
    return onnx_dir
