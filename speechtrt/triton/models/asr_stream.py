"""Triton Python-backend model (``model.py``): the streaming ASR step under the sequence batcher, state on the server.

A client sends ``features [1, T, 80]`` (T a multiple of 4 except a sequence's last chunk) with a sequence id and
START/END flags, and gets ``log_probs [1, ceil(T/4), V]``. Triton's Python backend has no implicit state, so this
model keeps each sequence's state (``ctx1``, ``ctx2``, ``h``, ``c`` of the exported ``asr_stream_step`` graph) itself,
keyed by the CORRID control input: zero at START, updated after every chunk, dropped at END or after
``max_sequence_idle_microseconds`` without a request (the same bound after which Triton releases the sequence). The
sequence batcher sends every request of a sequence to the same instance, so the state is always here.

The oldest-first strategy hands ``execute`` one request from each of up to ``max_batch_size`` ready sequences; those
with chunks of equal length run as one batched step (their states stacked along each tensor's batch axis).
"""

from __future__ import annotations

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from speechtrt.triton.models.common import ModelContext, error_response, to_numpy, to_torch

STATE_BATCH_AXES = {"ctx1": 0, "ctx2": 0, "h": 1, "c": 1}  # where each state tensor of the graph keeps the batch


class TritonPythonModel:
    def initialize(self, args):
        from speechtrt.export.components import component
        from speechtrt.runtime.open import Artifacts, open_runner

        ctx = ModelContext.from_args(args)
        comp = component(ctx.param("component"))
        onnx = ctx.version_dir / ctx.param("onnx")
        self.ctx = ctx
        self.runner = open_runner(comp, "ort", ctx.param("precision", "fp32"), "cpu", Artifacts(onnx_dir=onnx.parent),
                                  threads=ctx.int_param("threads", 1))
        # one sequence's zero state: each state input of the graph with batch 1
        self.zero = {s.name: np.zeros([1 if d == "batch" else d for d in s.shape], dtype=np.float32)
                     for s in comp.inputs if s.name in STATE_BATCH_AXES}
        self.idle_s = ctx.int_param("max_sequence_idle_microseconds", 10_000_000) / 1e6
        self.states: dict[int, dict[str, np.ndarray]] = {}
        self.last_seen: dict[int, float] = {}

    def execute(self, requests):
        now = time.monotonic()
        for corrid in [c for c, t in self.last_seen.items() if now - t > self.idle_s]:
            self._drop(corrid)
        responses: list = [None] * len(requests)
        ready: dict[int, list[tuple[int, int, bool, np.ndarray]]] = {}  # chunk length -> (index, corrid, end, features)
        for i, request in enumerate(requests):
            try:
                corrid, start, end, features = self._parse(request)
            except ValueError as exc:
                responses[i] = error_response(pb_utils, f"{self.ctx.name}: {exc}")
                continue
            if start:
                self.states[corrid] = {k: v.copy() for k, v in self.zero.items()}
            elif corrid not in self.states:
                responses[i] = error_response(
                    pb_utils, f"{self.ctx.name}: sequence {corrid} has no state on this instance (it ended, or was "
                              f"idle for more than {self.idle_s:g} s); start it again with the START flag")
                continue
            self.last_seen[corrid] = now
            ready.setdefault(features.shape[1], []).append((i, corrid, end, features))
        for group in ready.values():
            for i, response in self._step(group):
                responses[i] = response
        return responses

    def _parse(self, request) -> tuple[int, bool, bool, np.ndarray]:
        def control(name):
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0]

        features = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
        if features.shape[0] != 1:
            raise ValueError(f"features carry one stream per request ([1, T, 80]); got a batch of {features.shape[0]}")
        if features.shape[1] == 0:
            raise ValueError("features chunk is empty (T = 0); send at least one frame")
        return int(control("CORRID")), bool(control("START")), bool(control("END")), features

    def _step(self, group):
        """One batched step for sequences whose chunks have the same length; their states advance in place."""
        corrids = [c for _, c, _, _ in group]
        feeds = {"features": np.concatenate([f for *_, f in group])}
        for name, axis in STATE_BATCH_AXES.items():
            feeds[name] = np.concatenate([self.states[c][name] for c in corrids], axis=axis)
        try:
            out = {n: to_numpy(t) for n, t in self.runner.infer({k: to_torch(v) for k, v in feeds.items()}).items()}
        except Exception as exc:  # the step failed: those sequences cannot go on, the others are untouched
            for c in corrids:
                self._drop(c)
            return [(i, error_response(pb_utils, f"{self.ctx.name}: {exc}")) for i, *_ in group]
        results = []
        for j, (i, corrid, end, _) in enumerate(group):
            if end:
                self._drop(corrid)
            else:
                self.states[corrid] = {name: np.take(out[f"{name}_out"], [j], axis=axis).copy()
                                       for name, axis in STATE_BATCH_AXES.items()}
            log_probs = np.ascontiguousarray(out["log_probs"][j:j + 1])
            results.append((i, pb_utils.InferenceResponse([pb_utils.Tensor("log_probs", log_probs)])))
        return results

    def _drop(self, corrid: int) -> None:
        self.states.pop(corrid, None)
        self.last_seen.pop(corrid, None)

    def finalize(self):
        self.runner.close()
