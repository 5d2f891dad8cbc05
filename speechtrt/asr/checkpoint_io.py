"""Compact ASR checkpoints: the ``speechtrt-checkpoint/1`` format with floating-point weights stored as FP16.

Shipped checkpoints live in the repository, so they are stored at half the size. :func:`load_checkpoint` reads
them unchanged (``load_state_dict`` copies FP16 values into the FP32 parameters): the model still computes in FP32,
with weights rounded once to FP16. Every WER recorded for a shipped checkpoint was measured from the stored file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from speechtrt.models.checkpoints import FORMAT


def save_compact(model: torch.nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """Write an ASR ``model`` in the checkpoint format with FP16 weights (integer buffers unchanged)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "kind": "asr", "size": model.config.size,
                "config": dataclasses.asdict(model.config), "state_dict": state, "meta": meta or {}}, tmp)
    tmp.replace(path)
    return path
