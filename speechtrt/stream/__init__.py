"""Streaming ASR (layer 6): many concurrent real-time streams batched across streams on one model.

* :mod:`~speechtrt.stream.core` — :class:`StreamCore`, the synchronous core a caller drives (open / accept /
  ready_streams / decode_ready / result / finalize), over :mod:`~speechtrt.stream.table` (streams, slots, tombstones)
  and :mod:`~speechtrt.stream.slots` (preallocated state and sample buffers, the batched front end);
* :mod:`~speechtrt.stream.step` — :class:`StepModel`, the model step over any runner from ``open_runner``;
* :mod:`~speechtrt.stream.engine` — :class:`StreamingEngine`, the thin threaded layer (scheduler thread with the
  :mod:`~speechtrt.stream.batching` policy, blocking pushes, futures, per-stream update callbacks) a server shares;
* :mod:`~speechtrt.stream.loadgen`, :mod:`~speechtrt.stream.capacity`, :mod:`~speechtrt.stream.report` and
  :mod:`~speechtrt.stream.benchmark` — real-time clients, the capacity search and ``reports/stream.*``.
"""

from typing import TYPE_CHECKING

from speechtrt.lazy import lazy_exports

if TYPE_CHECKING:
    from speechtrt.stream.core import StepOutcome, StreamConfig, StreamCore, StreamResult
    from speechtrt.stream.engine import BackpressureError, FinalTranscript, StreamingEngine
    from speechtrt.stream.step import StepConfig, StepModel
    from speechtrt.stream.table import StreamClosedError, StreamFailedError, StreamStatus, UnknownStreamError

__getattr__, __dir__ = lazy_exports(__name__, {
    "core": ("StepOutcome", "StreamConfig", "StreamCore", "StreamResult"),
    "engine": ("BackpressureError", "FinalTranscript", "StreamingEngine"),
    "step": ("StepConfig", "StepModel"),
    "table": ("StreamClosedError", "StreamFailedError", "StreamStatus", "UnknownStreamError"),
})

__all__ = [
    "BackpressureError", "FinalTranscript", "StepConfig", "StepModel", "StepOutcome", "StreamClosedError",
    "StreamConfig", "StreamCore", "StreamFailedError", "StreamResult", "StreamStatus", "StreamingEngine",
    "UnknownStreamError",
]
