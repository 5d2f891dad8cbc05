"""Triton Python-backend model (``model.py``): one stateless exported graph (offline ASR, TTS encoder, TTS vocoder)
run by the speechtrt runtime over ONNX Runtime — the CPU twin of the ``tensorrt_plan`` model of the same name.

Triton's dynamic batcher hands ``execute`` the requests it gathered (same shapes, up to ``max_batch_size`` rows).
They are concatenated along the batch axis, run as one call, and split back: one response per request, in order.
A model with ``max_batch_size: 0`` (its tensors carry the batch on another axis) runs each request alone.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from speechtrt.triton.models.common import ModelContext, error_response, to_numpy, to_torch


class TritonPythonModel:
    def initialize(self, args):
        from speechtrt.export.components import component
        from speechtrt.runtime.open import Artifacts, open_runner

        ctx = ModelContext.from_args(args)
        onnx = ctx.version_dir / ctx.param("onnx")
        self.ctx = ctx
        self.runner = open_runner(component(ctx.param("component")), "ort", ctx.param("precision", "fp32"), "cpu",
                                  Artifacts(onnx_dir=onnx.parent), threads=ctx.int_param("threads", 1))
        self.batched = ctx.max_batch_size > 0
        self.input_names = [t["name"] for t in ctx.config["input"]]
        self.output_names = [t["name"] for t in ctx.config["output"]]
        # per-row scalars declared dims [1] + reshape [] arrive as [B] (reshape applied) or [B, 1]
        self.row_scalars = {t["name"] for t in (*ctx.config["input"], *ctx.config["output"]) if "reshape" in t}

    def execute(self, requests):
        feeds = [self._feeds(r) for r in requests]
        responses: list = [None] * len(requests)
        if not self.batched:
            for i, f in enumerate(feeds):
                responses[i] = self._run([i], [f])[0]
            return responses
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(feeds):
            groups.setdefault(tuple((n, f[n].shape[1:]) for n in self.input_names), []).append(i)
        for members in groups.values():
            for i, response in zip(members, self._run(members, [feeds[i] for i in members])):
                responses[i] = response
        return responses

    def _feeds(self, request) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.input_names:
            array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            feeds[name] = array.reshape(-1) if name in self.row_scalars else array
        return feeds

    def _run(self, members: list[int], feeds: list[dict]) -> list:
        sizes = [len(f[self.input_names[0]]) for f in feeds] if self.batched else [None]
        try:
            batch = {n: to_torch(np.concatenate([f[n] for f in feeds])) for n in self.input_names}
            out = {n: to_numpy(t) for n, t in self.runner.infer(batch).items()}
        except Exception as exc:  # one bad batch fails its requests, not the model
            return [error_response(pb_utils, f"{self.ctx.name}: {exc}") for _ in members]
        if not self.batched:
            return [pb_utils.InferenceResponse([pb_utils.Tensor(n, out[n]) for n in self.output_names])]
        responses, start = [], 0
        for size in sizes:
            tensors = []
            for n in self.output_names:
                part = np.ascontiguousarray(out[n][start:start + size])
                tensors.append(pb_utils.Tensor(n, part.reshape(-1, 1) if n in self.row_scalars else part))
            responses.append(pb_utils.InferenceResponse(tensors))
            start += size
        return responses

    def finalize(self):
        self.runner.close()
