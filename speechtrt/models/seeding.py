"""Deterministic construction: the reference models are built under a fixed seed without disturbing the caller's."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.nn as nn

M = TypeVar("M", bound=nn.Module)


def seeded(make: Callable[[], M], seed: int) -> M:
    """``make()`` with torch's global generator seeded by ``seed`` (and restored after), in eval mode."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = make()
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()
