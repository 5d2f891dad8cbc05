"""Choosing a runner, with an explicit, logged fallback.

A serving process names the backends it accepts in order (``trt``, then ``ort``, then ``torch`` is the usual
order: fastest first). Without ``allow_fallback`` the first backend must load or its error is raised as is — an
engine built for another GPU or TensorRT version is a deployment mistake to fix, not to hide. With it, each backend
that cannot load is logged (which one, and why) and the next is tried; the attempts are returned so a service can
report what it ended up running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from speechtrt.errors import EngineLoadError, InputError, SpeechTRTError
from speechtrt.export.components import component as component_spec
from speechtrt.runtime.runner import BACKENDS, Runner, TorchRunner

log = logging.getLogger("speechtrt.runtime")

DEFAULT_ORDER = ("trt", "ort", "torch")


@dataclass(frozen=True)
class Attempt:
    backend: str
    ok: bool
    reason: str = ""


def open_runner(component: str, backends: tuple[str, ...] = DEFAULT_ORDER, *, precision: str = "fp32",
                device: str | torch.device = "cpu", onnx_dir: str | Path = "out/onnx",
                engine_dir: str | Path = "engines", model: torch.nn.Module | None = None,
                allow_fallback: bool = False) -> tuple[Runner, list[Attempt]]:
    """The first of ``backends`` that loads ``component``; see the module docstring for the fallback rule."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise InputError(f"unknown backend(s) {unknown or backends}: choose from {', '.join(BACKENDS)}")
    attempts: list[Attempt] = []
    for i, backend in enumerate(backends):
        try:
            runner = _open(backend, component, precision, device, onnx_dir, engine_dir, model)
        except SpeechTRTError as exc:
            attempts.append(Attempt(backend, False, str(exc)))
            last = i == len(backends) - 1
            if not allow_fallback or last:
                if attempts[:-1]:
                    tried = "; ".join(f"{a.backend}: {a.reason}" for a in attempts)
                    raise EngineLoadError(f"no backend could run {component} ({tried})") from exc
                raise
            log.warning("%s backend cannot run %s (%s); falling back to %s", backend, component, exc, backends[i + 1])
            continue
        attempts.append(Attempt(backend, True))
        if i:
            log.warning("running %s on the %s backend after %d fallback(s)", component, backend, i)
        return runner, attempts
    raise AssertionError("unreachable")


def _open(backend, component, precision, device, onnx_dir, engine_dir, model) -> Runner:
    if backend == "trt":
        from speechtrt.runtime.trt import make_trt_runner

        return make_trt_runner(engine_dir, component, precision, device)
    if backend == "ort":
        from speechtrt.runtime.ort import make_ort_runner

        path = Path(onnx_dir) / (f"{component}.onnx" if precision == "fp32" else f"{component}.{precision}.onnx")
        if not path.is_file():
            raise EngineLoadError(f"{path} does not exist: run `speechtrt export` (and `speechtrt calibrate` for "
                                  f"{precision}) first")
        return make_ort_runner(onnx_dir, component, precision, device)
    if model is None:
        raise InputError(f"the torch backend needs the PyTorch model to run {component}")
    return TorchRunner(component_spec(component), model, device, precision if precision != "int8" else "fp32")
