"""Everything a server process holds: the models' services (loaded once), admission, routing, metrics.

:meth:`ServerState.load` opens every runner through ``open_runner`` (graphs a non-torch backend needs are exported
on first use into a cache folder keyed by the model's weights, so a graph of other weights is never picked up by
accident); :meth:`start` starts the worker threads (TTS steppers, transcription batchers, the stream engine);
:meth:`stop` stops them after the server drained.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

import torch

from speechtrt.models.audio import FEATURES
from speechtrt.serve.admission import Admission, Gate
from speechtrt.serve.asr_batcher import OfflineASR, make_decoder
from speechtrt.serve.config import ServeConfig
from speechtrt.serve.metrics import ServerMetrics
from speechtrt.serve.models import load_asr, tts_spec
from speechtrt.serve.routing import Router, Selection
from speechtrt.serve.streams import StreamingASR
from speechtrt.serve.tts_worker import TTSWorker

log = logging.getLogger("speechtrt.serve")

CACHE = Path("tmp/cache/serve")


def weights_dir(model, name: str, root: Path = CACHE / "onnx") -> Path:
    """``<root>/<name>-<digest of the weights>``: where this exact model's exported graphs live."""
    digest = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        digest.update(k.encode())
        digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    return root / f"{name}-{digest.hexdigest()[:12]}"


class ServerState:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = ServerMetrics()
        self.admission = Admission(config.limits, self.metrics, config.effective_api_key)
        self.tts: dict[str, TTSWorker] = {}
        self.asr: dict[str, OfflineASR] = {}
        self.streams: dict[str, StreamingASR] = {}
        self.descriptions: dict[str, str] = {}
        self.router = Router((), ())
        self.ready = False
        self.created = int(time.time())
        self.metrics.on_scrape(self._update_gauges)

    # ---- loading

    @classmethod
    def load(cls, config: ServeConfig, log_fn: Callable[[str], None] = log.info) -> "ServerState":
        """Open every configured model (blocking). Raises SpeechTRTError naming what is missing."""
        from speechtrt.export.components import component
        from speechtrt.pipeline import ensure_artifact
        from speechtrt.runtime.open import Artifacts, open_runner
        from speechtrt.tts.service import ServiceConfig, TTSService

        state = cls(config)
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.tts is not None:
            t = config.tts
            for name in t.models:
                spec = tts_spec(name)
                model = spec.load(config.checkpoints)
                onnx_dir = weights_dir(model, name) if t.backend != "torch" else config.onnx_dir
                if t.backend != "torch":
                    artifacts = Artifacts(onnx_dir, config.engine_dir, model, name)
                    for comp in ("tts_encoder", "tts_decoder_step", "tts_vocoder"):
                        ensure_artifact(component(comp, model.config), t.precision, t.backend, artifacts, log=log_fn)
                service = TTSService(model, ServiceConfig(
                    backend=t.backend, precision=t.precision, device=config.device, max_slots=t.max_slots,
                    max_frames=t.max_frames, max_text=t.max_text, frame_rule=spec.frame_rule,
                    onnx_dir=str(onnx_dir), engine_dir=str(config.engine_dir), threads=config.threads))
                state.tts[name] = TTSWorker(name, service, state.metrics)
                state.descriptions[name] = spec.description
                log_fn(f"TTS {name}: {spec.description}; {t.backend} {t.precision}, {t.max_slots} slots")
        if config.asr is not None:
            a = config.asr
            decoder = make_decoder(a.decoder)
            for name in a.models:
                model, desc = load_asr(name, config.checkpoints)
                onnx_dir = weights_dir(model, name) if a.backend != "torch" else config.onnx_dir
                artifacts = Artifacts(onnx_dir, config.engine_dir, model, name)
                comp = f"asr_{name.removeprefix('asr-')}"
                ensure_artifact(comp, a.precision, a.backend, artifacts, log=log_fn)
                runner = open_runner(comp, a.backend, a.precision, config.device, artifacts, threads=config.threads)
                state.asr[name] = OfflineASR(name, runner, max_batch=a.max_batch, max_wait_ms=a.max_wait_ms,
                                             max_batch_frames=a.max_batch_frames, decoder=decoder,
                                             metrics=state.metrics)
                state.descriptions[name] = desc
                log_fn(f"ASR {name}: {desc}; {a.backend} {a.precision}, {a.decoder} decoding")
        if config.stream is not None:
            s = config.stream
            model, desc = load_asr(s.model, config.checkpoints)
            state.streams[s.model] = StreamingASR(
                s.model, model, s, device=config.device, threads=config.threads,
                idle_timeout_s=max(60.0, 4 * config.limits.stream_idle_s), cache_dir=CACHE / "stream-onnx",
                on_batch=lambda n, m=s.model: state.metrics.batch_size.labels(f"stream:{m}").observe(n))
            state.descriptions[s.model] = desc
            log_fn(f"streaming {s.model}: {desc}; {s.backend}, {s.max_streams} streams, {s.chunk_ms} ms chunks")
        selection = Selection.from_report(config.select) if config.select else None
        state.router = Router(tuple(state.asr), tuple(state.streams), selection,
                              config.asr.default if config.asr else None)
        if selection:
            served = (*state.asr, *state.streams)
            log_fn(f"routing by {selection.source}: " + ", ".join(
                f"{d} -> {v}" + ("" if v.split("/")[0] in served else " (not served: default)")
                for d, v in selection.per_dialect.items()))
        return state

    # ---- lifecycle

    def warmup(self) -> None:
        """One short request through every service (first-call allocations, kernel choice), so the first client
        does not pay for them."""
        import numpy as np

        for worker in self.tts.values():
            worker.service.synthesize("Warm up.")
        for asr in self.asr.values():
            asr.start()
            asr.transcribe(np.zeros(FEATURES.sample_rate // 2, np.float32), timeout=120)

    def start(self) -> None:
        lim = self.config
        self.warmup()
        for name, worker in self.tts.items():
            self.admission.gate(f"tts:{name}", lim.tts.max_concurrent)
            worker.start()
        for name, asr in self.asr.items():
            self.admission.gate(f"asr:{name}", lim.asr.max_concurrent)
            asr.start()
        for name, stream in self.streams.items():
            self.admission.gate(f"stream:{name}", stream.capacity)
            stream.start()
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        for worker in self.tts.values():
            worker.stop()
        for asr in self.asr.values():
            asr.stop()
        for stream in self.streams.values():
            stream.close()

    def gate(self, service: str, model: str) -> Gate:
        return self.admission.gates[f"{service}:{model}"]

    # ---- metrics

    def _update_gauges(self) -> None:
        m = self.metrics
        for name, w in self.tts.items():
            m.queue_depth.labels(f"tts:{name}").set(w.queued)
            m.active_slots.labels(f"tts:{name}").set(w.active)
        for name, a in self.asr.items():
            m.queue_depth.labels(f"asr:{name}").set(a.queued)
            m.active_slots.labels(f"asr:{name}").set(a.active)
        open_streams = 0
        for name, s in self.streams.items():
            n = s.open_streams
            open_streams += n
            m.active_slots.labels(f"stream:{name}").set(n)
        m.active_streams.set(open_streams)
        for key, gate in self.admission.gates.items():
            m.in_flight.labels(key).set(gate.in_flight)
            if key.startswith("stream:"):
                m.queue_depth.labels(key).set(gate.waiting)
