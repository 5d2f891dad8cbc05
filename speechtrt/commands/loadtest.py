"""``speechtrt loadtest``: real network clients against ``speechtrt serve`` (a URL, or a server it starts with the
same flags) beside the same build driven in-process; report into reports/loadtest.{json,md} and PNGs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command("loadtest")
    def loadtest(
        url: str | None = typer.Option(None, "--url", help="A running server (default: start `speechtrt serve` "
                                       "with the server flags below and stop it with SIGTERM after)."),
        target: str = typer.Option("serve", "--target", help="serve (the FastAPI server) | triton (Triton on an exported CPU repository, measured beside the FastAPI server and in-process: reports/loadtest_triton.*)."),
        in_process: bool = typer.Option(True, "--in-process/--no-in-process", help="Also drive the same build "
                                        "in-process, side by side."),
        concurrency: int = typer.Option(8, "--concurrency", min=1, help="TTS closed-loop clients."),
        requests: int = typer.Option(24, "--requests", min=1, help="TTS closed-loop requests in total."),
        rate: float = typer.Option(1.0, "--rate", min=0.01, help="TTS open-loop Poisson arrivals per second."),
        seconds: float = typer.Option(10.0, "--seconds", min=0.5, help="Open-loop and stream durations."),
        long_repeats: int = typer.Option(3, "--long-repeats", min=0, help="Requests of the 300-character text."),
        streams: int = typer.Option(64, "--streams", min=0, help="Concurrent real-time WebSocket streams."),
        uploads: int = typer.Option(16, "--uploads", min=0, help="Transcription uploads."),
        upload_concurrency: int = typer.Option(4, "--upload-concurrency", min=1),
        jitter_ms: float = typer.Option(20.0, "--jitter-ms", min=0.0, help="Stream client network jitter."),
        chunk_ms: float = typer.Option(160.0, "--chunk-ms", min=10.0, help="Mean stream client chunk (irregular: "
                                       "0.5x to 1.5x)."),
        out: Path = typer.Option(Path("reports"), "--out", help="Report folder."),
        cache_dir: Path = typer.Option(Path("tmp/cache/loadtest"), "--cache-dir"),
        quick: bool = typer.Option(False, "--quick", help="Smoke-test size (a few seconds per workload)."),
        seed: int = typer.Option(0, "--seed"),
        # the server's configuration (started here, and built in-process)
        threads: int = typer.Option(0, "--threads", min=0, help="Server torch/ORT threads (0: default)."),
        device: str = typer.Option("cpu", "--device"),
        tts_slots: int = typer.Option(8, "--tts-slots", min=1),
        tts_backend: str = typer.Option("torch", "--tts-backend"),
        asr_models: str = typer.Option("asr-small,asr-medium", "--asr-models"),
        select: Path | None = typer.Option(Path("reports/asr_eval.json"), "--select", help="Route uploads and "
                                           "streams by dialect ('' to turn off)."),
        admission_wait_s: float = typer.Option(5.0, "--admission-wait-s", min=0.0),
    ) -> None:
        """Load-test the server over the network (TTS open and closed loop, real-time streams, uploads) next to
        the same build in-process; p50/p95/p99, refusals, throughput, the serving targets."""
        from speechtrt.bench.server_url import check_server_url
        from speechtrt.files import check_writable

        check_writable(out, "--out")
        if url is not None:
            check_server_url(url)
        from speechtrt.bench.loadtest import LoadtestConfig, run_loadtest
        from speechtrt.serve.flags import config_from_flags

        console = Console()
        n_streams = max(streams, 1)
        serve_config = config_from_flags(
            port=0, threads=threads, device=device, tts_slots=tts_slots, tts_backend=tts_backend,
            tts_concurrency=max(concurrency, tts_slots) * 2, asr_models=asr_models,
            select=str(select) if select and str(select) and Path(select).is_file() else None,
            streams=n_streams, stream_model="asr-stream" if streams else "", admission_wait_s=admission_wait_s)
        cfg = LoadtestConfig(target=target, url=url, in_process=in_process, tts_concurrency=concurrency,
                             tts_requests=requests, tts_rate=rate, tts_seconds=seconds, long_repeats=long_repeats,
                             streams=streams,
                             stream_seconds=seconds, chunk_ms=chunk_ms, jitter_ms=jitter_ms, uploads=uploads,
                             upload_concurrency=upload_concurrency, out_dir=str(out), cache_dir=str(cache_dir),
                             seed=seed, quick=quick)
        command = "speechtrt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else \
            "speechtrt loadtest"
        report = run_loadtest(cfg, serve_config, log=lambda m: console.print(m, highlight=False, markup=False),
                              command=command)

        table = Table(title=f"speechtrt loadtest on {report['device']['summary']}")
        for col in ("measure", "network", "in-process"):
            table.add_column(col, justify="right" if col != "measure" else "left")
        net, loc = report["network"], report["in_process"]

        def cell(d, *keys):
            for k in keys:
                d = d.get(k) if isinstance(d, dict) else None
            if d is None:
                return "–"
            if isinstance(d, float):
                return f"{d:.0f}" if abs(d) >= 100 else f"{d:.3g}"
            return str(d)

        table.add_row("TTS single latency p50 (ms)", cell(net, "tts_single", "latency_ms", "p50"),
                      cell(loc, "tts_single", "latency_ms", "p50"))
        table.add_row(f"TTS c={report['config']['tts_concurrency']} audio s/s",
                      cell(net, "tts_closed_loop", "audio_s_per_s"), cell(loc, "tts_closed_loop", "audio_s_per_s"))
        table.add_row("TTS closed-loop TTFA p50 (ms)", cell(net, "tts_closed_loop", "ttfa_ms", "p50"),
                      cell(loc, "tts_closed_loop", "ttfa_ms", "p50"))
        table.add_row("long text TTFA / streamed total", cell(net, "tts_long_text", "ttfa_over_synthesis_p50"),
                      cell(loc, "tts_long_text", "ttfa_over_synthesis_p50"))
        table.add_row("long text unstreamed synthesis p50 (ms)", "–",
                      cell(loc, "tts_long_text", "unstreamed_ms", "p50"))
        table.add_row("stream partial p95 (ms)", cell(net, "streams", "partial_latency_ms", "p95"),
                      cell(loc, "streams", "partial_latency_ms", "p95"))
        table.add_row("stream finals == offline", cell(net, "streams", "finals_equal_offline"),
                      cell(loc, "streams", "finals_equal_offline"))
        table.add_row("upload latency p95 (ms)", cell(net, "transcriptions", "latency_ms", "p95"),
                      cell(loc, "transcriptions", "latency_ms", "p95"))
        console.print(table)
        for name, t in report["comparison"]["targets"].items():
            verdict = {True: "[green]met[/]", False: "[red]missed[/]", None: "not measured"}[t["met"]]
            value = "–" if t["value"] is None else f"{t['value']:.3g}"
            console.print(f"{name}: {value} (target {t['target']}) {verdict}")
        console.print("wrote " + ", ".join(report["files"]))
