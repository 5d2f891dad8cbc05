"""Turn a load run into ``reports/stream.json``, ``reports/stream.md`` and PNG plots.

The JSON always carries ``device``, ``versions``, ``commit``, ``streams``, ``chunk_ms``, ``latency_ms.{p50,p95,p99}``,
``batch_utilization``, ``dropped_chunks``, ``final_matches_offline`` and ``peak_mem_mb``; the Markdown puts the
measured numbers next to the seed's Part 3 constraints (< 100 ms per chunk, 50+ streams, < 8 GB).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from speechtrt import __version__
from speechtrt.stream.engine import StreamingEngine
from speechtrt.stream.loadgen import LoadConfig, LoadResult


def device_info(backend) -> str:
    """The processor the backend runs on, in words (CPU model and visible cores, or the CUDA device)."""
    if backend.device.type == "cuda":
        return torch.cuda.get_device_name(backend.device)
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores visible, torch threads {torch.get_num_threads()})"


def versions() -> dict:
    out = {"speechtrt": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__}
    if "onnxruntime" in sys.modules:
        out["onnxruntime"] = sys.modules["onnxruntime"].__version__
    if "tensorrt" in sys.modules:
        out["tensorrt"] = sys.modules["tensorrt"].__version__
    return out


def git_commit() -> str:
    """``HEAD``'s sha (with ``-dirty`` when the tree has changes), or ``unknown`` outside a repository."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown (no commit)"
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peak_memory_mb(backend) -> dict:
    """Peak resident memory of this process (and peak CUDA allocation when the backend is on a GPU), in MB."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    out = {"peak_rss_mb": round(rss_kb / 1024, 1)}
    if backend.device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(backend.device) / 2**20, 1)
    return out


def summarize(engine: StreamingEngine, load: LoadResult, cfg: LoadConfig) -> dict:
    """The numbers of one run (no environment fields)."""
    m = engine.metrics
    lat = np.asarray(m.latencies_s, dtype=np.float64) * 1000.0
    pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if lat.size else (lambda q: float("nan"))
    batches = np.asarray(m.batch_sizes, dtype=np.float64)
    decoded_s = sum(r.final.frames for r in load.records if r.final) * 0.01
    compute_s = float(np.sum(m.step_seconds))
    mem = peak_memory_mb(engine.backend)
    active = [n for _, n in load.active_over_time]
    return {
        "streams": cfg.streams,
        "chunk_ms": engine.config.chunk_ms,
        "client_chunk_ms": {"mean": cfg.chunk_ms, "spread": cfg.chunk_spread, "jitter_ms": cfg.jitter_ms},
        "seconds": cfg.seconds,
        "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99),
                       "mean": round(float(lat.mean()), 2) if lat.size else float("nan"),
                       "max": round(float(lat.max()), 2) if lat.size else float("nan"), "chunks": int(lat.size)},
        "batch_utilization": round(float(batches.mean()) / engine.config.max_batch, 4) if batches.size else 0.0,
        "batch_size": {"mean": round(float(batches.mean()), 2) if batches.size else 0.0,
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
        "peak_mem_mb": mem.get("peak_gpu_mb", mem["peak_rss_mb"]),
        "memory_mb": {**mem, "slot_state_mb": round(engine.pool.state_bytes() / 2**20, 2),
                      "slot_buffers_mb": round(engine.pool.buffer_bytes() / 2**20, 2)},
        "mismatches": load.mismatches,
    }


def build_report(run: dict, backend, model_desc: str, command: str, capacity: dict | None = None,
                 latencies_ms: list[float] | None = None) -> dict:
    report = {
        "device": device_info(backend),
        "versions": versions(),
        "commit": git_commit(),
        "command": command,
        "backend": backend.describe(),
        "model": model_desc,
        **run,
    }
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
    rows = [
        ("p95 chunk latency (arrival → updated partial)", f"≤ {target_p95_ms:.0f} ms", _fmt(lat["p95"], " ms"),
         ok(lat["p95"] <= target_p95_ms)),
        ("concurrent real-time streams", "≥ 50 (seed)", _fmt(report["streams"]), ok(report["streams"] >= 50)),
        ("dropped chunks", "0", _fmt(report["dropped_chunks"]), ok(report["dropped_chunks"] == 0)),
        ("final transcript == offline transcript", "100 %", _fmt(100 * report["final_matches_offline"], " %"),
         ok(report["final_matches_offline"] == 1.0)),
        ("peak memory", "< 8 GB", _fmt(report["peak_mem_mb"], " MB"), ok(report["peak_mem_mb"] < 8192)),
    ]
    lines = [
        "# Streaming ASR: concurrent real-time streams",
        "",
        f"- Command: `{report['command']}`",
        f"- Device: {report['device']}",
        f"- TrtFlavour: {json.dumps(report['backend'])}",
        f"- Model: {report['model']}",
        f"- Commit: {report['commit']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        f"- Model chunk {report['chunk_ms']:.0f} ms; client chunks {report['client_chunk_ms']['mean']:.0f} ms "
        f"± {100 * report['client_chunk_ms']['spread']:.0f} % with up to {report['client_chunk_ms']['jitter_ms']:.0f}"
        f" ms jitter; max batch {report['max_batch']}, max wait {report['max_wait_ms']} ms; {report['seconds']} s.",
        "",
        "## Results against the targets",
        "",
        "| Constraint | Target | Measured | Met |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        "## Detail",
        "",
        "| Metric | Value |",
        "|---|---|",
        f"| latency p50 / p95 / p99 / max | {_fmt(lat['p50'])} / {_fmt(lat['p95'])} / {_fmt(lat['p99'])} / "
        f"{_fmt(lat['max'])} ms over {lat['chunks']} chunks |",
        f"| batch utilisation (mean batch / max batch) | {_fmt(report['batch_utilization'])} "
        f"(mean {report['batch_size']['mean']}, max {report['batch_size']['max']}, {report['batch_size']['steps']} "
        "steps) |",
        f"| active streams (max / mean) | {report['active_streams']['max']} / {report['active_streams']['mean']} |",
        f"| streams served (joined and left) | {report['streams_served']} ({report['streams_failed']} failed) |",
        f"| RTF (model steps / audio) | {_fmt(report['rtf'])} |",
        f"| CPU RTF (process CPU time / audio) | {_fmt(report['cpu_rtf'])} |",
        f"| audio decoded | {report['audio_decoded_s']} s in {report['wall_s']} s wall |",
        f"| partial-transcript stability | {_fmt(report['partial_stability'])} |",
        f"| final text == offline text | {_fmt(100 * report['final_text_matches_offline'], ' %')} |",
        f"| backpressure retries / refused opens / idle timeouts | {report['backpressure_retries']} / "
        f"{report['refused_opens']} / {report['timed_out_streams']} |",
        f"| memory | {json.dumps(report['memory_mb'])} |",
    ]
    cap = report.get("capacity")
    if cap:
        lines += ["", "## Capacity search", "",
                  f"Largest stream count with p95 ≤ {cap['target_p95_ms']:.0f} ms and no drops: "
                  f"**{cap['capacity']}**.", "", "| Streams | p50 ms | p95 ms | p99 ms | batch util. | drops | holds |",
                  "|---|---|---|---|---|---|---|"]
        for t in cap["trials"]:
            lines.append(f"| {t['streams']} | {_fmt(t['p50'])} | {_fmt(t['p95'])} | {_fmt(t['p99'])} | "
                         f"{_fmt(t['batch_utilization'])} | {t['dropped_chunks']} | {ok(t['holds'])} |")
    lines += ["", "Figures: `stream_latency_cdf.png`, `stream_active.png`" + (", `stream_capacity.png`" if cap else "")
              + ".", ""]
    return "\n".join(lines)


def plot_latency_cdf(latencies_ms: list[float], path: Path, target_p95_ms: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = np.sort(np.asarray(latencies_ms))
    fig, ax = plt.subplots(figsize=(6, 4))
    if lat.size:
        ax.plot(lat, np.arange(1, lat.size + 1) / lat.size)
    ax.axvline(target_p95_ms, color="red", linestyle="--", label=f"target {target_p95_ms:.0f} ms")
    ax.axhline(0.95, color="gray", linestyle=":", label="p95")
    ax.set_xlabel("chunk latency: arrival → updated partial (ms)")
    ax.set_ylabel("fraction of chunks")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_capacity(trials: list[dict], path: Path, target_p95_ms: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([t["streams"] for t in trials], [t["p95"] for t in trials], marker="o", label="p95")
    ax.plot([t["streams"] for t in trials], [t["p50"] for t in trials], marker=".", alpha=0.6, label="p50")
    ax.axhline(target_p95_ms, color="red", linestyle="--", label=f"target {target_p95_ms:.0f} ms")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("chunk latency (ms)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _finite(obj):
    """NaN/Inf (an empty run) become ``null`` so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def plot_active_streams(series: list[list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.step([t for t, _ in series], [n for _, n in series], where="post")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("open streams")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(report: dict, latencies_ms: list[float], out_dir: str | Path, target_p95_ms: float) -> list[Path]:
    """Write ``stream.json``, ``stream.md``, ``stream_latency_cdf.png`` (and ``stream_capacity.png``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "stream.json", out / "stream.md", out / "stream_latency_cdf.png"]
    paths[0].write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")
    paths[1].write_text(markdown(report, target_p95_ms))
    title = f"{report['streams']} streams, {report['backend'].get('backend')} on {report['device'].split(' (')[0]}"
    plot_latency_cdf(latencies_ms, paths[2], target_p95_ms, title)
    paths.append(out / "stream_active.png")
    plot_active_streams(report["active_streams"]["series"], paths[-1], "streams joining and leaving")
    if report.get("capacity"):
        paths.append(out / "stream_capacity.png")
        plot_capacity(report["capacity"]["trials"], paths[-1], target_p95_ms, "p95 chunk latency vs streams")
    return paths
