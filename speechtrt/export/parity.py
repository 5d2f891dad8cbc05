"""Parity of an exported graph against PyTorch FP32.

The measure is relative L2, ``||graph - torch|| / ||torch||`` per float output; probabilities (a component's
``probability_outputs``, e.g. the stop probability) by their largest absolute difference, because the relative
error of a probability near 0 is the absolute error of its logit (a trained voice's stop probability near 0 on
random inputs moved by 3e-4 relative, 2e-8 absolute); integer outputs must be equal. The
graph runs in whatever :class:`~speechtrt.runtime.runner.Runner` the caller opened (ONNX Runtime on the CPU, from
:func:`speechtrt.pipeline.export_component`); the reference is the component's PyTorch module itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from speechtrt.export.components import Component

PARITY_TOLERANCE = 1e-4
"""Largest relative L2 error an FP32 graph may show against PyTorch FP32."""
SPECTRAL_TOLERANCE = 2e-2
"""Largest relative L2 error of the STFT magnitudes of a phase-reconstructing vocoder's audio (its waveform is not
reproducible across float implementations: Griffin-Lim settles on another phase from 1e-6 of noise)."""


def spectral_l2(actual: np.ndarray, expected: np.ndarray, n_fft: int = 1024, hop: int = 256) -> float:
    """:func:`relative_l2` of the STFT magnitudes (Hann window) of two batches of audio ``[..., samples]``."""
    import torch

    def mag(x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, x.shape[-1])
        n = min(n_fft, x.shape[-1])
        return torch.stft(x, n, max(1, min(hop, n // 4)), window=torch.hann_window(n), return_complex=True).abs()

    return relative_l2(mag(actual).numpy(), mag(expected).numpy())


def relative_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    """``||actual - expected|| / ||expected||`` (absolute error when ``expected`` is all zeros)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shape mismatch: got {actual.shape}, expected {expected.shape}")
    denom = np.linalg.norm(expected)
    err = np.linalg.norm(actual - expected)
    return float(err / denom) if denom > 0 else float(err)


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
    measure: str = "relative L2"
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
            "measure": self.measure,
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


def check_parity(comp: Component, model: torch.nn.Module, candidate, sizes: list[dict[str, int]] | None = None,
                 seed: int = 0) -> ParityReport:
    """Run ``candidate`` (a Runner of the exported graph) and the PyTorch module on fresh random inputs of several
    shapes and compare every output."""
    wrapper = comp.wrap(model).eval()
    gen = torch.Generator().manual_seed(seed)
    spectral = set(comp.spectral_outputs)
    float_outputs = {o.name for o in comp.outputs if o.dtype != "int64"}
    report = ParityReport(comp.name, SPECTRAL_TOLERANCE if spectral and float_outputs <= spectral else PARITY_TOLERANCE,
                          "relative L2 of STFT magnitudes" if spectral else "relative L2"
                          + ("; probabilities: max absolute difference" if comp.probability_outputs else ""))
    for case in sizes or parity_sizes(comp):
        feeds = comp.make_inputs(model, case, gen)
        with torch.no_grad():
            expected = wrapper(*feeds.values())
        if isinstance(expected, torch.Tensor):
            expected = (expected,)
        actual = candidate.infer(feeds)
        errors = {}
        for spec, e in zip(comp.outputs, expected):
            a, e = actual[spec.name].detach().cpu().numpy(), e.numpy()
            if spec.dtype == "int64":
                errors[spec.name] = 0.0 if np.array_equal(a, e) else 1.0
            elif spec.name in spectral:
                errors[spec.name] = spectral_l2(a, e)
            elif spec.name in comp.probability_outputs:
                errors[spec.name] = float(np.max(np.abs(a.astype(np.float64) - e), initial=0.0))
            else:
                errors[spec.name] = relative_l2(a, e)
        report.cases.append(ParityCase(dict(case), errors))
    return report
