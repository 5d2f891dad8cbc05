"""Parity of an exported graph against PyTorch FP32, run in ONNX Runtime on the CPU.

The measure is relative L2, ``||onnx - torch|| / ||torch||`` per float output; integer outputs must be equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from speechtrt.export.components import Component

PARITY_TOLERANCE = 1e-4
"""Largest relative L2 error an FP32 graph may show against PyTorch FP32."""


def relative_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    """``||actual - expected|| / ||expected||`` (absolute error when ``expected`` is all zeros)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shape mismatch: got {actual.shape}, expected {expected.shape}")
    denom = np.linalg.norm(expected)
    err = np.linalg.norm(actual - expected)
    return float(err / denom) if denom > 0 else float(err)


def ort_session(onnx_path: str | Path, threads: int | None = None):
    """A CPU ONNX Runtime session (imported lazily: ORT is heavy to import)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class ParityCase:
    sizes: dict[str, int]
    errors: dict[str, float]  # output name -> relative L2 (int outputs: 0.0 when equal, 1.0 when not)

    @property
    def worst(self) -> float:
        return max(self.errors.values())


@dataclass
class ParityReport:
    component: str
    tolerance: float
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(c.worst for c in self.cases)

    @property
    def ok(self) -> bool:
        return self.worst <= self.tolerance

    def to_json(self) -> dict:
        return {
            "tolerance": self.tolerance,
            "max_rel_l2": self.worst,
            "ok": self.ok,
            "cases": [{"sizes": c.sizes, "rel_l2": c.errors} for c in self.cases],
        }


def parity_sizes(comp: Component) -> list[dict[str, int]]:
    """Shapes to check: the smallest, the profile's optimum, and an odd in-between size."""
    low = {n: d.min for n, d in comp.dims.items()}
    opt = comp.sizes("opt")
    odd = {n: max(d.min, min(d.max, d.opt // 3 + 3)) for n, d in comp.dims.items()}
    return [low, opt, odd]


def check_parity(comp: Component, model: torch.nn.Module, onnx_path: str | Path,
                 sizes: list[dict[str, int]] | None = None, seed: int = 0, session=None) -> ParityReport:
    """Run the graph and the PyTorch module on fresh random inputs of several shapes and compare every output."""
    session = session or ort_session(onnx_path)
    wrapper = comp.wrap(model).eval()
    gen = torch.Generator().manual_seed(seed)
    report = ParityReport(comp.name, PARITY_TOLERANCE)
    out_names = [o.name for o in comp.outputs]
    for case in sizes or parity_sizes(comp):
        feeds = comp.make_inputs(model, case, gen)
        with torch.no_grad():
            expected = wrapper(*feeds.values())
        if isinstance(expected, torch.Tensor):
            expected = (expected,)
        actual = session.run(out_names, {k: v.numpy() for k, v in feeds.items()})
        errors = {}
        for spec, a, e in zip(comp.outputs, actual, expected):
            e = e.numpy()
            if spec.dtype == "int64":
                errors[spec.name] = 0.0 if np.array_equal(a, e) else 1.0
            else:
                errors[spec.name] = relative_l2(a, e)
        report.cases.append(ParityCase(dict(case), errors))
    return report
