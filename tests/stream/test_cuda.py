"""The CUDA path of the torch step (FP32 eager, FP32 CUDA graphs, FP16 graphs): skipped without a GPU.

cuDNN may pick different kernels for a batch of chunks and for one whole utterance, so streamed log-probs are
compared with the offline pass within a tolerance rather than bit for bit.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from speechtrt.models import build_model
from speechtrt.models.audio import FEATURES
from speechtrt.runtime.graphs import GraphedRunner
from speechtrt.stream.engine import StreamConfig, StreamingEngine
from speechtrt.stream.step import StepConfig, StepModel
from tests.stream.conftest import offline, play_and_finalize

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)


@pytest.mark.parametrize("fp16,graphs,atol", [(False, False, 1e-3), (False, True, 1e-3), (True, True, 5e-2)])
def test_cuda_streams_match_offline_on_the_same_backend(speech, fp16, graphs, atol):
    step = StepModel.open(StepConfig(device="cuda", precision="fp16" if fp16 else "fp32", cuda_graphs=graphs,
                                     max_batch=8), build_model("asr-stream"))
    assert isinstance(step.runner, GraphedRunner) == graphs  # open_runner's CUDA-graph path
    engine = StreamingEngine(step, StreamConfig(max_streams=8, max_batch=8))
    engine.warmup()
    rows = defaultdict(list)
    engine.step_observer = lambda ids, lp, valid: [rows[s].append(lp[i, :n].float().cpu())
                                                   for i, (s, n) in enumerate(zip(ids, valid))]
    rng = np.random.default_rng(0)
    with engine:
        ids = {engine.open(): audio for audio in speech * 2}
        finals = play_and_finalize(engine, ids, rng, 300, 5000, timeout=120)
    for sid, audio in ids.items():
        want = offline(step, audio)[0].float().cpu()
        torch.testing.assert_close(torch.cat(rows[sid]), want, atol=atol, rtol=0)
        assert finals[sid].frames == FEATURES.frames_for(len(audio))  # every accepted frame decoded
    assert engine.pool.free_count == 8
