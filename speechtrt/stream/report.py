"""Turn a load run into ``reports/stream.json``, ``reports/stream.md`` and PNG plots.

The JSON always carries ``device``, ``versions`` and ``commit`` (from :func:`speechtrt.reporting.environment`, the
same shape as every report), ``streams``, ``chunk_ms``, ``latency_ms.{p50,p95,p99}``, ``batch_utilization``,
``dropped_chunks``, ``final_matches_offline`` and ``peak_mem_mb`` (the measured section's real peak: resident set on
a CPU, the allocator's peak on CUDA); the Markdown puts the measured numbers next to the seed's Part 3 constraints
(< 100 ms per chunk, 50+ streams, < 8 GB).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from speechtrt.reporting import commit_label, environment, markdown_table, write_json, write_text
from speechtrt.reporting.plots import cdf_plot, line_plot, step_plot
from speechtrt.stream.engine import StreamingEngine
from speechtrt.stream.loadgen import LoadConfig, LoadResult


def _round(x, nd: int = 2) -> float:
    return round(float(x), nd)


def summarize(engine: StreamingEngine, load: LoadResult, cfg: LoadConfig, usage: dict) -> dict:
    """The numbers of one run (no environment fields). ``usage`` is :meth:`UsageSampler.result` of the run."""
    m = engine.metrics
    lat = np.asarray(m.latencies_s, dtype=np.float64) * 1000.0
    pct = (lambda q: _round(np.percentile(lat, q))) if lat.size else (lambda q: float("nan"))
    batches = np.asarray(m.batch_sizes, dtype=np.float64)
    decoded_s = sum(r.final.frames for r in load.records if r.final) * 0.01
    compute_s = float(np.sum(m.step_seconds))
    active = [n for _, n in load.active_over_time]
    gpu = usage.get("allocator_peak_mb")
    return {
        "streams": cfg.streams,
        "chunk_ms": engine.config.chunk_ms,
        "client_chunk_ms": {"mean": cfg.chunk_ms, "spread": cfg.chunk_spread, "jitter_ms": cfg.jitter_ms},
        "seconds": cfg.seconds,
        "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99),
                       "mean": _round(lat.mean()) if lat.size else float("nan"),
                       "max": _round(lat.max()) if lat.size else float("nan"), "chunks": int(lat.size)},
        "batch_utilization": round(float(batches.mean()) / engine.config.max_batch, 4) if batches.size else 0.0,
        "batch_size": {"mean": _round(batches.mean()) if batches.size else 0.0,
                       "max": int(batches.max()) if batches.size else 0, "steps": int(batches.size)},
        "max_batch": engine.config.max_batch,
        "max_wait_ms": engine.config.max_wait_ms,
        "dropped_chunks": load.dropped_chunks,
        "final_matches_offline": load.final_matches_offline,
        "final_text_matches_offline": load.final_text_matches_offline,
        "offline_checked_streams": load.offline_checked,
        "partial_stability": round(1 - load.partial_revisions / load.partial_observations, 4)
        if load.partial_observations else float("nan"),
        "streams_served": len(load.records),
        "streams_failed": sum(1 for r in load.records if r.final is None),
        "active_streams": {"max": max(active, default=0), "mean": round(float(np.mean(active)), 1) if active else 0.0,
                           "series": [[round(t, 2), n] for t, n in load.active_over_time]},
        "audio_decoded_s": round(decoded_s, 2),
        "rtf": round(compute_s / decoded_s, 4) if decoded_s else float("nan"),
        "cpu_rtf": round(load.cpu_s / decoded_s, 4) if decoded_s else float("nan"),
        "wall_s": round(load.wall_s, 2),
        "backpressure_retries": load.backpressure_retries,
        "refused_opens": load.refused_opens,
        "timed_out_streams": m.timed_out,
        "peak_mem_mb": gpu if gpu is not None else usage["rss_peak_mb"],
        "memory_mb": {**usage, "slot_state_mb": round(engine.pool.state_bytes() / 2**20, 2),
                      "slot_buffers_mb": round(engine.pool.buffer_bytes() / 2**20, 2)},
        "mismatches": load.mismatches,
    }


def build_report(run: dict, step: dict, model_desc: str, command: str, device: str, threads: int | None = None,
                 capacity: dict | None = None, skipped: list[dict] | None = None) -> dict:
    """The whole report: environment, what ran (``step``: :meth:`StepModel.describe`), the run's numbers."""
    report = {**environment(device, threads), "command": command, "backend": step, "model": model_desc, **run}
    report["skipped_inputs"] = skipped or []
    if capacity is not None:
        report["capacity"] = capacity
    return report


def _fmt(v, unit: str = "") -> str:
    if isinstance(v, float):
        return f"{v:.4g}{unit}" if v == v else "n/a"
    return f"{v}{unit}"


def markdown(report: dict, target_p95_ms: float) -> str:
    """The seed's report shape: setup, then constraint / target / measured / met, then the detail."""
    lat = report["latency_ms"]
    ok = lambda b: "yes" if b else "**no**"  # noqa: E731
    targets = [
        ["p95 chunk latency (arrival → updated partial)", f"≤ {target_p95_ms:.0f} ms", _fmt(lat["p95"], " ms"),
         ok(lat["p95"] <= target_p95_ms)],
        ["concurrent real-time streams", "≥ 50 (seed)", _fmt(report["streams"]), ok(report["streams"] >= 50)],
        ["dropped chunks", "0", _fmt(report["dropped_chunks"]), ok(report["dropped_chunks"] == 0)],
        ["final transcript == offline transcript", "100 %", _fmt(100 * report["final_matches_offline"], " %"),
         ok(report["final_matches_offline"] == 1.0)],
        ["peak memory", "< 8 GB", _fmt(report["peak_mem_mb"], " MB"), ok(report["peak_mem_mb"] < 8192)],
    ]
    b, cc = report["batch_size"], report["client_chunk_ms"]
    detail = [
        ["latency p50 / p95 / p99 / max", f"{_fmt(lat['p50'])} / {_fmt(lat['p95'])} / {_fmt(lat['p99'])} / "
         f"{_fmt(lat['max'])} ms over {lat['chunks']} chunks"],
        ["batch utilisation (mean batch / max batch)", f"{_fmt(report['batch_utilization'])} (mean {b['mean']}, "
         f"max {b['max']}, {b['steps']} steps)"],
        ["active streams (max / mean)", f"{report['active_streams']['max']} / {report['active_streams']['mean']}"],
        ["streams served (joined and left)", f"{report['streams_served']} ({report['streams_failed']} failed)"],
        ["RTF (model steps / audio)", _fmt(report["rtf"])],
        ["CPU RTF (process CPU time / audio)", _fmt(report["cpu_rtf"])],
        ["audio decoded", f"{report['audio_decoded_s']} s in {report['wall_s']} s wall"],
        ["partial-transcript stability", _fmt(report["partial_stability"])],
        ["final text == offline text", _fmt(100 * report["final_text_matches_offline"], " %")],
        ["backpressure retries / refused opens / idle timeouts", f"{report['backpressure_retries']} / "
         f"{report['refused_opens']} / {report['timed_out_streams']}"],
        ["memory", json.dumps({k: v for k, v in report["memory_mb"].items() if v is not None})],
    ]
    lines = [
        "# Streaming ASR: concurrent real-time streams", "",
        f"- Command: `{report['command']}`",
        f"- Device: {report['device']['summary']}",
        f"- Backend: {json.dumps(report['backend'])}",
        f"- Model: {report['model']}",
        f"- Commit: {commit_label(report['commit'])}; versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- Model chunk {report['chunk_ms']:.0f} ms; client chunks {cc['mean']:.0f} ms ± {100 * cc['spread']:.0f} % "
        f"with up to {cc['jitter_ms']:.0f} ms jitter; max batch {report['max_batch']}, max wait "
        f"{report['max_wait_ms']} ms; {report['seconds']} s.",
        "", "## Results against the targets", "",
        markdown_table(["Constraint", "Target", "Measured", "Met"], targets),
        "", "## Detail", "",
        markdown_table(["Metric", "Value"], detail),
    ]
    if report.get("skipped_inputs"):
        lines += ["", f"Skipped inputs ({len(report['skipped_inputs'])}): "
                  + "; ".join(f"{s['where']}: {s['reason']}" for s in report["skipped_inputs"][:10])]
    cap = report.get("capacity")
    if cap:
        rows = [[t["streams"], t["p50"], t["p95"], t["p99"], t["batch_utilization"], t["dropped_chunks"],
                 ok(t["holds"])] for t in cap["trials"]]
        lines += ["", "## Capacity search", "",
                  f"Largest stream count with p95 ≤ {cap['target_p95_ms']:.0f} ms and no drops: "
                  f"**{cap['capacity']}**.", "",
                  markdown_table(["Streams", "p50 ms", "p95 ms", "p99 ms", "batch util.", "drops", "holds"], rows)]
    lines += ["", "Figures: `stream_latency_cdf.png`, `stream_active.png`" + (", `stream_capacity.png`" if cap else "")
              + ".", ""]
    return "\n".join(lines)


def write_reports(report: dict, latencies_ms: list[float], out_dir: str | Path, target_p95_ms: float) -> list[Path]:
    """Write ``stream.json``, ``stream.md``, ``stream_latency_cdf.png``, ``stream_active.png`` (and
    ``stream_capacity.png`` after a capacity search)."""
    out = Path(out_dir)
    paths = [write_json(out / "stream.json", report), write_text(out / "stream.md", markdown(report, target_p95_ms))]
    title = f"{report['streams']} streams, {report['backend'].get('backend')} on {report['device']['name']}"
    paths.append(cdf_plot(out / "stream_latency_cdf.png", {"chunk latency": latencies_ms},
                          "chunk latency: arrival → updated partial (ms)", title, target=target_p95_ms))
    series = report["active_streams"]["series"]
    paths.append(step_plot(out / "stream_active.png", [t for t, _ in series], [n for _, n in series], "time (s)",
                           "open streams", "streams joining and leaving"))
    cap = report.get("capacity")
    if cap:
        xs = [t["streams"] for t in cap["trials"]]
        paths.append(line_plot(out / "stream_capacity.png",
                               {"p95": (xs, [t["p95"] for t in cap["trials"]]),
                                "p50": (xs, [t["p50"] for t in cap["trials"]])},
                               "concurrent streams", "chunk latency (ms)", "p95 chunk latency vs streams",
                               logx=False, hlines={f"target {target_p95_ms:.0f} ms": target_p95_ms}))
    return paths
