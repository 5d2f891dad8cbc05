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
class TrtFlavour:
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


def import_flavour(flavour: str) -> TrtFlavour | None:
    """The TensorRT of one flavour, or None when it does not import here."""
    try:
        module = importlib.import_module(FLAVOURS[flavour])
    except ImportError:
        return None
    return TrtFlavour(flavour, str(getattr(module, "__version__", "unknown")), module)


def find_flavour(prefer: str | None = None) -> TrtFlavour:
    """The TensorRT to build with: ``prefer`` (or ``$SPEECHTRT_TRT``) when given, else ``tensorrt``, else RTX.

    Raises BuildError naming how to install one when neither imports.
    """
    prefer = prefer or os.environ.get("SPEECHTRT_TRT") or None
    if prefer is not None:
        if prefer not in FLAVOURS:
            raise BuildError(f"unknown TensorRT flavour {prefer!r}: choose one of {', '.join(FLAVOURS)}")
        found = import_flavour(prefer)
        if found is None:
            raise BuildError(f"{prefer} was asked for but does not import here: {INSTALL_HINT}")
        return found
    for flavour in FLAVOURS:
        found = import_flavour(flavour)
        if found is not None:
            return found
    raise BuildError(f"no TensorRT is installed: {INSTALL_HINT}")


def installed_flavours() -> list[TrtFlavour]:
    """Every TensorRT flavour that imports here, preferred first."""
    return [b for b in (import_flavour(f) for f in FLAVOURS) if b is not None]


def candidate_flavours() -> list[TrtFlavour]:
    """Backends to try for a build, preferred first: only ``$SPEECHTRT_TRT`` when set, else every installed one.

    Raises BuildError naming how to install one when none imports.
    """
    if os.environ.get("SPEECHTRT_TRT"):
        return [find_flavour()]
    return installed_flavours() or [find_flavour()]
