"""Streaming ASR (layer 6): many concurrent real-time streams batched across streams on one model.

``StreamingEngine`` (open / push / partial / finalize / cancel) over a ``StepBackend`` (torch, ort, trt), with
preallocated state slots, bounded per-stream buffers, admission control and idle timeouts; ``loadgen`` plays real
utterances at real-time pace and ``report`` writes ``reports/stream.{json,md}`` and plots.
"""

from speechtrt.stream.backends import (BACKENDS, OrtStepBackend, StepBackend, TorchStepBackend, TrtStepBackend,
                                       make_backend)
from speechtrt.stream.engine import (BackpressureError, FinalTranscript, StreamClosedError, StreamConfig,
                                     StreamFailedError, StreamingEngine, StreamStatus, UnknownStreamError)

__all__ = [
    "BACKENDS", "BackpressureError", "FinalTranscript", "OrtStepBackend", "StepBackend", "StreamClosedError",
    "StreamConfig", "StreamFailedError", "StreamStatus", "StreamingEngine", "TorchStepBackend", "TrtStepBackend",
    "UnknownStreamError", "make_backend",
]
