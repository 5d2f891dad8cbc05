"""Runtime (layer 5): runners for torch / ONNX Runtime / TensorRT, the KV-cache pool and the in-flight scheduler.

``trt`` and ``torch_cuda`` import TensorRT / need CUDA, so they are imported from their modules, not here.
"""

from speechtrt.runtime.kv_pool import KVCachePool, PoolShape, slots_for_budget, write_rows
from speechtrt.runtime.runner import (
    BACKENDS, PRECISIONS, DecoderStep, Runner, RunnerDecoderStep, TorchRunner, check_feeds,
)
from speechtrt.runtime.scheduler import (
    Admission, DecodeRequest, IterationStats, Move, RequestState, Scheduler, SchedulerConfig, StepOutcome, StepPlan,
)

__all__ = [
    "Admission", "BACKENDS", "DecodeRequest", "DecoderStep", "IterationStats", "KVCachePool", "Move", "PRECISIONS",
    "PoolShape", "RequestState", "Runner", "RunnerDecoderStep", "Scheduler", "SchedulerConfig", "StepOutcome",
    "StepPlan", "TorchRunner", "check_feeds", "slots_for_budget", "write_rows",
]
