"""Runtime (layer 5): the ``Runner`` protocol and ``open_runner`` (the only place a runner is made), runners for
torch / ONNX Runtime / TensorRT, CUDA graphs by bucket, the KV-cache pool and the in-flight scheduler.

``trt`` and ``torch_cuda`` import TensorRT / need CUDA, so they are imported from their modules, not here.
"""

from typing import TYPE_CHECKING

from speechtrt.lazy import lazy_exports

if TYPE_CHECKING:
    from speechtrt.runtime.kv_pool import KVCachePool, PoolShape, slots_for_budget, write_rows
    from speechtrt.runtime.open import Artifacts, Attempt, graph_path, open_first, open_runner
    from speechtrt.runtime.runner import TORCH_DTYPES, DecoderStep, Runner, RunnerDecoderStep, check_feeds
    from speechtrt.runtime.scheduler import (
        Admission, DecodeRequest, IterationStats, Move, RequestState, Scheduler, SchedulerConfig, StepOutcome, StepPlan,
    )

__getattr__, __dir__ = lazy_exports(__name__, {
    "kv_pool": ("KVCachePool", "PoolShape", "slots_for_budget", "write_rows"),
    "open": ("Artifacts", "Attempt", "graph_path", "open_first", "open_runner"),
    "runner": ("TORCH_DTYPES", "DecoderStep", "Runner", "RunnerDecoderStep", "check_feeds"),
    "scheduler": (
        "Admission", "DecodeRequest", "IterationStats", "Move", "RequestState", "Scheduler", "SchedulerConfig",
        "StepOutcome", "StepPlan"
    ),
})

__all__ = [
    "Admission", "Artifacts", "Attempt", "DecodeRequest", "DecoderStep", "IterationStats", "KVCachePool", "Move",
    "PoolShape", "RequestState", "Runner", "RunnerDecoderStep", "Scheduler", "SchedulerConfig", "StepOutcome",
    "StepPlan", "TORCH_DTYPES", "check_feeds", "graph_path", "open_first", "open_runner", "slots_for_budget",
    "write_rows",
]
