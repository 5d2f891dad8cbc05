"""Checkpoints: a model's weights saved together with the config that built it.

Format (``torch.save`` of a dict): ``{"format": "speechtrt-checkpoint/1", "kind": "tts" | "asr", "size": ...,
"config": {...}, "state_dict": {...}, "meta": {...}}``. Loading rebuilds the module from ``config``, so a
checkpoint is self-describing and a mismatch is reported, not silently reshaped.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import torch

from speechtrt.config import ASRConfig, TTSConfig
from speechtrt.errors import InputError

FORMAT = "speechtrt-checkpoint/1"


def save_checkpoint(model: torch.nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``model`` (a TTS or ASR reference model) and its config to ``path``."""
    from speechtrt.models.asr import SimpleASRModel, StreamingASRModel
    from speechtrt.models.tts import SimpleTTSModel

    if isinstance(model, SimpleTTSModel):
        kind, size = "tts", "tts"
    elif isinstance(model, (SimpleASRModel, StreamingASRModel)):
        kind, size = "asr", model.config.size
    else:
        raise InputError(f"cannot checkpoint a {type(model).__name__}: expected a speechtrt TTS or ASR model")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "kind": kind,
            "size": size,
            "config": dataclasses.asdict(model.config),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "meta": meta or {},
        },
        path,
    )
    return path


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint describes; returns ``(model in eval mode, meta)``."""
    from speechtrt.models.asr import SimpleASRModel, StreamingASRModel
    from speechtrt.models.tts import SimpleTTSModel

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist: pass the path of a file written by speechtrt")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not a pickle torch can read at all
            raise InputError(f"checkpoint {path} cannot be read (not a PyTorch checkpoint file); re-create it") from exc
        # Python objects a weights-only load refuses: never loaded (unpickling them could run any code)
        raise InputError(f"checkpoint {path} holds Python objects, not only tensors: it is not a {FORMAT} file; "
                         "save one with speechtrt.models.save_checkpoint") from exc
    except Exception as exc:  # truncated file, not a torch file, ...
        raise InputError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: {_one_line(exc)}); "
                         "re-create it") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(f"checkpoint {path} is not a {FORMAT} file; save it with speechtrt.models.save_checkpoint")
    if blob["kind"] == "tts":
        model: torch.nn.Module = SimpleTTSModel(TTSConfig(**blob["config"]))
    else:
        config = ASRConfig(**blob["config"])
        model = StreamingASRModel(config) if config.size == "stream" else SimpleASRModel(config)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"checkpoint {path} does not fit its own config: {_one_line(exc)}") from exc
    return model.eval(), blob.get("meta", {})


def _one_line(exc: Exception, limit: int = 200) -> str:
    """An exception's message on one line (torch's load errors span many), at most ``limit`` characters."""
    return " ".join(str(exc).split())[:limit]
