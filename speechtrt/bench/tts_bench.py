"""``speechtrt bench`` for TTS: the seed baseline and the optimized variants, measured in the same run.

Workload: the seed's ``sample_text_inputs.json`` categories (short / medium / long) plus a 50-character headline.
Every variant, the baseline included, decodes a fixed number of frames per text (``FrameRule``: 5 frames per
character, clamped to 10..1000; 50 characters → 250 frames), because a randomly initialised stop head stops at once.

Per variant: latency avg/p50/p95 per category (each text synthesized alone, after warm-up, ``repeats`` times), RTF,
a batch-size sweep (B copies of the headline submitted together: latency of the batch), a closed-loop concurrency
sweep (C clients, each with one request outstanding: utterances/s and mel frames/s), peak memory during those
sweeps (RSS growth on CPU; allocator and NVML peaks on GPU), GPU utilisation (NVML sampling), and fidelity against
the FP32 reference (mel SNR in dB). Latency runs on a service sized for the whole workload (4 slots, up to 1000
frames); the sweeps on one sized for the headline (slots for the largest sweep point, 250 frames, 64 tokens). The seed baseline recomputes the whole decoder every frame (O(T²)); on a CPU its medium and long
texts take minutes each, so by default it runs the headline and the short category only (``baseline_categories``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.bench.timing import summarize_ms, synchronize
from speechtrt.config import FrameRule
from speechtrt.errors import InputError
from speechtrt.quantize.fidelity import snr_db
from speechtrt.reporting import UsageSampler, environment, write_json

HEADLINE = "Storm warning issued for the coast as winds build."
"""The 50-character headline text (250 frames under the frame rule)."""
assert len(HEADLINE) == 50

CATEGORIES = ("headline", "short", "medium", "long")

TARGETS = {
    "cpu": {"headline_speedup_p50": 50.0, "mel_snr_db": 30.0, "step_ratio_to_floor": 1.5, "batch32_scaling": 3.0},
    "cuda": {"headline_p50_ms": 50.0, "frames_per_s": 300_000.0, "peak_mem_mb": 2048.0, "mel_snr_db": 30.0},
}
"""What the report checks (``speechtrt.bench.tts_report.targets``): on a CPU the headline end to end at 50× the
seed loop with mel SNR ≥ 30 dB vs FP32, the best variant's step within 1.5× its precision's memory floor, and
in-flight batching at batch 32 delivering ≥ 3× the frames/s of batch 1."""


def sample_texts() -> dict:
    """The seed's sample texts (shipped as package data)."""
    return json.loads(resources.files("speechtrt.tts").joinpath("sample_texts.json").read_text())


def workload(categories: tuple[str, ...] = CATEGORIES) -> dict[str, list[str]]:
    cats = sample_texts()["test_categories"]
    out = {}
    for c in categories:
        if c == "headline":
            out[c] = [HEADLINE]
        elif c in cats:
            out[c] = list(cats[c])
        else:
            raise InputError(f"unknown category {c!r}: choose from {', '.join(CATEGORIES)}")
    return out


@dataclass(frozen=True)
class BenchConfig:
    device: str = "cpu"
    backends: tuple[str, ...] = ("torch", "ort")
    precisions: tuple[str, ...] = ("fp32",)
    repeats: int = 3
    warmup: int = 1
    categories: tuple[str, ...] = CATEGORIES
    baseline_categories: tuple[str, ...] = ("headline", "short")
    baseline_repeats: int = 3  # applies to the headline; other baseline categories run once
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    requests_per_client: int = 2
    max_frames: int = 1000  # cap of the frame rule (lower it for quick runs; applies to every variant)
    max_slots: int = 16
    onnx_dir: str = "out/onnx"
    engine_dir: str = "engines"
    calib_dir: str = "calib_data"  # calibration sets for the ModelOpt graph forms (captured there when absent)
    out_dir: str = "reports"
    threads: int | None = None
    quick: bool = False
    model: str | None = None  # stop-token model of the natural-length workload (None: voice-en when present)
    workload: str = "all"  # all | natural (only the natural-length section, merged into an existing report)
    natural_batch: int = 8
    natural_requests: int = 32
    natural_repeats: int = 3  # runs per policy, alternating; each policy's fastest is kept
    natural_arrival_rate: float = 0.0  # requests/s (Poisson); 0: a backlog

    @property
    def frame_rule(self) -> FrameRule:
        return FrameRule(max_frames=self.max_frames, min_frames=min(10, self.max_frames))


@dataclass
class Variant:
    name: str
    backend: str
    precision: str
    note: str = ""


def quick_config(cfg: BenchConfig) -> BenchConfig:
    """A smoke-test sized run: few frames, one text per category, tiny sweeps."""
    return replace(cfg, max_frames=min(cfg.max_frames, 24), categories=("headline", "short"),
                   baseline_categories=("headline",), concurrency=(1, 2), batch_sizes=(1, 2), baseline_repeats=1,
                   requests_per_client=1, max_slots=4, natural_batch=min(cfg.natural_batch, 2),
                   natural_requests=min(cfg.natural_requests, 6))


def plan_variants(cfg: BenchConfig) -> list[Variant]:
    """The optimized variants for this device: each backend × precision that can run here."""
    out = []
    for backend in cfg.backends:
        for precision in cfg.precisions:
            if backend == "torch":
                if precision == "int8" and cfg.device.startswith("cuda"):
                    continue  # dynamic INT8 is a CPU path; INT8 on a GPU is the trt backend's
                graphs = cfg.device.startswith("cuda")
                out.append(Variant(f"torch-kv-{precision}" + ("-graphs" if graphs else ""), backend, precision,
                                   "static KV pool, in-flight batching" + (", CUDA graphs" if graphs else "")))
            elif backend == "ort":
                if precision == "bf16":
                    continue
                kernels = " (ONNX Runtime int8 kernels)" if precision == "int8" else ""
                out.append(Variant(f"ort-kv-{precision}", backend, precision,
                                   f"ONNX Runtime, I/O binding, KV pool{kernels}"))
            elif backend == "trt":
                out.append(Variant(f"trt-kv-{precision}", backend, precision, "TensorRT engines, KV pool"))
    return out


def mel_snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """``10 log10(Σ ref² / Σ (ref - other)²)`` (:func:`speechtrt.quantize.fidelity.snr_db`; ``inf`` when equal)."""
    return snr_db(other, reference)


def _ensure_artifacts(cfg: BenchConfig, model, variants: list[Variant], log: Callable[[str], None]) -> None:
    """Make the graphs (and plans) each ONNX Runtime / TensorRT variant opens, when they are missing."""
    from speechtrt.export.components import component
    from speechtrt.pipeline import ensure_artifact
    from speechtrt.runtime.open import Artifacts

    artifacts = Artifacts(onnx_dir=Path(cfg.onnx_dir), engine_dir=Path(cfg.engine_dir), model=model)
    for v in variants:
        if v.backend == "torch":
            continue
        for name in ("tts_encoder", "tts_decoder_step", "tts_vocoder"):
            try:
                ensure_artifact(component(name, model.config), v.precision, v.backend, artifacts,
                                calib_dir=cfg.calib_dir, log=log)
            except Exception as exc:  # a variant that cannot be made here is reported as skipped, not fatal
                log(f"{v.name}: cannot make {name} ({exc})")
                break


def _closed_loop(service, text: str, frames: int, clients: int, per_client: int) -> tuple[float, int]:
    """C clients, each resubmitting when its request completes; returns (seconds, requests completed)."""
    total = clients * per_client
    submitted, done = 0, 0
    outstanding = []
    synchronize(service.device)
    t0 = time.perf_counter()
    while submitted < min(clients, total):
        outstanding.append(service.submit(text, n_frames=frames))
        submitted += 1
    while done < total:
        busy = service.step()
        still = []
        for h in outstanding:
            if h.done():
                h.result()
                done += 1
                if submitted < total:
                    still.append(service.submit(text, n_frames=frames))
                    submitted += 1
            else:
                still.append(h)
        outstanding = still
        if not busy and outstanding:
            time.sleep(0.0005)  # only vocoder work left in flight
    service.run_until_idle()
    return time.perf_counter() - t0, total


def _batch(service, text: str, frames: int, batch: int) -> float:
    synchronize(service.device)
    t0 = time.perf_counter()
    handles = [service.submit(text, n_frames=frames) for _ in range(batch)]
    service.run_until_idle()
    for h in handles:
        h.result()
    return time.perf_counter() - t0


def _latency_table(seconds: dict[str, list[float]]) -> dict:
    return {c: summarize_ms(s).to_json() for c, s in seconds.items() if s}


def run_tts_bench(cfg: BenchConfig, log: Callable[[str], None] = print,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Run the whole benchmark and write ``tts_bench.json``, ``tts_bench.md`` and the PNGs into ``cfg.out_dir``."""
    from speechtrt.bench.floor import memory_bandwidth_gbs
    from speechtrt.bench.tts_report import render_markdown, targets, write_plots
    from speechtrt.bench.tts_steps import floors, graph_forms, label_slower_than_fp32, recommended_precisions
    from speechtrt.models import build_tts

    if cfg.quick:
        cfg = quick_config(cfg)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but CUDA is not available here; use --device cpu")
    if cfg.workload not in ("all", "natural"):
        raise InputError(f"--workload {cfg.workload!r}: choose all or natural")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    step = progress or (lambda _: None)
    natural_ref = natural_model(cfg)  # resolved first: a bad --model is refused before any work
    if cfg.workload == "natural":
        return _natural_only(cfg, natural_ref, log, step)
    model = build_tts(seed=0)
    texts = workload(cfg.categories)
    if cfg.quick:
        texts = {c: t[:1] for c, t in texts.items()}
    run = _Run(cfg, model, texts, step)
    variants = plan_variants(cfg)
    _ensure_artifacts(cfg, model, variants, log)

    step("memory bandwidth")
    bandwidth = memory_bandwidth_gbs(64 if cfg.quick else 256)
    step(f"memory bandwidth {bandwidth:.1f} GB/s")
    baseline, base_lat, base_mels = _seed_baseline(run)
    hand, hand_mels = _hand_written_kv(run, base_lat)
    results: dict[str, dict] = {"torch-eager-kv": hand}
    mels: dict[str, dict[str, np.ndarray]] = {"torch-eager-kv": hand_mels}
    variants.sort(key=lambda v: (v.backend, v.precision) != ("torch", "fp32"))  # the fidelity reference first
    for v in variants:
        results[v.name], variant_mels = _service_variant(run, v, base_lat, log)
        if variant_mels is not None:
            mels[v.name] = variant_mels
    _fidelity(run, baseline, base_mels, results, mels)
    floors(run, bandwidth, variants, results)
    forms = graph_forms(run, bandwidth, log) if "ort" in cfg.backends and not cfg.device.startswith("cuda") else {}
    label_slower_than_fp32(results)
    natural = natural_section(cfg, natural_ref, variants, log, step)

    report = {
        "benchmark": "tts",
        **environment(cfg.device, cfg.threads),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "workload": {
            "categories": {c: [{"text": t, "chars": len(t), "frames": run.frames_of[t]} for t in ts]
                           for c, ts in texts.items()},
            "frame_rule": {"frames_per_char": run.rule.frames_per_char, "min_frames": run.rule.min_frames,
                           "max_frames": run.rule.max_frames},
            "headline": HEADLINE, "sample_rate": model.config.sample_rate,
            "samples_per_frame": model.config.samples_per_frame,
        },
        "memory_bandwidth_gb_s": round(bandwidth, 2),
        "baseline": baseline,
        "variants": results,
        "graph_forms": forms,
        "recommended_precision": recommended_precisions(results),
        "natural_length": natural,
    }
    report["targets"] = targets(cfg.device, baseline, results)
    out = Path(cfg.out_dir)
    write_json(out / "tts_bench.json", report)
    write_plots(out, baseline, results)
    (out / "tts_bench.md").write_text(render_markdown(report))
    return report


def natural_model(cfg: BenchConfig):
    """The model of the natural-length workload (a :class:`~speechtrt.models.loading.ModelRef`), or None when no
    stop-token model is named and ``voice-en`` is not present."""
    from speechtrt.models.loading import DEFAULT_VOICE, checkpoint_path, resolve_model

    spec = cfg.model or (DEFAULT_VOICE if checkpoint_path(DEFAULT_VOICE) else None)
    if spec is None:
        return None
    ref = resolve_model(spec, kind="tts")
    if not ref.stop_token:
        raise InputError(f"--model {spec}: the natural-length workload needs a model that decodes to its stop token; "
                         "the seeded tts's random stop head fires after one frame (use voice-en, a trained "
                         "checkpoint, or module:factory)")
    return ref


def natural_section(cfg: BenchConfig, ref, variants: list[Variant], log, step) -> dict:
    """The ``natural_length`` block: in-flight vs static batching on held-out sentences decoded to the stop token of
    ``ref``'s model, for each backend × precision of the run (:mod:`speechtrt.bench.natural`)."""
    from speechtrt.bench.natural import NaturalConfig, natural_length
    from speechtrt.pipeline import model_artifacts

    if ref is None:
        return {"skipped": "no stop-token model: checkpoints/voice-en.pt is not here and no --model was given (the "
                           "seeded tts's random stop head fires after one frame, so its lengths are not natural)"}
    step(f"natural lengths with {ref.name}")
    where = model_artifacts(ref.model, Path(cfg.onnx_dir).parent / "artifacts", ref.name)
    ncfg = NaturalConfig(batch=cfg.natural_batch, requests=cfg.natural_requests,
                         arrival_rate=cfg.natural_arrival_rate, device=cfg.device, onnx_dir=str(where.onnx_dir),
                         engine_dir=str(where.engine_dir), calib_dir=str(ref.calib_dir(cfg.calib_dir)),
                         threads=cfg.threads, repeats=1 if cfg.quick else cfg.natural_repeats)
    pairs = tuple(dict.fromkeys((v.backend, v.precision) for v in variants)) or (("torch", "fp32"),)
    block = natural_length(ref.model, ncfg, variants=pairs, log=log, model_name=ref.name)
    block["source"] = ref.source
    return block


def _natural_only(cfg: BenchConfig, ref, log, step) -> dict:
    """``--workload natural``: run only the natural-length section and merge it into ``<out>/tts_bench.json`` (the
    other keys of an existing report are kept as they are)."""
    import json

    if ref is None:
        raise InputError("--workload natural needs a stop-token model: pass --model (voice-en, a checkpoint, "
                         "module:factory) or add checkpoints/voice-en.pt")
    out = Path(cfg.out_dir)
    path = out / "tts_bench.json"
    report = json.loads(path.read_text()) if path.is_file() else {"benchmark": "tts",
                                                                  **environment(cfg.device, cfg.threads)}
    report["natural_length"] = natural_section(cfg, ref, plan_variants(cfg), log, step)
    report["natural_length"]["environment"] = environment(cfg.device, cfg.threads)
    write_json(path, report)
    from speechtrt.bench.tts_report import natural_markdown, render_markdown

    md = render_markdown(report) if "baseline" in report else "\n".join(natural_markdown(report["natural_length"]))
    (out / "tts_bench.md").write_text(md)
    return report


@dataclass
class _Run:
    """What every phase of one benchmark run shares: the config, the model, the texts and their frame counts."""

    cfg: BenchConfig
    model: torch.nn.Module
    texts: dict[str, list[str]]
    step: Callable[[str], None]

    def __post_init__(self):
        self.rule = self.cfg.frame_rule
        self.frames_of = {t: self.rule.frames_for_text(len(t)) for ts in self.texts.values() for t in ts}
        self.headline_frames = self.frames_of[HEADLINE]
        c = self.model.config
        self.sample_rate, self.spf = c.sample_rate, c.samples_per_frame

    def rtf(self, p50_ms: float) -> float:
        return (p50_ms / 1e3) / (self.headline_frames * self.spf / self.sample_rate)


def _seed_baseline(run: _Run) -> tuple[dict, dict[str, list[float]], dict[str, np.ndarray]]:
    """The seed loop on the baseline categories: latency, memory, the mel of every text."""
    from speechtrt.tts.baseline import SeedBaselineTTS

    cfg = run.cfg
    run.step("baseline (seed, full recompute)")
    base = SeedBaselineTTS(run.model, cfg.device, run.rule)
    base.synthesize(HEADLINE[:10])  # warm-up
    cats = [c for c in cfg.baseline_categories if c in run.texts]
    lat, mels, mem = _timed_texts(run, base, cats, cfg.baseline_repeats, "baseline")
    head = summarize_ms(lat["headline"])
    baseline = {
        "name": "seed-baseline", "backend": "torch", "precision": "fp32",
        "note": "seed loop: per request, FP32 eager, decoder recomputed over all frames at every step",
        "categories_measured": list(lat), "latency_ms_by_category": _latency_table(lat),
        "latency_ms": head.to_json(),
        "throughput": {"utt_per_s": 1e3 / head.p50, "frames_per_s": run.headline_frames * 1e3 / head.p50},
        "rtf": run.rtf(head.p50), "peak_mem_mb": _peak_mb(mem, cfg.device), "memory": mem, "fidelity": {},
    }
    return baseline, lat, mels


def _timed_texts(run: _Run, synth, categories: list[str], headline_repeats: int, label: str | None
                 ) -> tuple[dict[str, list[float]], dict[str, np.ndarray], dict]:
    """One single-request loop (``synth.synthesize``) over the texts of ``categories``, the headline repeated:
    latencies per category, the mel of each text and the memory used."""
    lat: dict[str, list[float]] = {}
    mels: dict[str, np.ndarray] = {}
    with UsageSampler(run.cfg.device) as usage:
        for cat in categories:
            reps = headline_repeats if cat == "headline" else 1
            lat[cat] = []
            for text in run.texts[cat]:
                for _ in range(reps):
                    res = synth.synthesize(text)
                    lat[cat].append(res.latency_s)
                mels[text] = res.mel
                if label:
                    run.step(f"{label} {cat}: {res.latency_s * 1e3:.0f} ms for {res.frames} frames")
    return lat, mels, usage.result()


def _hand_written_kv(run: _Run, base_lat: dict[str, list[float]]) -> tuple[dict, dict[str, np.ndarray]]:
    """A KV cache written by hand (torch.cat per step, eager, one text at a time) on the baseline's categories."""
    from speechtrt.tts.baseline import HandWrittenKVTTS

    cfg = run.cfg
    run.step("torch eager KV (hand-written)")
    hand = HandWrittenKVTTS(run.model, cfg.device, run.rule)
    hand.synthesize(HEADLINE[:10])
    lat, mels, mem = _timed_texts(run, hand, list(base_lat), cfg.repeats, None)
    head = summarize_ms(lat["headline"])
    return {
        "backend": "torch", "precision": "fp32",
        "note": "what a user writes by hand: eager torch, cache grown with torch.cat, one request at a time",
        "latency_ms": head.to_json(), "latency_ms_by_category": _latency_table(lat),
        "throughput": {"utt_per_s": 1e3 / head.p50, "frames_per_s": run.headline_frames * 1e3 / head.p50,
                       "at_concurrency": 1},
        "rtf": run.rtf(head.p50), "peak_mem_mb": _peak_mb(mem, cfg.device), "memory": mem, "fidelity": {},
        "speedup_p50": summarize_ms(base_lat["headline"]).p50 / head.p50,
        "speedup_p50_by_category": {c: summarize_ms(base_lat[c]).p50 / summarize_ms(lat[c]).p50 for c in lat},
        "concurrency_sweep": [], "batch_sweep": [],
    }, mels


def _service_variant(run: _Run, v: Variant, base_lat: dict[str, list[float]], log) -> tuple[dict, dict | None]:
    """One backend × precision through the in-flight TTS service: latency per category (one request at a time),
    then a batch sweep and a closed-loop concurrency sweep on a service sized for the headline."""
    from speechtrt.tts.service import ServiceConfig, TTSService

    cfg = run.cfg
    run.step(v.name)
    longest_text = max(len(t) for ts in run.texts.values() for t in ts)
    latency_cfg = ServiceConfig(backend=v.backend, precision=v.precision, device=cfg.device,
                                max_slots=min(4, cfg.max_slots), max_frames=max(run.frames_of.values()),
                                max_text=longest_text + 8, frame_rule=run.rule, onnx_dir=cfg.onnx_dir,
                                engine_dir=cfg.engine_dir, threads=cfg.threads)
    serving_cfg = replace(latency_cfg, max_slots=max(cfg.max_slots, max(cfg.concurrency), max(cfg.batch_sizes)),
                          max_frames=run.headline_frames, max_text=64)
    try:
        service = TTSService(run.model, latency_cfg)
    except Exception as exc:  # a backend that cannot run here is reported, not fatal
        log(f"skipping {v.name}: {exc}")
        return {"skipped": str(exc), "backend": v.backend, "precision": v.precision}, None
    with UsageSampler(cfg.device) as latency_usage:
        for _ in range(cfg.warmup):
            service.synthesize(HEADLINE, n_frames=run.headline_frames)
        lat: dict[str, list[float]] = {}
        mels: dict[str, np.ndarray] = {}
        for cat, ts in run.texts.items():
            lat[cat] = []
            for text in ts:
                for _ in range(cfg.repeats if cat == "headline" else max(1, cfg.repeats // 3)):
                    synchronize(cfg.device)
                    t0 = time.perf_counter()
                    res = service.synthesize(text, n_frames=run.frames_of[text])
                    lat[cat].append(time.perf_counter() - t0)
                mels[text] = res.mel
            run.step(f"{v.name} {cat}: p50 {summarize_ms(lat[cat]).p50:.0f} ms")
    steps = list(service.scheduler.stats)
    service.close()
    service = TTSService(run.model, serving_cfg)
    service.synthesize(HEADLINE, n_frames=run.headline_frames)  # warm-up (and CUDA graph capture at batch 1)
    with UsageSampler(cfg.device) as usage:
        batch_sweep = []
        for b in cfg.batch_sizes:
            t = _batch(service, HEADLINE, run.headline_frames, b)
            batch_sweep.append({"batch": b, "latency_ms": t * 1e3, "utt_per_s": b / t,
                                "frames_per_s": b * run.headline_frames / t})
            run.step(f"{v.name} batch {b}: {t * 1e3:.0f} ms")
        conc_sweep = []
        for c in cfg.concurrency:
            t, n = _closed_loop(service, HEADLINE, run.headline_frames, c, cfg.requests_per_client)
            conc_sweep.append({"concurrency": c, "seconds": t, "requests": n, "utt_per_s": n / t,
                               "frames_per_s": n * run.headline_frames / t})
            run.step(f"{v.name} concurrency {c}: {n / t:.2f} utt/s")
    mem = usage.result()
    head = summarize_ms(lat["headline"])
    best = max(conc_sweep + [{**r, "concurrency": None} for r in batch_sweep], key=lambda r: r["frames_per_s"])
    result = {
        "backend": v.backend, "precision": v.precision, "note": v.note,
        "latency_ms": head.to_json(), "latency_ms_by_category": _latency_table(lat),
        "throughput": {"utt_per_s": best["utt_per_s"], "frames_per_s": best["frames_per_s"],
                       "at_concurrency": best.get("concurrency"), "at_batch": best.get("batch")},
        "concurrency_sweep": conc_sweep, "batch_sweep": batch_sweep, "batch_scaling": _scaling(batch_sweep),
        "rtf": run.rtf(head.p50), "peak_mem_mb": _peak_mb(mem, cfg.device),
        "latency_phase_peak_mem_mb": _peak_mb(latency_usage.result(), cfg.device),
        "kv_pool_mb": service.pool.nbytes() / 2**20, "kv_pool_slots": service.pool.max_slots,
        "memory": mem, "gpu_utilization_pct": mem["gpu_util_mean_pct"], "fidelity": {},
        "speedup_p50": summarize_ms(base_lat["headline"]).p50 / head.p50,
        "speedup_p50_by_category": {c: summarize_ms(base_lat[c]).p50 / summarize_ms(lat[c]).p50
                                    for c in base_lat if c in lat},
        "decode_steps": len(steps),
        "mean_step_ms_batch1": float(np.mean([s.step_ms for s in steps])) if steps else None,
        "serving": {"max_slots": serving_cfg.max_slots, "max_frames": serving_cfg.max_frames,
                    "max_text": serving_cfg.max_text,
                    "peak_active": max((s.active for s in service.scheduler.stats), default=0)},
    }
    service.close()
    return result, mels


def _scaling(batch_sweep: list[dict]) -> dict:
    """frames/s at each batch over frames/s at batch 1 (in-flight batching's gain)."""
    one = next((r["frames_per_s"] for r in batch_sweep if r["batch"] == 1), None)
    return {str(r["batch"]): round(r["frames_per_s"] / one, 3) for r in batch_sweep} if one else {}


def _fidelity(run: _Run, baseline: dict, base_mels: dict, results: dict, mels: dict) -> None:
    """Mel SNR of every variant over every text it synthesized, against the torch FP32 service path."""
    from speechtrt.tts.service import ServiceConfig, TTSService

    reference = mels.get("torch-kv-fp32") or mels.get("torch-kv-fp32-graphs")
    if reference is None:
        run.step("reference (torch fp32)")
        ref = TTSService(run.model, ServiceConfig(device=run.cfg.device, max_slots=1, max_frames=run.cfg.max_frames,
                                                  frame_rule=run.rule, overlap_vocoder=False, cuda_graphs=False))
        reference = {t: ref.synthesize(t, n_frames=run.frames_of[t]).mel for ts in run.texts.values() for t in ts}
        ref.close()
    note = "mel SNR vs the torch fp32 KV path on the same device, over all texts the variant ran (inf = identical)"
    baseline["fidelity"] = {"mel_snr_db": _pooled_snr(reference, base_mels), "reference": note}
    for name, m in mels.items():
        results[name]["fidelity"] = {"mel_snr_db": _pooled_snr(reference, m), "reference": note}


def _pooled_snr(reference: dict[str, np.ndarray], mels: dict[str, np.ndarray]) -> float:
    """Mel SNR over every text of ``mels`` at once (each text's frames against the reference's)."""
    texts = list(mels)
    return snr_db(np.concatenate([np.ravel(mels[t]) for t in texts]),
                  np.concatenate([np.ravel(reference[t]) for t in texts]))


def _peak_mb(mem: dict, device: str) -> float:
    if device.startswith("cuda"):
        return float(mem["allocator_peak_mb"])
    return float(mem["rss_growth_mb"])
