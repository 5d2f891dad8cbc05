"""Graphs for the Triton tests, exported once per session (no parity check: tests/export covers it).

``SPEECHTRT_TEST_ARTIFACTS`` may point at a folder kept between runs; artifacts are keyed by weights there, so a
later run reuses what an earlier one exported.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODELS = ("asr-small", "asr-stream", "tts")
CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


@pytest.fixture(scope="session")
def triton_artifacts(tmp_path_factory) -> Path:
    from speechtrt.export.components import components_for
    from speechtrt.pipeline import export_component, model_artifacts
    from speechtrt.triton.repository import RepositoryConfig, load_models

    root = Path(os.environ.get("SPEECHTRT_TEST_ARTIFACTS") or tmp_path_factory.mktemp("triton-artifacts"))
    for name, (model, source) in load_models(RepositoryConfig(models=MODELS, checkpoint_dir=CHECKPOINTS)).items():
        folder = model_artifacts(model, root).onnx_dir
        for comp in components_for(name):
            if not (folder / f"{comp.name}.onnx").is_file():
                export_component(comp, model, folder, check=False, source=source)
    return root
