"""What ``speechtrt bench`` writes: targets met or missed (and by how much), the Markdown report, the plots."""

from __future__ import annotations

from pathlib import Path

from speechtrt.bench.tts_bench import TARGETS
from speechtrt.reporting import markdown_table
from speechtrt.reporting.plots import line_plot


def ok_variants(results: dict) -> dict:
    return {k: v for k, v in results.items() if "skipped" not in v}


def _service_variants(results: dict) -> dict:
    """Variants that serve through the in-flight service (the hand-written loop has no sweeps)."""
    return {k: v for k, v in ok_variants(results).items() if v.get("batch_sweep")}


def _best(ok: dict, key, largest: bool = True) -> tuple[str, float]:
    name = (max if largest else min)(ok, key=key)
    return name, key(name)


def _unmeasured(target, why: str) -> dict:
    return {"target": target, "variant": None, "value": None, "met": None, "missed_by": f"not measured: {why}"}


def targets(device: str, baseline: dict, results: dict) -> dict:
    """Each target: the best variant's value, met or missed and by how much."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    ok, served = ok_variants(results), _service_variants(results)
    if not ok:
        return {}
    out = {}
    for key, target in TARGETS[kind].items():
        if key == "headline_speedup_p50":
            name, value = _best(ok, lambda n: ok[n]["speedup_p50"])
            met, miss = value >= target, f"{target / value:.2f}x short"
        elif key == "headline_p50_ms":
            name, value = _best(ok, lambda n: ok[n]["latency_ms"]["p50"], largest=False)
            met, miss = value <= target, f"{value - target:.1f} ms over"
        elif key == "frames_per_s":
            name, value = _best(ok, lambda n: ok[n]["throughput"]["frames_per_s"])
            met, miss = value >= target, f"{target / value:.2f}x short"
        elif key == "peak_mem_mb":
            name, _ = _best(ok, lambda n: ok[n]["throughput"]["frames_per_s"])
            value = ok[name]["peak_mem_mb"]
            met, miss = value <= target, f"{value - target:.0f} MB over"
        elif key == "step_ratio_to_floor":  # the fastest variant's step against its own precision's floor
            floored = {n: r for n, r in ok.items() if r.get("floor", {}).get("ratio_to_floor")}
            if not floored:
                out[key] = _unmeasured(target, "no variant has a floor (memory bandwidth not measured)")
                continue
            name, _ = _best(floored, lambda n: floored[n]["floor"]["measured_ms_per_step"], largest=False)
            value = floored[name]["floor"]["ratio_to_floor"]
            met, miss = value <= target, f"{value / target:.2f}x over the {target}x bound"
        elif key == "batch32_scaling":
            scaled = {n: r for n, r in served.items() if "32" in r.get("batch_scaling", {})}
            if not scaled:
                out[key] = _unmeasured(target, "batch 32 (with batch 1) not in --batch-sizes")
                continue
            name, value = _best(scaled, lambda n: scaled[n]["batch_sweep"][-1]["frames_per_s"]
                                if scaled[n]["batch_sweep"] else 0.0)
            value = scaled[name]["batch_scaling"]["32"]
            met, miss = value >= target, f"{target / value:.2f}x short"
        else:  # mel_snr_db of the reduced-precision variants (the worst of them)
            low = {n: r for n, r in ok.items() if r["precision"] != "fp32"} or ok
            name, value = _best(low, lambda n: float(low[n]["fidelity"]["mel_snr_db"]), largest=False)
            met, miss = value >= target, f"{target - value:.1f} dB short"
        out[key] = {"target": target, "variant": name, "value": value, "met": bool(met),
                    "missed_by": None if met else miss}
    return out


def write_plots(out: Path, baseline: dict, results: dict) -> None:
    served = _service_variants(results)
    line_plot(out / "tts_latency_vs_batch.png",
              {n: ([r["batch"] for r in v["batch_sweep"]], [r["latency_ms"] for r in v["batch_sweep"]])
               for n, v in served.items()},
              "batch size (50-char headline)", "latency of the batch (ms)", "TTS latency vs batch size")
    line_plot(out / "tts_frames_vs_batch.png",
              {n: ([r["batch"] for r in v["batch_sweep"]], [r["frames_per_s"] for r in v["batch_sweep"]])
               for n, v in served.items()},
              "requests decoded together (in-flight batch)", "mel frames / s", "TTS throughput vs batch size")
    series = {n: ([r["concurrency"] for r in v["concurrency_sweep"]],
                  [r["frames_per_s"] for r in v["concurrency_sweep"]]) for n, v in served.items()}
    if series:
        xs = next(iter(series.values()))[0]
        series["seed-baseline (sequential)"] = (xs, [baseline["throughput"]["frames_per_s"]] * len(xs))
    line_plot(out / "tts_throughput_vs_concurrency.png", series, "concurrent clients (closed loop)",
              "mel frames / s", "TTS throughput vs concurrency")


def render_markdown(report: dict) -> str:
    """The seed's table (Metric | Baseline | Target | Result) for the best variant, then every section."""
    b, res, dev = report["baseline"], ok_variants(report["variants"]), report["device"]
    commit = report["commit"].get("sha") or "uncommitted"
    lines = [f"# TTS benchmark — {dev['name']} ({dev['type']})", "",
             f"Commit {commit[:12]}{'-dirty' if report['commit'].get('dirty') else ''}; torch "
             f"{report['versions'].get('torch')}; onnxruntime {report['versions'].get('onnxruntime', '–')}; "
             f"{dev.get('torch_threads')} thread(s). Memory bandwidth measured in this run: "
             f"{report.get('memory_bandwidth_gb_s', '–')} GB/s (one thread, streaming read). Workload: seed sample "
             f"texts + 50-char headline; fixed frames = clamp(5·chars, {report['workload']['frame_rule']['min_frames']}"
             f", {report['workload']['frame_rule']['max_frames']}) for every variant.", ""]
    if res:
        lines += _seed_table(b, res, dev["type"] == "cuda")
    lines += ["## Variants (50-char headline)", ""]
    header = ["variant", "p50 ms", "p95 ms", "speedup p50", "utt/s", "frames/s", "peak MB over start", "RTF",
              "mel SNR dB", "note"]
    rows = [["seed-baseline", b["latency_ms"]["p50"], b["latency_ms"]["p95"], 1.0, b["throughput"]["utt_per_s"],
             b["throughput"]["frames_per_s"], b["peak_mem_mb"], b["rtf"], _db(b["fidelity"]["mel_snr_db"]),
             b["note"]]]
    for n, r in res.items():
        rows.append([n, r["latency_ms"]["p50"], r["latency_ms"]["p95"], r["speedup_p50"],
                     r["throughput"]["utt_per_s"], r["throughput"]["frames_per_s"], r["peak_mem_mb"], r["rtf"],
                     _db(r["fidelity"].get("mel_snr_db")), r.get("slower_than_fp32") or r.get("note", "")])
    lines += [markdown_table(header, rows), "",
              "*peak MB over start*: the exact resident high-water mark of the variant's run (kernel VmHWM, reset when "
              "it starts) minus the process's size then; 0 means it ran within memory the process already held "
              "(freed by the previous variant and reused by the allocator).", ""]
    lines += _floor_section(report, res) + _forms_section(report) + _scaling_section(res)
    lines += ["## Latency by category (ms: avg / p50 / p95)", ""]
    cats = list(report["workload"]["categories"])
    rows = [[n] + [(f"{lat[c]['avg']:.0f} / {lat[c]['p50']:.0f} / {lat[c]['p95']:.0f}" if c in lat else "not run")
                   for c in cats]
            for n, lat in [("seed-baseline", b["latency_ms_by_category"])]
            + [(n, r["latency_ms_by_category"]) for n, r in res.items()]]
    lines += [markdown_table(["variant"] + cats, rows), ""]
    if report.get("recommended_precision"):
        lines += ["## Default precision per backend (measured)", ""]
        lines += [f"- {k}: **{v['precision']}** ({v['step_ms']:.2f} ms/step; {v['rule']})"
                  for k, v in report["recommended_precision"].items()] + [""]
    if report["targets"]:
        lines += ["## Targets", ""]
        rows = [[k, t["target"], t["variant"], t["value"],
                 "met" if t["met"] else (t["missed_by"] if t["met"] is None else f"missed ({t['missed_by']})")]
                for k, t in report["targets"].items()]
        lines += [markdown_table(["target", "goal", "variant", "value", "status"], rows), ""]
    if report.get("natural_length"):
        lines += natural_markdown(report["natural_length"])
    skipped = {n: r["skipped"] for n, r in report["variants"].items() if "skipped" in r}
    if skipped:
        lines += ["## Skipped variants", ""] + [f"- {n}: {why}" for n, why in skipped.items()] + [""]
    lines += ["Plots: `tts_latency_vs_batch.png`, `tts_frames_vs_batch.png`, `tts_throughput_vs_concurrency.png`.", ""]
    return "\n".join(lines)


def _seed_table(b: dict, res: dict, gpu: bool) -> list[str]:
    best_name = max(res, key=lambda n: res[n]["speedup_p50"])
    best = res[best_name]
    lines = [f"## Seed table (50-char headline; result = {best_name})", "", "```",
             f"{'Metric':<17}| {'Baseline':<11}| {'Target':<17}| Result",
             "-" * 17 + "|" + "-" * 12 + "|" + "-" * 18 + "|" + "-" * 12]
    tgt_p50 = "<=50 ms" if gpu else f"<={b['latency_ms']['p50'] / 50:.0f} ms (50x)"
    rows = [
        ("Avg Latency", f"{b['latency_ms']['avg']:.0f} ms", "<200 ms", f"{best['latency_ms']['avg']:.1f} ms"),
        ("P50 Latency", f"{b['latency_ms']['p50']:.0f} ms", tgt_p50, f"{best['latency_ms']['p50']:.1f} ms"),
        ("P95 Latency", f"{b['latency_ms']['p95']:.0f} ms", "<300 ms", f"{best['latency_ms']['p95']:.1f} ms"),
        ("Throughput", f"{b['throughput']['utt_per_s']:.2f}/sec", ">50/sec", f"{best['throughput']['utt_per_s']:.2f}/sec"),
        ("Mel frames/s", f"{b['throughput']['frames_per_s']:.0f}", ">=300000" if gpu else "–",
         f"{best['throughput']['frames_per_s']:.0f}"),
        ("Memory Usage", f"{b['peak_mem_mb']:.0f} MB", "<2 GB", f"{best['peak_mem_mb']:.0f} MB"),
        ("GPU Utilization", _pct(b["memory"]["gpu_util_mean_pct"]), ">70%", _pct(best.get("gpu_utilization_pct"))),
        ("Mel SNR vs FP32", _db(b["fidelity"]["mel_snr_db"]), ">=30 dB", _db(best["fidelity"].get("mel_snr_db"))),
    ]
    return lines + [f"{m:<17}| {x:<11}| {t:<17}| {r}" for m, x, t, r in rows] + ["```", ""]


def _floor_section(report: dict, res: dict) -> list[str]:
    rows = [[n, r["precision"], r["floor"]["weight_bytes"] / 1e6, r["floor"]["kv_bytes_per_step"] / 1e6,
             r["floor"]["floor_ms_per_step"], r["floor"]["measured_ms_per_step"], r["floor"]["ratio_to_floor"]]
            for n, r in res.items() if "floor" in r]
    if not rows:
        return []
    at = next(r["floor"]["at"] for r in res.values() if "floor" in r)
    return ["## Decoder step against its memory floor", "",
            f"One step at batch {at['batch']}, past {at['past']} frames, text {at['text']} tokens, on each variant's "
            f"own runner; floor = (weights + K/V read per step) / {report.get('memory_bandwidth_gb_s')} GB/s.", "",
            markdown_table(["variant", "precision", "weights MB", "K/V MB", "floor ms", "step ms", "× floor"], rows),
            ""] + _below_floor_note(report, rows)


def _below_floor_note(report: dict, rows: list[list]) -> list[str]:
    """A step faster than its floor means the bandwidth probe read less than the step's kernels do: say so."""
    below = [r[0] for r in rows if r[6] is not None and r[6] < 1.0]
    if not below:
        return []
    bw = report.get("memory_bandwidth_gb_s")
    return [f"Below 1× ({', '.join(below)}): these steps read their bytes faster than the single-thread "
            f"streaming-read probe did ({bw} GB/s in this run). The probe is a simple reduction; the step's GEMV "
            "kernels prefetch, and part of the weights can stay in the last-level cache between steps, so on this "
            "host the probe underestimates the bandwidth and the floor is an estimate, not a bound. Read the ratio "
            "against a quiet machine's bandwidth as well (the run records the probe's value).", ""]


def _forms_section(report: dict) -> list[str]:
    forms = report.get("graph_forms") or {}
    if not forms:
        return []
    rows = [[n, f.get("measured_ms_per_step"), f.get("vs_fp32"), f.get("floor_ms_per_step"),
             f.get("ratio_to_floor"), f.get("skipped") or f["label"]] for n, f in forms.items()]
    return ["## Graph forms of the decoder step on ONNX Runtime (CPU)", "",
            "Every form `speechtrt calibrate` can make, timed at the same point. Forms slower than FP32 here are the "
            "TensorRT forms: they are what `speechtrt build` compiles, not CPU optimizations.", "",
            markdown_table(["form", "step ms", "× FP32", "floor ms", "× floor", "what it is"], rows), ""]


def _scaling_section(res: dict) -> list[str]:
    served = {n: r for n, r in res.items() if r.get("batch_sweep")}
    if not served:
        return []
    batches = [r["batch"] for r in next(iter(served.values()))["batch_sweep"]]
    rows = [[n] + [f"{x['frames_per_s']:.0f} ({r['batch_scaling'].get(str(x['batch']), 0):.2f}×)"
                   for x in r["batch_sweep"]] for n, r in served.items()]
    return ["## In-flight batching: frames/s (× batch 1)", "",
            markdown_table(["variant"] + [f"batch {b}" for b in batches], rows), ""]


def _pct(x):
    return "n/a (CPU)" if x is None else f"{x:.0f}%"


def _db(x):
    return "–" if x is None else ("identical" if float(x) == float("inf") else f"{float(x):.1f} dB")


def natural_markdown(block: dict) -> list[str]:
    """The natural-length section: in-flight vs static batching on requests that stop at their own step."""
    lines = ["## Natural lengths: in-flight vs static batching", ""]
    if "skipped" in block:
        return lines + [f"Not run: {block['skipped']}.", ""]
    lengths = block.get("lengths", {})
    lines += [f"Model `{block['model']}` decoding {block['requests']} held-out sentences to its stop token "
              f"(frames per request: min {lengths.get('min', '–')}, median {lengths.get('median', '–')}, max "
              f"{lengths.get('max', '–')}); batch {block['batch']} for both policies; arrivals: {block['arrivals']}; "
              f"vocoder {block['vocoder']}. Static: {block['static_policy']}.", ""]
    rows = []
    for name, v in block["variants"].items():
        if "skipped" in v:
            rows.append([name, "skipped", "", "", "", "", "", "", "", v["skipped"][:80]])
            continue
        i, s = v["in_flight"], v["static"]
        ms = v.get("ms_per_step")
        rows.append([name, i["frames_per_s"], s["frames_per_s"], f"{v['speedup']:.2f}x", i["mean_active"],
                     s["mean_active"], f"{i['steps']} / {s['steps']}",
                     f"{ms['in_flight']:.1f} / {ms['static']:.1f}" if ms else "–",
                     f"{i['latency_ms']['p50']:.0f} / {s['latency_ms']['p50']:.0f}",
                     "same frames" if v["same_frames_per_request"] else "frames differ",
                     ])
    lines += [markdown_table(["variant", "in-flight frames/s", "static frames/s", "in-flight / static",
                              "mean active (in-flight)", "mean active (static)", "steps (in-flight / static)",
                              "ms per step (in-flight / static)", "p50 latency ms (in-flight / static)",
                              "check"], rows), ""]
    spread = [(name, v["runs"]) for name, v in block["variants"].items()
              if len((v.get("runs") or {}).get("in_flight", [])) > 1]
    if spread:
        lines += [f"Each policy ran {len(spread[0][1]['in_flight'])} times, alternating; the table keeps its fastest. "
                  "Slowest / fastest run of the same work (this machine's timing noise): " + "; ".join(
                      f"{name} in-flight {max(r['in_flight']) / min(r['in_flight']):.2f}x, static "
                      f"{max(r['static']) / min(r['static']):.2f}x" for name, r in spread) + ".", ""]
    ran = [v for v in block["variants"].values() if v.get("step_ratio")]
    if ran:
        lo, hi = min(v["step_ratio"] for v in ran), max(v["step_ratio"] for v in ran)
        ratio = f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}x"
        lines += [f"In-flight batching takes {ratio} fewer decoder steps than static batching for the "
                  "same frames. Throughput follows that ratio only where a step costs the same whatever its number "
                  "of rows (a memory-bound decoder step, as on a GPU at small batch); where a step's cost grows "
                  "with its rows, as the ms-per-step column shows it does on this device, the gain is smaller.", ""]
        slower = [(name, v) for name, v in block["variants"].items()
                  if v.get("speedup") and v["speedup"] < 1.0 and v.get("ms_per_step")]
        if slower:
            lines += ["In-flight slower than static here: " + "; ".join(
                f"{name} {v['speedup']:.2f}x (a step of {v['in_flight']['mean_active']:.1f} rows costs "
                f"{v['ms_per_step']['in_flight'] / v['ms_per_step']['static']:.2f}x one of "
                f"{v['static']['mean_active']:.1f}, more than the {v['step_ratio']:.2f}x fewer steps save)"
                for name, v in slower) + ".", ""]
    t = block.get("target")
    if t:
        lines += [f"Target {t['target']}: {t['variant']} = {t['value']:.2f}x → "
                  + ("met" if t["met"] else f"missed by {t['missed_by']}")
                  + ("" if t["all_requests_stopped"] else " (some requests hit the frame cap, not their stop token)"),
                  ""]
    return lines
