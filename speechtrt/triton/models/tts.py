"""Triton Python-backend model (``model.py``), decoupled: the in-flight TTS decode loop, audio streamed in chunks.

Each instance owns one :class:`~speechtrt.tts.service.TTSService` and a thread that steps it. ``execute`` only
parses and submits: a text is normalised and tokenised once, queued (or refused with the service's reason), and the
call returns; requests join the running batch between decoder steps. When a request's audio is ready it goes back
through the request's response sender as chunks of ``chunk_samples`` (``audio``, FP32), then the final flag.

The decoder step runs in-process (its KV cache lives in the service's pool: ONNX Runtime here, the TensorRT plan in
``1/engines/`` on a GPU). The encoder and vocoder are the repository's ``tts_encoder`` / ``tts_vocoder`` models,
reached through BLS, so Triton schedules and batches them across instances like any other model.

Inputs: ``text`` (BYTES [1], UTF-8), optional ``n_frames`` (INT32 [1], a fixed length instead of the frame rule).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from speechtrt.triton.models.common import ModelContext, error_response, to_numpy


class BLSRunner:
    """A repository model reached through BLS, as a :class:`~speechtrt.runtime.runner.Runner` for the service."""

    backend = "triton"
    precision = "fp32"

    def __init__(self, model_name: str, input_names, output_names, device: str):
        self.component = model_name
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.device = torch.device(device)

    def infer(self, feeds, stream=None):
        inputs = []
        for name in self.input_names:
            t = feeds[name]
            if t.is_cuda:
                inputs.append(pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(t.contiguous())))
            else:
                inputs.append(pb_utils.Tensor(name, to_numpy(t)))
        response = pb_utils.InferenceRequest(model_name=self.component, inputs=inputs,
                                             requested_output_names=list(self.output_names)).exec()
        if response.has_error():
            raise RuntimeError(f"{self.component} (BLS): {response.error().message()}")
        out = {}
        for name in self.output_names:
            t = pb_utils.get_output_tensor_by_name(response, name)
            value = torch.from_numpy(t.as_numpy().copy()) if t.is_cpu() else torch.utils.dlpack.from_dlpack(t.to_dlpack())
            out[name] = value.to(self.device)
        return out

    def close(self) -> None:
        pass


class TritonPythonModel:
    def initialize(self, args):
        from speechtrt.config import TTSConfig
        from speechtrt.models.tts import SimpleTTSModel
        from speechtrt.tts.service import ServiceConfig, TTSService

        ctx = ModelContext.from_args(args)
        self.ctx = ctx
        with torch.device("meta"):  # the service needs the model's config and tokenizer, not its weights
            model = SimpleTTSModel(TTSConfig(**json.loads(ctx.param("tts_config"))))
        decoder = ctx.version_dir / ctx.param("decoder")
        backend = ctx.param("backend", "ort")
        engine_dir = ctx.version_dir / "engines"
        config = ServiceConfig(backend=backend, precision=ctx.param("precision", "fp32"), device=ctx.device,
                               max_slots=ctx.int_param("max_slots", 16), onnx_dir=str(decoder.parent),
                               engine_dir=str(engine_dir), threads=ctx.int_param("threads", 1))
        encoder = BLSRunner(ctx.param("encoder_model"), ("tokens", "text_lengths"), ("cross_k", "cross_v"), ctx.device)
        vocoder = BLSRunner(ctx.param("vocoder_model"), ("mel",), ("audio",), ctx.device)
        self.service = TTSService(model, config, encoder=encoder, vocoder=vocoder)
        self.chunk = ctx.int_param("chunk_samples", 5512)
        self.pending: dict[str, tuple] = {}  # request id -> (handle, sender)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.loop = threading.Thread(target=self._run, name="tts-decode-loop", daemon=True)
        self.loop.start()

    def execute(self, requests):
        from speechtrt.errors import SpeechTRTError

        for request in requests:
            sender = request.get_response_sender()
            try:
                text = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
                if text.size != 1:
                    raise ValueError(f"text carries one string per request, got {text.size}")
                value = text[0].decode("utf-8") if isinstance(text[0], bytes) else str(text[0])
                frames = pb_utils.get_input_tensor_by_name(request, "n_frames")
                n_frames = None if frames is None else int(frames.as_numpy().reshape(-1)[0])
                handle = self.service.submit(value, n_frames=n_frames)
            except (SpeechTRTError, ValueError, UnicodeDecodeError) as exc:
                sender.send(error_response(pb_utils, f"tts: {exc}"),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            with self.lock:
                self.pending[handle.request_id] = (handle, sender)
            handle.future.add_done_callback(lambda f, rid=handle.request_id: self._deliver(rid))
        self.wake.set()
        return None

    def _deliver(self, request_id: str) -> None:
        """Send a finished request's audio as chunks, then the final flag (runs on the thread that finished it)."""
        with self.lock:
            handle, sender = self.pending.pop(request_id, (None, None))
        if handle is None:
            return
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        if handle.future.cancelled() or handle.future.exception() is not None:
            reason = "cancelled" if handle.future.cancelled() else str(handle.future.exception())
            sender.send(error_response(pb_utils, f"tts: {reason}"), flags=final)
            return
        audio = np.ascontiguousarray(handle.future.result().audio, dtype=np.float32)
        for start in range(0, max(len(audio), 1), self.chunk):
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("audio", audio[start:start + self.chunk])]))
        sender.send(flags=final)

    def _run(self) -> None:
        """Step the service while it has work; sleep until ``execute`` brings more."""
        while not self.stopping:
            try:
                busy = self.service.step()
            except Exception as exc:  # a failed step fails the requests in flight; the loop goes on
                pb_utils.Logger.log_error(f"tts: decode step failed: {exc}")
                with self.lock:
                    in_flight = list(self.pending)
                for request_id in in_flight:
                    self.service.cancel(request_id)
                    self._deliver(request_id)
                busy = False
            if not busy:
                self.wake.wait(0.05)
                self.wake.clear()

    def finalize(self):
        self.stopping = True
        self.wake.set()
        self.loop.join(timeout=10)
        self.service.close()
