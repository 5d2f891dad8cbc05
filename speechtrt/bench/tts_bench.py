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
from speechtrt.reporting import UsageSampler, environment, markdown_table, write_json
from speechtrt.reporting.plots import line_plot

HEADLINE = "Storm warning issued for the coast as winds build."
"""The 50-character headline text (250 frames under the frame rule)."""
assert len(HEADLINE) == 50

CATEGORIES = ("headline", "short", "medium", "long")

TARGETS = {
    "cpu": {"headline_speedup_p50": 10.0},
    "cuda": {"headline_p50_ms": 50.0, "frames_per_s": 300_000.0, "peak_mem_mb": 2048.0, "mel_snr_db": 30.0},
}


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
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    requests_per_client: int = 2
    max_frames: int = 1000  # cap of the frame rule (lower it for quick runs; applies to every variant)
    max_slots: int = 16
    onnx_dir: str = "out/onnx"
    engine_dir: str = "engines"
    out_dir: str = "reports"
    threads: int | None = None
    quick: bool = False

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
                   requests_per_client=1, max_slots=4)


def plan_variants(cfg: BenchConfig) -> list[Variant]:
    """The optimized variants for this device: each backend × precision that can run here."""
    out = []
    for backend in cfg.backends:
        for precision in cfg.precisions:
            if backend == "torch":
                if precision == "int8":
                    continue
                graphs = cfg.device.startswith("cuda")
                out.append(Variant(f"torch-kv-{precision}" + ("-graphs" if graphs else ""), backend, precision,
                                   "static KV pool, in-flight batching" + (", CUDA graphs" if graphs else "")))
            elif backend == "ort":
                if precision == "bf16":
                    continue
                out.append(Variant(f"ort-kv-{precision}", backend, precision, "ONNX Runtime, I/O binding, KV pool"))
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
                ensure_artifact(component(name, model.config), v.precision, v.backend, artifacts, log=log)
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
    """Run the whole benchmark and write ``tts_bench.json``, ``tts_bench.md`` and two PNGs into ``cfg.out_dir``."""
    from speechtrt.models import build_tts
    from speechtrt.tts.baseline import SeedBaselineTTS
    from speechtrt.tts.service import ServiceConfig, TTSService

    if cfg.quick:
        cfg = quick_config(cfg)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but CUDA is not available here; use --device cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    step = progress or (lambda _: None)
    rule = cfg.frame_rule
    model = build_tts(seed=0)
    texts = workload(cfg.categories)
    if cfg.quick:
        texts = {c: t[:1] for c, t in texts.items()}
    frames_of = {t: rule.frames_for_text(len(t)) for ts in texts.values() for t in ts}
    headline_frames = frames_of[HEADLINE]
    sample_rate, spf = model.config.sample_rate, model.config.samples_per_frame
    variants = plan_variants(cfg)
    _ensure_artifacts(cfg, model, variants, log)

    # ---- the seed baseline
    step("baseline (seed, full recompute)")
    base = SeedBaselineTTS(model, cfg.device, rule)
    base.synthesize(HEADLINE[:10])  # warm-up
    base_lat: dict[str, list[float]] = {}
    base_mels: dict[str, np.ndarray] = {}
    with UsageSampler(cfg.device) as usage:
        for cat in cfg.baseline_categories:
            if cat not in texts:
                continue
            reps = cfg.baseline_repeats if cat == "headline" else 1
            base_lat[cat] = []
            for text in texts[cat]:
                for _ in range(reps):
                    res = base.synthesize(text)
                    base_lat[cat].append(res.latency_s)
                base_mels[text] = res.mel
                step(f"baseline {cat}: {res.latency_s * 1e3:.0f} ms for {res.frames} frames")
    b_head = summarize_ms(base_lat["headline"])
    baseline = {
        "name": "seed-baseline", "backend": "torch", "precision": "fp32",
        "note": "seed loop: per request, FP32 eager, decoder recomputed over all frames at every step",
        "categories_measured": list(base_lat),
        "latency_ms_by_category": _latency_table(base_lat),
        "latency_ms": b_head.to_json(),
        "throughput": {"utt_per_s": 1e3 / b_head.p50, "frames_per_s": headline_frames * 1e3 / b_head.p50},
        "rtf": (b_head.p50 / 1e3) / (headline_frames * spf / sample_rate),
        "peak_mem_mb": _peak_mb(usage.result(), cfg.device),
        "memory": usage.result(),
        "fidelity": {},
    }
    del base

    # ---- optimized variants; the torch fp32 KV path (run first) is the fidelity reference
    results = {}
    mels: dict[str, dict[str, np.ndarray]] = {}
    variants.sort(key=lambda v: (v.backend, v.precision) != ("torch", "fp32"))
    for v in variants:
        step(f"{v.name}")
        longest_text = max(len(t) for ts in texts.values() for t in ts)
        # latency phase: a few slots sized for the whole workload; serving phase: slots for the sweeps, each sized
        # for the headline (250 frames, 50 tokens), as a deployment for short requests would be
        latency_cfg = ServiceConfig(backend=v.backend, precision=v.precision, device=cfg.device,
                                    max_slots=min(4, cfg.max_slots), max_frames=max(frames_of.values()),
                                    max_text=longest_text + 8, frame_rule=rule, onnx_dir=cfg.onnx_dir,
                                    engine_dir=cfg.engine_dir, threads=cfg.threads)
        serving_cfg = replace(latency_cfg, max_slots=max(cfg.max_slots, max(cfg.concurrency), max(cfg.batch_sizes)),
                              max_frames=headline_frames, max_text=64)
        try:
            service = TTSService(model, latency_cfg)
        except Exception as exc:  # a backend that cannot run here is reported, not fatal
            log(f"skipping {v.name}: {exc}")
            results[v.name] = {"skipped": str(exc), "backend": v.backend, "precision": v.precision}
            continue
        with UsageSampler(cfg.device) as latency_usage:
            for _ in range(cfg.warmup):
                service.synthesize(HEADLINE, n_frames=headline_frames)
            lat: dict[str, list[float]] = {}
            mels[v.name] = {}
            for cat, ts in texts.items():
                lat[cat] = []
                for text in ts:
                    reps = cfg.repeats if cat == "headline" else max(1, cfg.repeats // 3)
                    for _ in range(reps):
                        synchronize(cfg.device)
                        t0 = time.perf_counter()
                        res = service.synthesize(text, n_frames=frames_of[text])
                        lat[cat].append(time.perf_counter() - t0)
                    mels[v.name][text] = res.mel
                step(f"{v.name} {cat}: p50 {summarize_ms(lat[cat]).p50:.0f} ms")
        latency_steps = list(service.scheduler.stats)
        service.close()
        del service
        service = TTSService(model, serving_cfg)
        service.synthesize(HEADLINE, n_frames=headline_frames)  # warm-up (and CUDA graph capture at batch 1)
        with UsageSampler(cfg.device) as usage:
            batch_sweep = []
            for b in cfg.batch_sizes:
                t = _batch(service, HEADLINE, headline_frames, b)
                batch_sweep.append({"batch": b, "latency_ms": t * 1e3, "utt_per_s": b / t,
                                    "frames_per_s": b * headline_frames / t})
                step(f"{v.name} batch {b}: {t * 1e3:.0f} ms")
            conc_sweep = []
            for c in cfg.concurrency:
                t, n = _closed_loop(service, HEADLINE, headline_frames, c, cfg.requests_per_client)
                conc_sweep.append({"concurrency": c, "seconds": t, "requests": n, "utt_per_s": n / t,
                                   "frames_per_s": n * headline_frames / t})
                step(f"{v.name} concurrency {c}: {n / t:.2f} utt/s")
        mem = usage.result()
        head = summarize_ms(lat["headline"])
        best = max(conc_sweep, key=lambda r: r["frames_per_s"])
        steps = latency_steps
        results[v.name] = {
            "backend": v.backend, "precision": v.precision, "note": v.note,
            "latency_ms": head.to_json(),
            "latency_ms_by_category": _latency_table(lat),
            "throughput": {"utt_per_s": best["utt_per_s"], "frames_per_s": best["frames_per_s"],
                           "at_concurrency": best["concurrency"]},
            "concurrency_sweep": conc_sweep,
            "batch_sweep": batch_sweep,
            "rtf": (head.p50 / 1e3) / (headline_frames * spf / sample_rate),
            "peak_mem_mb": _peak_mb(mem, cfg.device),
            "latency_phase_peak_mem_mb": _peak_mb(latency_usage.result(), cfg.device),
            "kv_pool_mb": service.pool.nbytes() / 2**20,
            "kv_pool_slots": service.pool.max_slots,
            "memory": mem,
            "gpu_utilization_pct": mem["gpu_util_mean_pct"],
            "fidelity": {},
            "speedup_p50": b_head.p50 / head.p50,
            "speedup_p50_by_category": {
                c: base_lat_p50 / summarize_ms(lat[c]).p50
                for c, base_lat_p50 in ((c, summarize_ms(s).p50) for c, s in base_lat.items()) if c in lat
            },
            "decode_steps": len(steps),
            "mean_step_ms_batch1": float(np.mean([s.step_ms for s in steps])) if steps else None,
            "serving": {"max_slots": serving_cfg.max_slots, "max_frames": serving_cfg.max_frames,
                        "max_text": serving_cfg.max_text,
                        "peak_active": max((s.active for s in service.scheduler.stats), default=0)},
        }
        service.close()

    # ---- fidelity: mel SNR over every text a variant synthesized, against the FP32 reference
    reference = next((mels[v.name] for v in variants if (v.backend, v.precision) == ("torch", "fp32")
                      and v.name in mels), None)
    if reference is None:
        step("reference (torch fp32)")
        ref_service = TTSService(model, ServiceConfig(device=cfg.device, max_slots=1, max_frames=cfg.max_frames,
                                                      frame_rule=rule, overlap_vocoder=False, cuda_graphs=False))
        reference = {t: ref_service.synthesize(t, n_frames=frames_of[t]).mel for ts in texts.values() for t in ts}
        ref_service.close()
    note = "mel SNR vs the torch fp32 KV path on the same device, over all texts the variant ran (null = identical)"
    baseline["fidelity"] = {"mel_snr_db": _pooled_snr(reference, base_mels), "reference": note}
    for name, m in mels.items():
        results[name]["fidelity"] = {"mel_snr_db": _pooled_snr(reference, m), "reference": note}

    report = {
        "benchmark": "tts",
        **environment(cfg.device, cfg.threads),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
        "workload": {
            "categories": {c: [{"text": t, "chars": len(t), "frames": frames_of[t]} for t in ts]
                           for c, ts in texts.items()},
            "frame_rule": {"frames_per_char": rule.frames_per_char, "min_frames": rule.min_frames,
                           "max_frames": rule.max_frames},
            "headline": HEADLINE,
            "sample_rate": sample_rate, "samples_per_frame": spf,
        },
        "baseline": baseline,
        "variants": results,
        "targets": _targets(cfg.device, baseline, results),
    }
    out = Path(cfg.out_dir)
    write_json(out / "tts_bench.json", report)
    _plots(out, baseline, results)
    (out / "tts_bench.md").write_text(render_markdown(report))
    return report


def _pooled_snr(reference: dict[str, np.ndarray], mels: dict[str, np.ndarray]) -> float:
    """Mel SNR over every text of ``mels`` at once (each text's frames against the reference's)."""
    texts = list(mels)
    return snr_db(np.concatenate([np.ravel(mels[t]) for t in texts]),
                  np.concatenate([np.ravel(reference[t]) for t in texts]))


def _peak_mb(mem: dict, device: str) -> float:
    if device.startswith("cuda"):
        return float(mem["allocator_peak_mb"])
    return float(mem["rss_growth_mb"])


def _ok_variants(results: dict) -> dict:
    return {k: v for k, v in results.items() if "skipped" not in v}


def _targets(device: str, baseline: dict, results: dict) -> dict:
    """Each target: the best variant's value, met or missed and by how much."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    ok = _ok_variants(results)
    if not ok:
        return {}
    out = {}
    for key, target in TARGETS[kind].items():
        if key == "headline_speedup_p50":
            name = max(ok, key=lambda n: ok[n]["speedup_p50"])
            value, met = ok[name]["speedup_p50"], ok[name]["speedup_p50"] >= target
            miss = None if met else f"{target / value:.2f}x short"
        elif key == "headline_p50_ms":
            name = min(ok, key=lambda n: ok[n]["latency_ms"]["p50"])
            value = ok[name]["latency_ms"]["p50"]
            met, miss = value <= target, (None if value <= target else f"{value - target:.1f} ms over")
        elif key == "frames_per_s":
            name = max(ok, key=lambda n: ok[n]["throughput"]["frames_per_s"])
            value = ok[name]["throughput"]["frames_per_s"]
            met, miss = value >= target, (None if value >= target else f"{target / value:.2f}x short")
        elif key == "peak_mem_mb":
            name = max(ok, key=lambda n: ok[n]["throughput"]["frames_per_s"])
            value = ok[name]["peak_mem_mb"]
            met, miss = value <= target, (None if value <= target else f"{value - target:.0f} MB over")
        else:  # mel_snr_db over reduced-precision variants
            low = {n: r for n, r in ok.items() if r["precision"] != "fp32"} or ok
            name = min(low, key=lambda n: low[n]["fidelity"]["mel_snr_db"])
            value = low[name]["fidelity"]["mel_snr_db"]
            met, miss = value >= target, (None if value >= target else f"{target - value:.1f} dB short")
        out[key] = {"target": target, "variant": name, "value": value, "met": bool(met), "missed_by": miss}
    return out


def _plots(out: Path, baseline: dict, results: dict) -> None:
    ok = _ok_variants(results)
    line_plot(out / "tts_latency_vs_batch.png",
              {n: ([r["batch"] for r in v["batch_sweep"]], [r["latency_ms"] for r in v["batch_sweep"]])
               for n, v in ok.items()},
              "batch size (50-char headline)", "latency of the batch (ms)", "TTS latency vs batch size")
    series = {n: ([r["concurrency"] for r in v["concurrency_sweep"]], [r["frames_per_s"] for r in v["concurrency_sweep"]])
              for n, v in ok.items()}
    if ok:
        xs = next(iter(series.values()))[0]
        series["seed-baseline (sequential)"] = (xs, [baseline["throughput"]["frames_per_s"]] * len(xs))
    line_plot(out / "tts_throughput_vs_concurrency.png", series, "concurrent clients (closed loop)",
              "mel frames / s", "TTS throughput vs concurrency")


def render_markdown(report: dict) -> str:
    """The seed's table (Metric | Baseline | Target | Result) for the best variant, then every variant."""
    b, res = report["baseline"], _ok_variants(report["variants"])
    dev = report["device"]
    lines = [f"# TTS benchmark — {dev['name']} ({dev['type']})", "",
             f"Commit {report['commit'].get('sha') or 'uncommitted'}; torch {report['versions'].get('torch')}; "
             f"onnxruntime {report['versions'].get('onnxruntime', '–')}. Workload: seed sample texts + 50-char "
             f"headline; fixed frames = clamp(5·chars, {report['workload']['frame_rule']['min_frames']}, "
             f"{report['workload']['frame_rule']['max_frames']}) for every variant.", ""]
    if res:
        best_name = max(res, key=lambda n: res[n]["speedup_p50"])
        best = res[best_name]
        gpu = dev["type"] == "cuda"
        lines += [f"## Seed table (50-char headline; result = {best_name})", "", "```",
                  f"{'Metric':<17}| {'Baseline':<11}| {'Target':<17}| Result"]
        lines.append("-" * 17 + "|" + "-" * 12 + "|" + "-" * 18 + "|" + "-" * 12)
        tgt_p50 = "<=50 ms" if gpu else f"<={b['latency_ms']['p50'] / 10:.0f} ms (10x)"
        rows = [
            ("Avg Latency", f"{b['latency_ms']['avg']:.0f} ms", "<200 ms", f"{best['latency_ms']['avg']:.1f} ms"),
            ("P50 Latency", f"{b['latency_ms']['p50']:.0f} ms", tgt_p50, f"{best['latency_ms']['p50']:.1f} ms"),
            ("P95 Latency", f"{b['latency_ms']['p95']:.0f} ms", "<300 ms", f"{best['latency_ms']['p95']:.1f} ms"),
            ("Throughput", f"{b['throughput']['utt_per_s']:.2f}/sec", ">50/sec",
             f"{best['throughput']['utt_per_s']:.2f}/sec"),
            ("Mel frames/s", f"{b['throughput']['frames_per_s']:.0f}", ">=300000" if gpu else "–",
             f"{best['throughput']['frames_per_s']:.0f}"),
            ("Memory Usage", f"{b['peak_mem_mb']:.0f} MB", "<2 GB", f"{best['peak_mem_mb']:.0f} MB"),
            ("GPU Utilization", _pct(b["memory"]["gpu_util_mean_pct"]), ">70%", _pct(best["gpu_utilization_pct"])),
            ("Mel SNR vs FP32", _db(b["fidelity"]["mel_snr_db"]), ">=30 dB", _db(best["fidelity"]["mel_snr_db"])),
        ]
        lines += [f"{m:<17}| {x:<11}| {t:<17}| {r}" for m, x, t, r in rows]
        lines += ["```", ""]
    lines += ["## Variants (50-char headline)", ""]
    header = ["variant", "p50 ms", "p95 ms", "avg ms", "speedup p50", "utt/s", "frames/s", "peak MB", "RTF",
              "mel SNR dB"]
    rows = [["seed-baseline", b["latency_ms"]["p50"], b["latency_ms"]["p95"], b["latency_ms"]["avg"], 1.0,
             b["throughput"]["utt_per_s"], b["throughput"]["frames_per_s"], b["peak_mem_mb"], b["rtf"],
             b["fidelity"]["mel_snr_db"]]]
    for n, r in res.items():
        rows.append([n, r["latency_ms"]["p50"], r["latency_ms"]["p95"], r["latency_ms"]["avg"], r["speedup_p50"],
                     r["throughput"]["utt_per_s"], r["throughput"]["frames_per_s"], r["peak_mem_mb"], r["rtf"],
                     r["fidelity"]["mel_snr_db"]])
    lines += [markdown_table(header, rows), "", "## Latency by category (ms: avg / p50 / p95)", ""]
    cats = list(report["workload"]["categories"])
    rows = []
    for n, lat in [("seed-baseline", b["latency_ms_by_category"])] + [(n, r["latency_ms_by_category"])
                                                                       for n, r in res.items()]:
        rows.append([n] + [(f"{lat[c]['avg']:.0f} / {lat[c]['p50']:.0f} / {lat[c]['p95']:.0f}" if c in lat else
                            "not run") for c in cats])
    lines += [markdown_table(["variant"] + cats, rows), ""]
    if report["targets"]:
        lines += ["## Targets", ""]
        rows = [[k, t["target"], t["variant"], t["value"], "met" if t["met"] else f"missed ({t['missed_by']})"]
                for k, t in report["targets"].items()]
        lines += [markdown_table(["target", "goal", "variant", "value", "status"], rows), ""]
    skipped = {n: r["skipped"] for n, r in report["variants"].items() if "skipped" in r}
    if skipped:
        lines += ["## Skipped variants", ""] + [f"- {n}: {why}" for n, why in skipped.items()] + [""]
    lines += ["Plots: `tts_latency_vs_batch.png`, `tts_throughput_vs_concurrency.png`.", ""]
    return "\n".join(lines)


def _pct(x):
    return "n/a (CPU)" if x is None else f"{x:.0f}%"


def _db(x):
    return "–" if x is None else ("identical" if float(x) == float("inf") else f"{float(x):.1f} dB")
