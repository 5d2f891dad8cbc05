"""Which TensorRT is installed: the full ``tensorrt`` (the product path on users' GPUs) or TensorRT-RTX.

Both expose the same builder API under different module names. ``tensorrt`` wins when both are present, because its
engines run on every GPU it supports (Hopper and datacenter Blackwell included) and it can inspect what it built.
TensorRT-RTX is the fallback that compiles ahead of time on a machine without a GPU.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from types import ModuleType

from speechtrt.errors import BuildError

FLAVOURS = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx_bindings"}
INSTALL_HINT = (
    "install TensorRT on a GPU machine (pip install --extra-index-url https://pypi.nvidia.com tensorrt) or "
    "TensorRT-RTX anywhere (pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings)"
)


@dataclass(frozen=True)
class Backend:
    """An importable TensorRT flavour: ``flavour`` is ``tensorrt`` or ``tensorrt-rtx``; ``trt`` is the module."""

    flavour: str
    version: str
    trt: ModuleType = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        """Human name with version: ``TensorRT-RTX 1.7.1.116``."""
        return f"{'TensorRT-RTX' if self.flavour == 'tensorrt-rtx' else 'TensorRT'} {self.version}"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def to_json(self) -> dict:
        return {"flavour": self.flavour, "version": self.version}


def import_backend(flavour: str) -> Backend | None:
    """The backend of one flavour, or None when it does not import here."""
    try:
        module = importlib.import_module(FLAVOURS[flavour])
    except ImportError:
        return None
    return Backend(flavour, str(getattr(module, "__version__", "unknown")), module)


def find_backend(prefer: str | None = None) -> Backend:
    """The TensorRT to build with: ``prefer`` (or ``$SPEECHTRT_TRT``) when given, else ``tensorrt``, else RTX.

    Raises BuildError naming how to install one when neither imports.
    """
    prefer = prefer or os.environ.get("SPEECHTRT_TRT") or None
    if prefer is not None:
        if prefer not in FLAVOURS:
            raise BuildError(f"unknown TensorRT flavour {prefer!r}: choose one of {', '.join(FLAVOURS)}")
        backend = import_backend(prefer)
        if backend is None:
            raise BuildError(f"{prefer} was asked for but does not import here: {INSTALL_HINT}")
        return backend
    for flavour in FLAVOURS:
        backend = import_backend(flavour)
        if backend is not None:
            return backend
    raise BuildError(f"no TensorRT is installed: {INSTALL_HINT}")


def installed_backends() -> list[Backend]:
    """Every TensorRT flavour that imports here, preferred first."""
    return [b for b in (import_backend(f) for f in FLAVOURS) if b is not None]


def candidate_backends() -> list[Backend]:
    """Backends to try for a build, preferred first: only ``$SPEECHTRT_TRT`` when set, else every installed one.

    Raises BuildError naming how to install one when none imports.
    """
    if os.environ.get("SPEECHTRT_TRT"):
        return [find_backend()]
    return installed_backends() or [find_backend()]
