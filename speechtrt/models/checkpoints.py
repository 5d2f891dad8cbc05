"""Checkpoints: a model's weights saved together with the config that built it.

Format (``torch.save`` of a dict): ``{"format": "speechtrt-checkpoint/1", "kind": "tts" | "asr" | "voice", "size": ...,
"config": {...}, "state_dict": {...}, "meta": {...}}``. Loading rebuilds the module from ``config``, so a
checkpoint is self-describing and a mismatch is reported, not silently reshaped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from speechtrt.config import ASRConfig, TTSConfig
from speechtrt.errors import InputError

FORMAT = "speechtrt-checkpoint/1"


def save_checkpoint(model: torch.nn.Module, path: str | Path, meta: dict | None = None, half: bool = False) -> Path:
    """Write ``model`` (a TTS, ASR or voice reference model) and its config to ``path``.

    ``half``: store floating-point parameters as FP16 (buffers keep their dtype), as shipped checkpoints are; the
    loaded model computes in FP32 with weights rounded once.
    """
    from speechtrt.models.asr import SimpleASRModel, StreamingASRModel
    from speechtrt.models.tts import SimpleTTSModel
    from speechtrt.models.voice import VoiceTTS

    if isinstance(model, SimpleTTSModel):
        kind, size = "tts", "tts"
    elif isinstance(model, VoiceTTS):
        kind, size = "voice", "voice"
    elif isinstance(model, (SimpleASRModel, StreamingASRModel)):
        kind, size = "asr", model.config.size
    else:
        raise InputError(f"cannot checkpoint a {type(model).__name__}: expected a speechtrt TTS or ASR model")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {name for name, _ in model.named_parameters()}
    state = {k: (v.detach().cpu().half() if half and k in params and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "format": FORMAT,
            "kind": kind,
            "size": size,
            "config": dataclasses.asdict(model.config),
            "state_dict": state,
            "meta": meta or {},
        },
        tmp,
    )
    tmp.replace(path)
    return path


def _load_failure(exc: Exception) -> str:
    """One line saying why ``torch.load`` refused a file (torch's own message spans paragraphs of advice)."""
    text = str(exc)
    if any(k in text for k in ("invalid load key", "failed finding central directory", "Unsupported operand")):
        return "cannot be read (not a PyTorch checkpoint file): truncated, or some other format"
    if "Weights only load failed" in text or "weights_only" in text:
        return ("holds Python objects, not only tensors: not a speechtrt checkpoint (its objects are never "
                "unpickled: that could run any code)")
    first = next((line.strip() for line in text.splitlines() if line.strip()), exc.__class__.__name__)
    return f"cannot be read (not a PyTorch checkpoint file): {first[:160]}"


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint describes; returns ``(model in eval mode, meta)``."""
    from speechtrt.models.asr import SimpleASRModel, StreamingASRModel
    from speechtrt.models.tts import SimpleTTSModel

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist: pass the path of a file written by speechtrt")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, a pickle of arbitrary objects, ...
        raise InputError(f"checkpoint {path} {_load_failure(exc)}; pass a checkpoint written by speechtrt "
                         "(speechtrt train, or speechtrt.models.save_checkpoint)") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(f"checkpoint {path} is not a {FORMAT} file; save it with speechtrt.models.save_checkpoint")
    if blob["kind"] == "tts":
        model: torch.nn.Module = SimpleTTSModel(TTSConfig(**blob["config"]))
    elif blob["kind"] == "voice":
        from speechtrt.models.voice import VoiceConfig, VoiceTTS

        model = VoiceTTS(VoiceConfig.from_dict(blob["config"]))
    else:
        config = ASRConfig(**blob["config"])
        model = StreamingASRModel(config) if config.size == "stream" else SimpleASRModel(config)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"checkpoint {path} does not fit its own config: {exc}") from exc
    return model.eval(), blob.get("meta", {})
