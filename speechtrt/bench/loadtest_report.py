"""``speechtrt loadtest``'s report: the network numbers set against the in-process numbers of the same build and
against the serving targets, as JSON + Markdown + PNG.

Definitions: time to first audio = request sent → first audio bytes received (the ``pcm`` format, no header);
inter-chunk gap = time between received chunks, reads closer than 1 ms apart counting as one chunk; partial
latency = the send of the audio frame that completed a model chunk → the partial covering it received; dropped
audio = audio sent minus audio the server reports in the final.
"""

from __future__ import annotations

from pathlib import Path

from speechtrt.reporting import markdown_table, write_json, write_text

ISSUE_TARGETS = {
    "stream_partial_p95_ms": 100.0,  # at 64 concurrent real-time streams
    "tts_throughput_vs_in_process": 0.80,  # HTTP at concurrency 8, same run
    # TTFA p50 of a 300-character text over its full synthesis time, read two ways: the last byte of the same
    # streamed request, and the whole text synthesized without streaming (what a non-streaming server returns)
    "long_text_ttfa_vs_streamed_total": 0.40,
    "long_text_ttfa_vs_unstreamed_synthesis": 0.40,
    "single_request_overhead": 0.10,  # HTTP vs in-process, same text
}


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def compare(report: dict) -> dict:
    """Network against in-process, and the issue's targets (met / missed / not measured)."""
    net, loc = report["network"], report["in_process"]
    out: dict = {}
    a, b = _get(net, "tts_single", "latency_ms", "p50"), _get(loc, "tts_single", "latency_ms", "p50")
    out["single_request_overhead"] = (a / b - 1) if a and b else None
    a, b = _get(net, "tts_closed_loop", "audio_s_per_s"), _get(loc, "tts_closed_loop", "audio_s_per_s")
    out["tts_throughput_vs_in_process"] = a / b if a and b else None
    out["long_text_ttfa_vs_streamed_total"] = _get(net, "tts_long_text", "ttfa_over_synthesis_p50")
    a, b = _get(net, "tts_long_text", "ttfa_ms", "p50"), _get(loc, "tts_long_text", "unstreamed_ms", "p50")
    out["long_text_ttfa_vs_unstreamed_synthesis"] = a / b if a and b else None
    out["stream_partial_p95_ms"] = _get(net, "streams", "partial_latency_ms", "p95")
    targets = {}
    for name, limit in ISSUE_TARGETS.items():
        v = out.get(name)
        higher_is_better = name == "tts_throughput_vs_in_process"
        met = None if v is None else (v >= limit if higher_is_better else v <= limit)
        targets[name] = {"value": v, "target": limit, "met": met}
    streams = net.get("streams") or {}
    targets["stream_finals_equal_offline"] = {"value": streams.get("finals_equal_offline"), "target": 1.0,
                                              "met": None if streams.get("finals_equal_offline") is None
                                              else streams["finals_equal_offline"] == 1.0}
    targets["stream_dropped_audio_s"] = {"value": streams.get("dropped_audio_s"), "target": 0.0,
                                         "met": None if streams.get("dropped_audio_s") is None
                                         else streams["dropped_audio_s"] < 1e-3}
    tri = report.get("triton")
    if tri:  # Triton against the FastAPI server of the same build, same run (throughput within 20 %)
        for key, what in (("tts_closed_loop", "audio_s_per_s"), ("transcriptions", "audio_s_per_s")):
            a, b = _get(tri, key, what), _get(net, key, what)
            out[f"triton_vs_serve_{key}"] = a / b if a and b else None
            targets[f"triton_vs_serve_{key}"] = {"value": out[f"triton_vs_serve_{key}"], "target": 0.8,
                                                 "met": None if not (a and b) else a / b >= 0.8}
        ts = tri.get("streams") or {}
        p95 = _get(tri, "streams", "partial_latency_ms", "p95")
        targets["triton_stream_partial_p95_ms"] = {"value": p95, "target": 100.0,
                                                   "met": None if p95 is None else p95 <= 100.0}
        targets["triton_stream_finals_equal_offline"] = {
            "value": ts.get("finals_equal_offline"), "target": 1.0,
            "met": None if ts.get("finals_equal_offline") is None else ts["finals_equal_offline"] == 1.0}
    out["targets"] = targets
    out["note"] = (f"targets are stated for 64 streams and TTS concurrency 8; this run used "
                   f"{report['config']['streams']} streams and concurrency {report['config']['tts_concurrency']}")
    return out


# ---------------------------------------------------------------- report files


def _fmt(stats: dict | None, key: str = "p50") -> float | None:
    return None if not stats else stats.get(key)


def _load_line(report: dict) -> str:
    loads = [x for side in ("network", "in_process") for r in report[side].values() if isinstance(r, dict)
             for x in r.get("load_average", [])]
    if not loads:
        return ""
    cores = report["device"].get("cpu_cores") or 1
    line = f"- 1-minute load average around the runs: {min(loads):.1f} to {max(loads):.1f} ({cores} cores)"
    if max(loads) > cores:
        line += " — **other processes competed for the CPU: latencies are not those of a quiet machine**"
    return line


def _sides(report: dict) -> list[tuple[str, dict]]:
    """(label, results) of every target the run measured, in the order they ran."""
    out = [("serve (network)", report["network"])]
    if report.get("triton"):
        out.append(("triton (network)", report["triton"]))
    out.append(("in-process", report["in_process"]))
    return [(label, d) for label, d in out if d]


def render_markdown(report: dict) -> str:
    from speechtrt.reporting import commit_label

    cmp = report["comparison"]
    dev = report["device"]["summary"]
    lines = ["# Load test: `speechtrt serve` over the network vs the same build in-process", "",
             f"- device: {dev}", f"- commit: {commit_label(report['commit'])}",
             f"- server: {report['server'].get('url')} (started by the load test: "
             f"{report['server'].get('started_by_loadtest')}, peak RSS "
             f"{report['server'].get('peak_rss_mb') or '–'} MB, SIGTERM → exit "
             f"{report['server'].get('drain_and_exit_s', 0):.1f} s, code {report['server'].get('exit_code', '–')})",
             f"- command: `{report['command']}`", _load_line(report), ""]
    if report.get("triton_server"):
        lines[-1:-1] = [f"- Triton: {report['triton_server']['grpc_url']} (gRPC), repository "
                        f"`{report['triton_server']['repository']}`, started by the load test"]
    rows = []
    for key, label in (("tts_single", "TTS single request"), ("tts_closed_loop", "TTS closed loop"),
                       ("tts_open_loop", "TTS open loop"), ("tts_long_text", "TTS long text")):
        for side, d in _sides(report):
            s = d.get(key)
            if not s:
                continue
            rows.append([label, side, s["ok"], s["refused"], s["errors"], _fmt(s["ttfa_ms"]),
                         _fmt(s["ttfa_ms"], "p95"), _fmt(s["latency_ms"]), _fmt(s["latency_ms"], "p95"),
                         _fmt(s["latency_ms"], "p99"), _fmt(s["inter_chunk_gap_ms"], "p95"),
                         s.get("requests_per_s"), s.get("audio_s_per_s")])
    lines += ["## TTS (`POST /v1/audio/speech`, pcm)", "", markdown_table(
        ["workload", "target", "ok", "refused", "errors", "TTFA p50 ms", "TTFA p95 ms", "latency p50 ms",
         "p95 ms", "p99 ms", "gap p95 ms", "req/s", "audio s/s"], rows), ""]
    rows = []
    for side, d in _sides(report):
        s = d.get("streams")
        if s:
            lat = s["partial_latency_ms"] or {}
            rows.append([side, s["clients"], s["streams"], s["refused"], s["errors"], lat.get("p50"), lat.get("p95"),
                         lat.get("p99"), s.get("finals_equal_offline"), s["dropped_audio_s"]])
    if rows:
        lines += ["## Streaming ASR (`WS /v1/stream`, real-time clients)", "", markdown_table(
            ["target", "clients", "streams", "refused", "errors", "partial p50 ms", "p95 ms", "p99 ms",
             "finals == offline", "dropped audio s"], rows), ""]
    rows = []
    for side, d in _sides(report):
        s = d.get("transcriptions")
        if s:
            lat = s["latency_ms"] or {}
            models = ", ".join(f"{k}: {v}" for k, v in s["models"].items())
            rows.append([side, s["ok"], s["refused"], s["errors"], lat.get("p50"), lat.get("p95"), lat.get("p99"),
                         s["uploads_per_s"], s["audio_s_per_s"], models])
    if rows:
        lines += ["## Transcriptions (`POST /v1/audio/transcriptions`)", "", markdown_table(
            ["target", "ok", "refused", "errors", "p50 ms", "p95 ms", "p99 ms", "uploads/s", "audio s/s",
             "models (route)"], rows), ""]
    rows = [[name, t["value"], t["target"], {True: "met", False: "missed", None: "not measured"}[t["met"]]]
            for name, t in cmp["targets"].items()]
    lines += ["## Targets", "", markdown_table(["target", "value", "limit", "verdict"], rows), "", cmp["note"], "",
              "Definitions: " + __doc__.split("Definitions: ", 1)[1].strip().replace("\n", " ")]
    return "\n".join(lines) + "\n"


def write_report(report: dict, raw: dict, out: Path) -> list[Path]:
    """``loadtest.{json,md}`` (``loadtest_triton.*`` when Triton was measured) and the latency CDFs."""
    from speechtrt.reporting.plots import cdf_plot

    stem = "loadtest_triton" if report.get("triton") else "loadtest"
    paths = [write_json(out / f"{stem}.json", report), write_text(out / f"{stem}.md", render_markdown(report))]
    sides = [s for s in ("network", "triton", "in_process") if s in raw]
    series = {}
    for side in sides:
        r = raw.get(side) or {}
        if r.get("tts_latency_s"):
            series[f"{side} latency"] = [x * 1e3 for x in r["tts_latency_s"]]
            series[f"{side} TTFA"] = [x * 1e3 for x in r["tts_ttfa_s"]]
    if series:
        paths.append(cdf_plot(out / f"{stem}_tts_cdf.png", series, "milliseconds",
                              "TTS closed loop: latency and time to first audio"))
    series = {side: [x * 1e3 for x in (raw.get(side) or {}).get("partial_latency_s", [])] for side in sides}
    if any(series.values()):
        paths.append(cdf_plot(out / f"{stem}_stream_cdf.png", series, "partial latency, ms",
                              "Streaming ASR: partial latency", target=ISSUE_TARGETS["stream_partial_p95_ms"],
                              target_label="p95 target"))
    return paths
