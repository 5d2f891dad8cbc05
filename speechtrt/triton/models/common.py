"""What the Python-backend models share: their parameters, their files, and numpy/torch at the boundary.

Runs inside Triton's Python backend stub (the ``.venv-triton`` interpreter). ``triton_python_backend_utils`` exists
only there, so it is passed in, never imported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class ModelContext:
    """A model instance's view of ``initialize(args)``: its config, parameters, version folder and device."""

    name: str
    config: dict
    params: dict[str, str]
    version_dir: Path
    device: str

    @classmethod
    def from_args(cls, args: dict) -> "ModelContext":
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        kind = args.get("model_instance_kind", "CPU")
        device = f"cuda:{args.get('model_instance_device_id', 0)}" if kind == "GPU" else "cpu"
        if device == "cpu":  # torch's own ops (stacking, the KV pool) on as many threads as ONNX Runtime gets
            torch.set_num_threads(int(params.get("threads", "1")))
        return cls(config["name"], config, params, version_dir, device)

    def param(self, key: str, default: str | None = None) -> str:
        if key not in self.params and default is None:
            raise KeyError(f"model {self.name}: parameter {key!r} missing from config.pbtxt; re-export the repository")
        return self.params.get(key, default)

    def int_param(self, key: str, default: int | None = None) -> int:
        return int(self.param(key, None if default is None else str(default)))

    @property
    def max_batch_size(self) -> int:
        return int(self.config.get("max_batch_size", 0))


def to_torch(array: np.ndarray) -> torch.Tensor:
    """A request tensor as torch (contiguous, owned: Triton's buffers are released after the response)."""
    return torch.from_numpy(np.ascontiguousarray(array)).clone()


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()


def error_response(pb_utils, message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
