"""``speechtrt stream``: many simulated real-time clients against the streaming engine, measured and reported."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from speechtrt.errors import InputError

DEFAULT_CHECKPOINT = Path("checkpoints/asr-stream.pt")


def load_stream_model(checkpoint: Path | None):
    """The trained streaming checkpoint when there is one (explicit, or ``checkpoints/asr-stream.pt``), else the
    seeded init model. Returns ``(model, description)``."""
    from speechtrt.models import StreamingASRModel, build_model, load_checkpoint

    path = checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
    if path is None:
        return build_model("asr-stream"), "asr-stream, seeded init (no checkpoint: transcripts are not words)"
    model, meta = load_checkpoint(path)
    if not isinstance(model, StreamingASRModel):
        raise InputError(f"checkpoint {path} holds a {type(model).__name__}; `speechtrt stream` needs an asr-stream "
                         "checkpoint")
    return model, f"asr-stream from {path}"


def _trial(model, args: dict, streams: int, utterances, console: Console, label: str):
    """One load run at ``streams`` concurrent clients; returns (summary dict, latencies ms, backend)."""
    import torch

    from speechtrt.stream.backends import make_backend
    from speechtrt.stream.engine import StreamConfig, StreamingEngine
    from speechtrt.stream.loadgen import LoadConfig, check_against_offline, run_load
    from speechtrt.stream.report import summarize

    chunk_frames = int(round(args["chunk_ms"] / 10))
    max_batch = args["max_batch"] or min(streams, 1024)
    backend = make_backend(args["backend"], model, device=args["device"], fp16=args["fp16"],
                           cuda_graphs=args["cuda_graphs"], max_batch=max_batch, chunk_frames=chunk_frames,
                           onnx_path=args["onnx"], engine_path=args["engine"], engine_dir=args["engine_dir"],
                           precision=args["precision"], threads=args["threads"], cache_dir=args["cache_dir"] / "onnx")
    config = StreamConfig(max_streams=streams, max_batch=max_batch, max_wait_ms=args["max_wait_ms"],
                          chunk_frames=chunk_frames, max_buffer_ms=args["max_buffer_ms"],
                          idle_timeout_s=args["idle_timeout_s"])
    load_cfg = LoadConfig(streams=streams, seconds=args["seconds"], chunk_ms=args["chunk_ms"],
                          jitter_ms=args["jitter_ms"], seed=args["seed"])
    engine = StreamingEngine(backend, config)
    engine.warmup()
    if backend.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(backend.device)
    with Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("load", total=args["seconds"])
        with engine:
            result = run_load(engine, utterances, load_cfg, progress=lambda t: progress.update(task, completed=t))
    check_against_offline(result, utterances, backend, chunk_frames)
    summary = summarize(engine, result, load_cfg)
    return summary, [x * 1000 for x in engine.metrics.latencies_s], backend


def register(app: typer.Typer) -> None:
    @app.command("stream")
    def stream(
        streams: int = typer.Option(64, "--streams", min=1, help="Concurrent real-time client streams."),
        chunk_ms: int = typer.Option(160, "--chunk-ms", min=40, help="Model chunk (and mean client chunk), ms; "
                                     "a multiple of 40."),
        seconds: float = typer.Option(20.0, "--seconds", min=0.5, help="How long clients keep joining."),
        backend: str = typer.Option("torch", "--backend", help="torch | ort | trt"),
        device: str = typer.Option("cpu", "--device", help="cpu | cuda for torch and ort (ort on CUDA needs "
                                   "onnxruntime-gpu); trt always runs on CUDA."),
        fp16: bool = typer.Option(False, "--fp16", help="FP16 model and state (torch on CUDA)."),
        cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="Capture one CUDA graph per batch bucket."),
        max_batch: int = typer.Option(0, "--max-batch", min=0, help="Largest batch (0: min(streams, 1024))."),
        max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", min=0.0, help="Longest a ready chunk waits for "
                                          "a fuller batch."),
        max_buffer_ms: float = typer.Option(2000.0, "--max-buffer-ms", help="Unprocessed audio a stream may hold "
                                            "before its producer sees backpressure."),
        idle_timeout_s: float = typer.Option(30.0, "--idle-timeout-s", help="Finalize streams idle this long."),
        jitter_ms: float = typer.Option(20.0, "--jitter-ms", help="Client network jitter (uniform 0..jitter)."),
        manifest: Path | None = typer.Option(None, "--manifest", help="JSONL manifest of utterances to play "
                                             "(default: espeak-ng utterances in several accents)."),
        utterances: int = typer.Option(8, "--utterances", min=1, help="Utterances to synthesize/read."),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", help="asr-stream checkpoint (default: "
                                               "checkpoints/asr-stream.pt when it exists, else the seeded init)."),
        onnx: Path | None = typer.Option(None, "--onnx", help="asr_stream_step ONNX for --backend ort (default: "
                                         "exported from the model into the cache)."),
        engine: Path | None = typer.Option(None, "--engine", help="asr_stream_step plan for --backend trt "
                                           "(overrides --engine-dir)."),
        engine_dir: Path = typer.Option(Path("engines"), "--engine-dir", help="TensorRT engines for --backend trt: "
                                        "<dir>/<sm_XX>/asr-stream/asr_stream_step.<precision>.plan for the GPU "
                                        "present, as `speechtrt build --model asr-stream` writes them."),
        precision: str | None = typer.Option(None, "--precision", "-p", help="Plan precision taken from "
                                             "--engine-dir: fp32 | fp16 | int8 (default fp32; --backend trt)."),
        threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for torch/ORT (0: library default)."),
        find_capacity: bool = typer.Option(False, "--find-capacity", help="Raise the stream count from --streams "
                                           "until p95 misses the target; report the largest count that holds."),
        capacity_max: int = typer.Option(4096, "--capacity-max", help="Stop the capacity search here."),
        target_p95_ms: float = typer.Option(0.0, "--target-p95-ms", help="p95 target (0: 100 on CPU, 50 on CUDA)."),
        out: Path = typer.Option(Path("reports"), "--out", help="Report folder."),
        cache_dir: Path = typer.Option(Path("tmp/cache/stream"), "--cache-dir", help="Utterance/ONNX cache."),
        seed: int = typer.Option(0, "--seed", help="Load generator seed."),
    ) -> None:
        """Serve N concurrent real-time streams (real utterances, jitter, irregular chunks, joins and leaves) and
        report chunk latency, batch utilisation, drops, memory and final-vs-offline agreement."""
        import torch

        from speechtrt.engines.builder import PRECISIONS as BUILD_PRECISIONS
        from speechtrt.stream.loadgen import read_manifest, synth_utterances
        from speechtrt.stream.report import build_report, write_reports

        console = Console()
        if chunk_ms % 40:
            raise InputError(f"--chunk-ms {chunk_ms}: the model consumes 4-frame (40 ms) steps; use a multiple of 40")
        if precision is not None and backend != "trt":
            raise InputError(f"--precision picks the plan of --backend trt; the {backend} backend runs FP32 "
                             "(torch on CUDA: --fp16)")
        if precision is not None and precision not in BUILD_PRECISIONS:
            raise InputError(f"--precision {precision!r}: engines are built in {', '.join(BUILD_PRECISIONS)}")
        if threads:
            torch.set_num_threads(threads)
        target = target_p95_ms or (50.0 if device == "cuda" or backend == "trt" else 100.0)
        model, model_desc = load_stream_model(checkpoint)
        utts = read_manifest(manifest, limit=utterances) if manifest else synth_utterances(
            cache_dir / "utterances", utterances)
        args = dict(chunk_ms=chunk_ms, backend=backend, device=device, fp16=fp16, cuda_graphs=cuda_graphs,
                    max_batch=max_batch, max_wait_ms=max_wait_ms, max_buffer_ms=max_buffer_ms,
                    idle_timeout_s=idle_timeout_s, seconds=seconds, jitter_ms=jitter_ms, onnx=onnx, engine=engine,
                    engine_dir=engine_dir, precision=precision or "fp32", threads=threads or None,
                    cache_dir=cache_dir, seed=seed)
        command = "speechtrt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "speechtrt stream"

        capacity = None
        if not find_capacity:
            run, latencies, be = _trial(model, args, streams, utts, console, f"{streams} streams")
        else:
            trials, best, fail, first = [], None, None, None

            def attempt(n: int) -> bool:
                nonlocal best, first
                result = _trial(model, args, n, utts, console, f"{n} streams")
                first = first or result
                run_n = result[0]
                holds = run_n["latency_ms"]["p95"] <= target and run_n["dropped_chunks"] == 0
                trials.append({"streams": n, **{k: run_n["latency_ms"][k] for k in ("p50", "p95", "p99")},
                               "batch_utilization": run_n["batch_utilization"],
                               "dropped_chunks": run_n["dropped_chunks"], "holds": holds})
                console.print(f"{n} streams: p95 {run_n['latency_ms']['p95']} ms, drops {run_n['dropped_chunks']}"
                              f" -> {'holds' if holds else 'misses the target'}")
                if holds and (best is None or n > best[0]["streams"]):
                    best = result
                return holds

            # grow by 1.5x until a count misses the target, then bisect (to 8 streams) between the last two
            n = streams
            while n <= capacity_max:
                if not attempt(n):
                    fail = n
                    break
                n = max(n + 8, int(n * 1.5) // 8 * 8)
            lo = best[0]["streams"] if best else 0
            while fail is not None and fail - lo > 8:
                mid = max(8, (lo + fail) // 2 // 8 * 8)
                if mid <= lo or mid >= fail:
                    break
                if attempt(mid):
                    lo = mid
                else:
                    fail = mid
            trials.sort(key=lambda t: t["streams"])
            run, latencies, be = best or first  # the largest count that holds, else the first trial
            capacity = {"target_p95_ms": target, "capacity": best[0]["streams"] if best else 0, "trials": trials}
        report = build_report(run, be, model_desc, command, capacity)
        paths = write_reports(report, latencies, out, target)

        lat = report["latency_ms"]
        table = Table(title=f"speechtrt stream: {report['streams']} streams on {report['device']}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_row("chunk latency p50 / p95 / p99 (ms)", f"{lat['p50']} / {lat['p95']} / {lat['p99']}")
        table.add_row("batch utilisation", f"{report['batch_utilization']:.3f} (mean batch "
                      f"{report['batch_size']['mean']})")
        table.add_row("dropped chunks", str(report["dropped_chunks"]))
        table.add_row("final == offline", f"{100 * report['final_matches_offline']:.1f} % of "
                      f"{report['offline_checked_streams']} streams")
        table.add_row("RTF / CPU RTF", f"{report['rtf']} / {report['cpu_rtf']}")
        table.add_row("peak memory (MB)", str(report["peak_mem_mb"]))
        if capacity:
            table.add_row(f"capacity at p95 ≤ {target:.0f} ms", str(capacity["capacity"]))
        console.print(table)
        console.print("wrote " + ", ".join(str(p) for p in paths))
