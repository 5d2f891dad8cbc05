"""``speechtrt stream``: many simulated real-time clients against the streaming engine, measured and reported.

Flags become a :class:`~speechtrt.stream.benchmark.BenchConfig` (every value checked first, one line naming the flag),
then one call to :func:`~speechtrt.stream.benchmark.run_benchmark`, then a summary table.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from speechtrt.errors import InputError


def _check_flags(values: dict[str, tuple[float, bool, str]]) -> None:
    """``flag -> (value, ok, what it must be)``: the first value that is not ok is refused naming its flag."""
    for flag, (value, ok, must) in values.items():
        if not ok:
            raise InputError(f"{flag} {value:g}: {must}")


def _step_config(backend: str, precision: str | None, fp16: bool, device: str, cuda_graphs: bool, threads: int,
                 onnx_dir: Path | None, engine_dir: Path):
    """The step's frozen config from its flags (backend, precision and device checked by the vocabulary)."""
    from speechtrt.vocab import check_backend, check_precision

    check_backend(backend)
    if fp16 and precision not in (None, "fp16"):
        raise InputError(f"--fp16 and --precision {precision} disagree; give one of them")
    precision = check_precision(precision or ("fp16" if fp16 else "fp32"), backend)
    _check_flags({"--threads": (threads, threads >= 0, "give 0 (library default) or a positive thread count")})
    from speechtrt.stream.step import StepConfig
    return StepConfig(backend=backend, precision=precision, device=device, cuda_graphs=cuda_graphs,
                      threads=threads or None, onnx_dir=onnx_dir, engine_dir=engine_dir)


def _check_paths(manifest: Path | None, checkpoint: Path | None, out: Path, cache_dir: Path) -> None:
    """Inputs exist and output folders are writable, before any work starts."""
    from speechtrt.files import check_writable

    if manifest is not None and not manifest.is_file():
        raise InputError(f"--manifest {manifest} does not exist: pass a JSONL file with one utterance per line "
                         "(`speechtrt data synth` makes one)")
    if checkpoint is not None and not checkpoint.is_file():
        raise InputError(f"--checkpoint {checkpoint} does not exist: pass an asr-stream checkpoint")
    check_writable(out, "--out")
    check_writable(cache_dir, "--cache-dir")


def _run(cfg) -> None:
    """The one library call, with a progress bar; then the summary."""
    from speechtrt.stream.benchmark import run_benchmark

    console = Console()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("streams", total=cfg.seconds)
        result = run_benchmark(cfg, progress=lambda n, t: bar.update(task, description=f"{n} streams", completed=t),
                               log=console.print)
    _print_summary(console, result.report, cfg.target)
    console.print("wrote " + ", ".join(str(p) for p in result.paths))


def _print_summary(console: Console, report: dict, target: float) -> None:
    lat = report["latency_ms"]
    table = Table(title=f"speechtrt stream: {report['streams']} streams on {report['device']['summary']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("chunk latency p50 / p95 / p99 (ms)", f"{lat['p50']} / {lat['p95']} / {lat['p99']}")
    table.add_row("batch utilisation", f"{report['batch_utilization']:.3f} (mean batch {report['batch_size']['mean']})")
    table.add_row("dropped chunks", str(report["dropped_chunks"]))
    table.add_row("final == offline", f"{100 * report['final_matches_offline']:.1f} % of "
                  f"{report['offline_checked_streams']} streams")
    table.add_row("RTF / CPU RTF", f"{report['rtf']} / {report['cpu_rtf']}")
    table.add_row("peak memory (MB)", str(report["peak_mem_mb"]))
    if report.get("capacity"):
        table.add_row(f"capacity at p95 ≤ {target:.0f} ms", str(report["capacity"]["capacity"]))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("stream")
    def stream(
        streams: int = typer.Option(64, "--streams", min=1, help="Concurrent real-time client streams."),
        chunk_ms: int = typer.Option(160, "--chunk-ms", min=40, help="Model chunk (and mean client chunk), ms; "
                                     "a multiple of 40."),
        seconds: float = typer.Option(20.0, "--seconds", min=0.5, help="How long clients keep joining."),
        backend: str = typer.Option("torch", "--backend", help="torch | ort | trt"),
        precision: str | None = typer.Option(None, "--precision", "-p", help="fp32 (default) | fp16 | bf16 | int8, "
                                             "as the backend runs them (torch fp16/bf16 on CUDA, int8 on the CPU; "
                                             "ort/trt: the graph or plan of that precision, made when missing)."),
        device: str = typer.Option("cpu", "--device", help="cpu | cuda for torch and ort (ort on CUDA needs "
                                   "onnxruntime-gpu); trt always runs on CUDA."),
        fp16: bool = typer.Option(False, "--fp16", help="Same as --precision fp16."),
        cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="Capture one CUDA graph per batch bucket "
                                         "(torch on CUDA)."),
        max_batch: int = typer.Option(0, "--max-batch", min=0, help="Largest batch (0: min(streams, 1024))."),
        max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", min=0.0, help="Longest a ready chunk waits for "
                                          "a fuller batch."),
        max_buffer_ms: float = typer.Option(2000.0, "--max-buffer-ms", help="Unprocessed audio a stream may hold "
                                            "before its producer sees backpressure."),
        idle_timeout_s: float = typer.Option(30.0, "--idle-timeout-s", help="Finalize streams idle this long."),
        jitter_ms: float = typer.Option(20.0, "--jitter-ms", help="Client network jitter (uniform 0..jitter)."),
        manifest: Path | None = typer.Option(None, "--manifest", help="JSONL manifest of utterances to play "
                                             "(default: espeak-ng utterances in several accents); bad rows are "
                                             "skipped and listed."),
        utterances: int = typer.Option(8, "--utterances", min=1, help="Utterances to synthesize/read."),
        checkpoint: Path | None = typer.Option(None, "--checkpoint", help="asr-stream checkpoint (default: "
                                               "checkpoints/asr-stream.pt when it exists, else the seeded init)."),
        onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder of asr_stream_step graphs for --backend "
                                             "ort (default: a cache folder keyed by the model's weights)."),
        engine_dir: Path = typer.Option(Path("engines"), "--engine-dir", help="TensorRT engines for --backend trt: "
                                        "<dir>/<sm_XX>/asr-stream/asr_stream_step.<precision>.plan for the GPU "
                                        "present, as `speechtrt build --model asr-stream` writes them."),
        threads: int = typer.Option(0, "--threads", help="CPU threads for torch/ORT (0: library default)."),
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
        _check_flags({
            "--chunk-ms": (chunk_ms, chunk_ms % 40 == 0, "the model consumes 4-frame (40 ms) steps; use a multiple "
                                                         "of 40"),
            "--jitter-ms": (jitter_ms, jitter_ms >= 0, "jitter is a delay; give 0 or more milliseconds"),
            "--max-buffer-ms": (max_buffer_ms, max_buffer_ms > 0, "a stream must buffer some audio; give a positive "
                                                                  "number of milliseconds (2000 by default)"),
            "--idle-timeout-s": (idle_timeout_s, idle_timeout_s > 0, "give a positive number of seconds"),
            "--target-p95-ms": (target_p95_ms, target_p95_ms >= 0, "give 0 (the default target) or a positive "
                                                                   "number of milliseconds"),
            "--capacity-max": (capacity_max, not find_capacity or capacity_max >= streams, "the capacity search "
                                                                                          "starts at --streams; "
                                                                                          "give at least that"),
        })
        _check_paths(manifest, checkpoint, out, cache_dir)
        step = _step_config(backend, precision, fp16, device, cuda_graphs, threads, onnx_dir, engine_dir)
        from speechtrt.stream.benchmark import BenchConfig

        command = "speechtrt " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "speechtrt stream"
        _run(BenchConfig(step=step, streams=streams, chunk_ms=chunk_ms, seconds=seconds, max_batch=max_batch,
                         max_wait_ms=max_wait_ms, max_buffer_ms=max_buffer_ms, idle_timeout_s=idle_timeout_s,
                         jitter_ms=jitter_ms, seed=seed, manifest=manifest, utterances=utterances,
                         checkpoint=checkpoint, out=out, cache_dir=cache_dir, find_capacity=find_capacity,
                         capacity_max=capacity_max, target_p95_ms=target_p95_ms, command=command))
