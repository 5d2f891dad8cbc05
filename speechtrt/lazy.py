"""Package namespaces that import a name's submodule on first use, so ``speechtrt --help`` and a flag error answer
without loading torch, ONNX Runtime or FastAPI."""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[Callable, Callable]:
    """``exports`` maps a submodule (relative to ``package``) to the names it provides. Returns the package's
    module-level ``__getattr__`` and ``__dir__``; a name is looked up once, then stored on the package."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
