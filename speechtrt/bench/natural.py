"""Natural lengths: in-flight against static batching on a mixed-length arrival stream, same batch size, same run.

A model that decodes to its stop token (a trained voice, or any model whose stop head fires) finishes its requests
at different steps. Two policies serve the same requests, in the same arrival order, on the same
:class:`~speechtrt.tts.service.TTSService` with ``batch`` slots:

* **in-flight** (the scheduler as it runs in production): a request joins at the first step boundary after it
  arrives and a free slot exists, and leaves the step it stops;
* **static**: the next ``batch`` requests (in arrival order) start together once they have arrived and the previous
  batch has finished entirely; the batch runs until its longest request stops. Finished requests leave the step (no
  compute is spent on them), so this is the *favourable* form of static batching and the in-flight gain measured
  against it is a lower bound.

Arrivals are a backlog (every request waiting at time 0) or a seeded Poisson stream (``arrival_rate`` requests per
second). The decoder is what batching changes; the vocoder does the same work under both policies, so by default
it is replaced by a no-op runner and the numbers are decoder throughput (``include_vocoder`` keeps it, inline).
Both policies must produce the same number of frames for every request (checked and reported).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.bench.timing import summarize_ms, synchronize

TARGET_SPEEDUP = 1.5
"""The issue's target: in-flight batching at least 1.5× the throughput of static batching at the same batch size."""


@dataclass(frozen=True)
class NaturalConfig:
    batch: int = 8  # slots: the batch size of both policies
    requests: int = 32
    arrival_rate: float = 0.0  # requests per second (Poisson, seeded); 0: a backlog, all arrive at once
    repeats: int = 1  # runs per policy, alternating; the report keeps each policy's fastest
    seed: int = 0
    device: str = "cpu"
    max_frames: int | None = None  # cap per request (default: the model's max_frames)
    stop_threshold: float = 0.5
    include_vocoder: bool = False
    onnx_dir: str = "out/onnx"
    engine_dir: str = "engines"
    calib_dir: str = "calib_data"
    threads: int | None = None
    text_source: str | None = None


class _NullVocoder:
    """A vocoder runner that returns silence of the right length at no cost (the vocoder is the same work under
    both policies; leaving it out measures what batching changes)."""

    component, backend, precision = "tts_vocoder", "none", "fp32"
    input_names, output_names = ("mel",), ("audio",)

    def __init__(self, samples_per_frame: int, device):
        self.spf, self.device = samples_per_frame, torch.device(device)

    def infer(self, feeds, stream=None):
        mel = feeds["mel"]
        return {"audio": torch.zeros(mel.shape[0], mel.shape[1] * self.spf, device=mel.device)}

    def close(self) -> None:
        pass


def arrival_times(n: int, rate: float, seed: int) -> list[float]:
    """Seconds after the start at which each request arrives: all 0 (backlog), or a Poisson stream of ``rate``/s."""
    if rate <= 0:
        return [0.0] * n
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def _run(service, texts: list[str], arrivals: list[float], policy: str, batch: int) -> dict:
    """Serve every text under ``policy``; returns its measurements and each request's frame count."""
    n = len(texts)
    first_step = len(service.scheduler.stats)
    handles: list = [None] * n
    done_at: list[float | None] = [None] * n
    synchronize(service.device)
    t0 = time.perf_counter()

    def poll() -> None:
        now = time.perf_counter() - t0
        for i, h in enumerate(handles):
            if h is not None and done_at[i] is None and h.done():
                done_at[i] = now

    if policy == "in_flight":
        nxt = 0
        while nxt < n or not service.idle:
            now = time.perf_counter() - t0
            while nxt < n and arrivals[nxt] <= now:
                handles[nxt] = service.submit(texts[nxt])
                nxt += 1
            busy = service.step()
            poll()
            if not busy and nxt < n:
                time.sleep(min(0.001, max(0.0, arrivals[nxt] - (time.perf_counter() - t0))))
    else:
        for lo in range(0, n, batch):
            group = range(lo, min(n, lo + batch))
            wait = arrivals[group[-1]] - (time.perf_counter() - t0)
            if wait > 0:
                time.sleep(wait)
            for i in group:
                handles[i] = service.submit(texts[i])
            while service.step():
                poll()
            service.run_until_idle()
            poll()
    service.run_until_idle()
    synchronize(service.device)
    seconds = time.perf_counter() - t0
    poll()
    results = [h.result() for h in handles]
    stats = service.scheduler.stats[first_step:]
    frames = [r.frames for r in results]
    latency = [(d - a) for d, a in zip(done_at, arrivals)]
    return {
        "policy": policy, "requests": n, "seconds": round(seconds, 4), "frames": int(sum(frames)),
        "frames_per_s": sum(frames) / seconds, "utt_per_s": n / seconds, "steps": len(stats),
        "mean_active": float(np.mean([s.active for s in stats])) if stats else 0.0,
        "latency_ms": summarize_ms(latency).to_json(),
        "_frames": frames, "_reasons": [r.finish_reason for r in results],
    }


def _best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def natural_length(model, cfg: NaturalConfig = NaturalConfig(), variants=(("torch", "fp32"),),
                   texts: list[str] | None = None, log: Callable[[str], None] = lambda msg: None,
                   model_name: str | None = None) -> dict:
    """Serve ``cfg.requests`` held-out sentences (or ``texts``) to their stop token under both policies, for each
    (backend, precision) of ``variants``; returns the report's ``natural_length`` block."""
    from speechtrt.tts.service import ServiceConfig, TTSService

    from speechtrt.tts.quality import held_out_sentences

    texts = list(texts) if texts is not None else held_out_sentences(model, cfg.requests, cfg.seed, cfg.text_source)
    arrivals = arrival_times(len(texts), cfg.arrival_rate, cfg.seed)
    c = model.config
    max_frames = min(cfg.max_frames or c.max_frames, c.max_frames)
    out: dict = {
        "model": model_name or getattr(model, "name", None) or "tts",
        "batch": cfg.batch, "requests": len(texts),
        "arrivals": "backlog (all at t=0)" if cfg.arrival_rate <= 0 else f"Poisson, {cfg.arrival_rate:g}/s (seed {cfg.seed})",
        "vocoder": "included (inline, both policies)" if cfg.include_vocoder else
                   "left out (the same work under both policies): decoder throughput",
        "static_policy": "next `batch` requests start together once arrived and the previous batch has finished; "
                         "finished requests leave the step (favourable to static)",
        "max_frames": max_frames, "config": {k: v for k, v in asdict(cfg).items()}, "variants": {},
    }
    lengths = None
    for backend, precision in variants:
        name = f"{backend}-{precision}"
        log(f"natural lengths: {name}, batch {cfg.batch}, {len(texts)} requests")
        svc_cfg = ServiceConfig(backend=backend, precision=precision, device=cfg.device, max_slots=cfg.batch,
                                max_frames=max_frames, max_text=c.max_text_len, frame_rule=None,
                                stop_threshold=cfg.stop_threshold, overlap_vocoder=False,
                                onnx_dir=cfg.onnx_dir, engine_dir=cfg.engine_dir, threads=cfg.threads)
        try:
            _ensure(model, backend, precision, cfg, log)
            vocoder = None if cfg.include_vocoder else _NullVocoder(c.samples_per_frame, cfg.device)
            service = TTSService(model, svc_cfg, vocoder=vocoder)
        except Exception as exc:  # a backend that cannot run here is reported, not fatal
            out["variants"][name] = {"skipped": str(exc)[:300]}
            log(f"natural lengths: skipping {name}: {exc}")
            continue
        try:
            service.synthesize(texts[0])  # warm-up
            runs: dict[str, list[dict]] = {"in_flight": [], "static": []}
            for r in range(cfg.repeats):
                order = ("in_flight", "static") if r % 2 == 0 else ("static", "in_flight")
                for policy in order:
                    runs[policy].append(_run(service, texts, arrivals, policy, cfg.batch))
        finally:
            service.close()
        inflight, static = _best(runs["in_flight"]), _best(runs["static"])
        same = inflight["_frames"] == static["_frames"]
        reasons = inflight.pop("_reasons")
        frames = inflight.pop("_frames")
        static.pop("_frames"), static.pop("_reasons")
        for runs_of in runs.values():
            for run in runs_of:
                run.pop("_frames", None), run.pop("_reasons", None)
        lengths = lengths or frames
        out["variants"][name] = {
            "backend": backend, "precision": precision, "in_flight": inflight, "static": static,
            "speedup": inflight["frames_per_s"] / static["frames_per_s"],
            "step_ratio": static["steps"] / inflight["steps"] if inflight["steps"] else None,
            "ms_per_step": {"in_flight": 1000 * inflight["seconds"] / max(1, inflight["steps"]),
                            "static": 1000 * static["seconds"] / max(1, static["steps"])},
            "same_frames_per_request": same,
            "finish_reasons": {k: reasons.count(k) for k in sorted(set(reasons))},
            "runs": {p: [r["seconds"] for r in rs] for p, rs in runs.items()},
        }
        log(f"natural lengths {name}: in-flight {inflight['frames_per_s']:.0f} frames/s, static "
            f"{static['frames_per_s']:.0f} frames/s ({out['variants'][name]['speedup']:.2f}x)")
    if lengths:
        out["lengths"] = {"min": int(min(lengths)), "median": float(statistics.median(lengths)),
                          "max": int(max(lengths)), "mean": float(np.mean(lengths)),
                          "frames_per_request": [int(x) for x in lengths]}
    ran = {k: v for k, v in out["variants"].items() if "speedup" in v}
    if ran:
        best_name = max(ran, key=lambda k: ran[k]["speedup"])
        value = ran[best_name]["speedup"]
        stopped = all(v["finish_reasons"].get("stop_token", 0) == out["requests"] for v in ran.values())
        out["target"] = {"target": f"in-flight >= {TARGET_SPEEDUP}x static frames/s at batch {cfg.batch}",
                         "variant": best_name, "value": value, "met": value >= TARGET_SPEEDUP,
                         "missed_by": None if value >= TARGET_SPEEDUP else round(TARGET_SPEEDUP - value, 3),
                         "all_requests_stopped": stopped}
    return out


def _ensure(model, backend: str, precision: str, cfg: NaturalConfig, log) -> None:
    """Make the graphs (plans) the variant opens when missing."""
    if backend == "torch":
        return
    from speechtrt.export.components import component
    from speechtrt.pipeline import ensure_artifact
    from speechtrt.runtime.open import Artifacts

    name = getattr(model, "name", None)
    artifacts = Artifacts(onnx_dir=Path(cfg.onnx_dir), engine_dir=Path(cfg.engine_dir), model=model,
                          model_name=name)
    parts = ("tts_encoder", "tts_decoder_step") + (("tts_vocoder",) if cfg.include_vocoder else ())
    for part in parts:
        ensure_artifact(component(part, model.config, name or "tts"), precision, backend, artifacts,
                        calib_dir=cfg.calib_dir, log=log)
