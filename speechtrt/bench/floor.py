"""The memory-bandwidth floor of a decoder step: the fastest it can run on this machine, measured in the same run.

At small batch an autoregressive step is memory-bound: every step reads every weight once, plus each sequence's
K/V cache. Its time cannot drop below ``bytes read / memory bandwidth``. ``speechtrt bench`` measures the bandwidth
(a streaming read on one thread, the best of a few passes over an array far larger than the last-level cache),
counts what each variant reads per step (the weights as the backend holds them — for ONNX Runtime, the initializers
of the graph *after* its optimizer folded it — and the valid K/V rows at a realistic position), and reports
``floor_ms_per_step`` and ``ratio_to_floor`` next to the measured step: a ratio near 1 says only fewer bytes can
make the step faster (a lower precision), a large one that the step does work beyond reading its data.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def memory_bandwidth_gbs(size_mb: int = 256, passes: int = 5) -> float:
    """Streaming-read bandwidth of this process's thread in GB/s (best of ``passes`` reads of ``size_mb`` MiB)."""
    data = np.ones(size_mb * 2**20 // 8, dtype=np.float64)
    best = float("inf")
    for _ in range(passes + 1):  # the first pass faults the pages in
        t0 = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - t0)
    return data.nbytes / best / 1e9


def graph_weight_bytes(onnx_path: str | Path) -> int:
    """Bytes of initializers in ``onnx_path`` after ONNX Runtime's optimizer (what a session reads per call)."""
    import onnx

    from speechtrt.runtime.ort import optimized_graph

    with tempfile.TemporaryDirectory(prefix="speechtrt-floor-") as tmp:
        graph = onnx.load(str(optimized_graph(onnx_path, Path(tmp) / "optimized.onnx")))
    total = 0
    for init in graph.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        total += n * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total


def module_weight_bytes(modules: list[torch.nn.Module]) -> int:
    """Bytes of the parameters (and packed quantized weights) the ``modules`` hold."""
    total = 0
    for m in modules:
        for p in m.parameters():
            total += p.numel() * p.element_size()
        for sub in m.modules():  # torch.ao dynamic quantization keeps INT8 weights in packed params
            packed = getattr(sub, "_packed_params", None)
            if packed is not None and hasattr(packed, "_weight_bias"):
                w, b = packed._weight_bias()
                total += w.numel() * w.element_size() + (b.numel() * b.element_size() if b is not None else 0)
    return total


def kv_bytes_per_step(config, batch: int, past: int, text: int, element_size: int) -> int:
    """K/V bytes one step must read: the valid past rows and the text rows of every layer, keys and values."""
    per_row = 2 * config.num_layers * config.num_heads * config.head_dim * element_size
    return batch * per_row * (past + text)


def floor_entry(bandwidth_gbs: float, weight_bytes: int, kv_bytes: int, measured_ms: float | None,
                at: dict) -> dict:
    """One variant's floor: bytes per step, the floor in ms, the measured step and their ratio."""
    floor_ms = (weight_bytes + kv_bytes) / (bandwidth_gbs * 1e9) * 1e3
    return {
        "bandwidth_gb_s": round(bandwidth_gbs, 2),
        "weight_bytes": int(weight_bytes),
        "kv_bytes_per_step": int(kv_bytes),
        "at": at,
        "floor_ms_per_step": round(floor_ms, 4),
        "measured_ms_per_step": None if measured_ms is None else round(measured_ms, 4),
        "ratio_to_floor": None if measured_ms is None else round(measured_ms / floor_ms, 3),
    }
