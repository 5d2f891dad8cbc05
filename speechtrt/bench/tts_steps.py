"""The decoder step measured alone, per variant: its memory floor, every graph form on ONNX Runtime, and which
precision each backend should default to.

A TTS request's time is ~all decoder steps; a step's floor is what it must read (:mod:`speechtrt.bench.floor`).
Each variant's step is timed on its own runner at one standard point (batch 1, half-way through the 50-character
headline: past = 125 frames, 50 tokens of text), with inputs laid out as the KV pool binds them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from speechtrt.bench.timing import synchronize
from speechtrt.bench.tts_bench import HEADLINE, Variant

def floors(run, bandwidth: float, variants: list, results: dict) -> None:
    """``variants.<name>.floor``: the decoder step at batch 1, mid-headline (past = half its frames, its text),
    measured on the variant's own runner and set against the bytes it must read."""
    from speechtrt.bench.floor import floor_entry, kv_bytes_per_step

    past, text = max(1, run.headline_frames // 2), len(HEADLINE)
    at = {"batch": 1, "past": past, "text": text}
    for v in [Variant("torch-eager-kv", "torch", "fp32"), *variants]:
        r = results.get(v.name)
        if r is None or "skipped" in r:
            continue
        runner, weights, elt = _step_runner(run, v)
        ms = _time_step(runner, run.model, past, text, run.cfg.device)
        runner.close()
        results[v.name]["floor"] = floor_entry(bandwidth, weights, kv_bytes_per_step(run.model.config, 1, past, text,
                                                                                      elt), ms, at)


def _step_runner(run, v):
    """The variant's decoder-step runner, the weight bytes it reads per step and its cache element size."""
    from speechtrt.bench.floor import graph_weight_bytes, module_weight_bytes
    from speechtrt.export.components import component
    from speechtrt.runtime.open import Artifacts, graph_path, open_runner

    cfg = run.cfg
    comp = component("tts_decoder_step", run.model.config)
    artifacts = Artifacts(onnx_dir=Path(cfg.onnx_dir), engine_dir=Path(cfg.engine_dir), model=run.model)
    runner = open_runner(comp, v.backend, v.precision, cfg.device, artifacts, threads=cfg.threads)
    if v.backend == "ort":
        weights = graph_weight_bytes(graph_path(artifacts, comp.name, v.precision, "ort"))
    elif v.backend == "torch":
        weights = module_weight_bytes([runner.module])
    else:
        weights = graph_weight_bytes(graph_path(artifacts, comp.name, v.precision, "trt"))
    elt = 2 if v.precision in ("fp16", "bf16") and v.backend != "ort" else 4
    return runner, weights, elt


def _time_step(runner, model, past: int, text: int, device: str, repeats: int = 20) -> float:
    """Median ms of one decoder step at batch 1 with ``past`` cached rows and ``text`` tokens (contiguous inputs,
    as the KV pool binds them)."""
    from speechtrt.export.components import component

    comp = component("tts_decoder_step", model.config)
    feeds = comp.make_inputs(model, {"batch": 1, "past": past, "text": text}, torch.Generator().manual_seed(0))
    feeds = {k: t.to(device) for k, t in feeds.items()}
    for _ in range(3):
        runner.infer(feeds)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        runner.infer(feeds)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


GRAPH_FORMS = (
    ("fp32", "ort", "FP32 graph"),
    ("int8", "ort", "INT8 for ONNX Runtime's int8 kernels (dynamic quantization, per-channel weights)"),
    ("int8", "trt", "INT8 Q/DQ from ModelOpt: the TensorRT form (FP16 scales, Casts); ONNX Runtime's CPU provider "
                    "does not fuse it and dequantizes every weight at every step — not an optimization here"),
    ("fp16", "trt", "FP16 from ModelOpt AutoCast: the TensorRT form; ONNX Runtime's CPU provider runs it through "
                    "casts and FP32 kernels — not an optimization here"),
)


def graph_forms(run, bandwidth: float, log) -> dict:
    """The decoder step in every graph form on ONNX Runtime's CPU provider, measured and labelled, so no form that
    runs slower than FP32 here passes for an optimization."""
    from speechtrt.bench.floor import floor_entry, graph_weight_bytes, kv_bytes_per_step
    from speechtrt.export.components import component
    from speechtrt.pipeline import ensure_graph
    from speechtrt.runtime.open import Artifacts, graph_opener, graph_path, open_runner

    cfg = run.cfg
    comp = component("tts_decoder_step", run.model.config)
    artifacts = Artifacts(onnx_dir=Path(cfg.onnx_dir), model=run.model)
    past, text = max(1, run.headline_frames // 2), len(HEADLINE)
    kv = kv_bytes_per_step(run.model.config, 1, past, text, 4)
    out = {}
    for precision, form, label in GRAPH_FORMS:
        name = f"{precision}-{'ort' if form == 'ort' else 'tensorrt-form'}"
        if cfg.quick and form == "trt":  # calibrating the ModelOpt graphs takes minutes; the full run measures them
            out[name] = {"label": label, "skipped": "not measured in a --quick run"}
            continue
        run.step(f"decoder step, {name} graph on ONNX Runtime")
        try:
            # the form's speed does not depend on how its scales were calibrated: min/max calibrates in seconds
            ensure_graph(comp, precision, form, artifacts, calib_dir=cfg.calib_dir, method="max", log=log)
            runner = (open_runner(comp, "ort", precision, "cpu", artifacts, threads=cfg.threads) if form == "ort"
                      else graph_opener(cfg.onnx_dir, cfg.threads)(comp.name, precision))
            ms = _time_step(runner, run.model, past, text, "cpu", repeats=5 if form == "trt" else 20)
            runner.close()
        except Exception as exc:  # a form that cannot be made or run here is listed with the reason
            out[name] = {"label": label, "skipped": str(exc)[:300]}
            continue
        weights = graph_weight_bytes(graph_path(artifacts, comp.name, precision, form))
        out[name] = {"label": label, **floor_entry(bandwidth, weights, kv, ms, {"batch": 1, "past": past,
                                                                                 "text": text})}
    fp32 = out.get("fp32-ort", {}).get("measured_ms_per_step")
    for entry in out.values():
        if fp32 and entry.get("measured_ms_per_step"):
            entry["vs_fp32"] = round(entry["measured_ms_per_step"] / fp32, 3)
    return out


def label_slower_than_fp32(results: dict) -> None:
    """A variant slower than FP32 on its own backend says so and why (never presented as an optimization)."""
    for name, r in results.items():
        if "skipped" in r or r["precision"] == "fp32" or "floor" not in r:
            continue
        fp32 = next((x for n, x in results.items() if x.get("backend") == r["backend"] and x.get("precision") == "fp32"
                     and "floor" in x and n != "torch-eager-kv"), None)
        if fp32 and r["floor"]["measured_ms_per_step"] > fp32["floor"]["measured_ms_per_step"]:
            r["slower_than_fp32"] = (f"{r['floor']['measured_ms_per_step'] / fp32['floor']['measured_ms_per_step']:.2f}x "
                                     f"the FP32 step on {r['backend']}: " + _SLOWER_REASONS.get(
                                         (r["backend"], r["precision"]), "no faster kernel for this precision here"))


_SLOWER_REASONS = {
    ("torch", "int8"): "torch's dynamic INT8 quantizes activations per call in eager mode; at batch 1 its overhead "
                       "exceeds the bandwidth it saves",
    ("ort", "fp16"): "ONNX Runtime's CPU provider has no FP16 matrix kernels: it casts to FP32",
    ("torch", "fp16"): "CPU matrix kernels run FP16 through conversions",
    ("torch", "bf16"): "CPU matrix kernels run BF16 through conversions on this processor",
}


def recommended_precisions(results: dict, min_snr_db: float = 30.0) -> dict:
    """Per backend, the precision with the fastest decoder step among those within the fidelity bound."""
    out = {}
    for backend in sorted({r["backend"] for r in results.values() if "floor" in r}):
        ok = [(r["floor"]["measured_ms_per_step"], r["precision"]) for n, r in results.items()
              if r.get("backend") == backend and "floor" in r and n != "torch-eager-kv"
              and float(r["fidelity"].get("mel_snr_db", 0)) >= min_snr_db]
        if ok:
            out[backend] = {"precision": min(ok)[1], "step_ms": min(ok)[0], "rule": f"fastest step with mel SNR >= "
                            f"{min_snr_db:g} dB vs FP32"}
    return out
