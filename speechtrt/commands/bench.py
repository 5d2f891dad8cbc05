"""``speechtrt bench``: the seed TTS baseline against the optimized variants, same run, same device."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from speechtrt.errors import InputError


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise InputError(f"{flag} needs positive integers, got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        device: str = typer.Option("cpu", "--device", "-d", help="cpu | cuda (or cuda:N)"),
        backend: str = typer.Option("", "--backend", "-b",
                                    help="Comma list of torch, ort, trt (default: torch,ort on CPU; torch on CUDA)."),
        precision: str = typer.Option("", "--precision", "-p",
                                      help="Comma list of fp32, fp16, bf16, int8 (default: fp32,int8 on CPU; fp16,bf16,fp32 on CUDA)."),
        repeats: int = typer.Option(3, min=1, help="Timed repeats of the headline per variant (other texts: repeats // 3, at least 1)."),
        warmup: int = typer.Option(1, min=0, help="Untimed warm-up syntheses per variant."),
        categories: str = typer.Option("headline,short,medium,long", help="Categories the optimized variants run."),
        baseline_categories: str = typer.Option(
            "headline,short", help="Categories the seed baseline runs (its medium/long texts take minutes each on a CPU)."),
        baseline_repeats: int = typer.Option(3, min=1, help="Timed repeats of the headline for the seed baseline."),
        concurrency: str = typer.Option("", help="Closed-loop client counts (default 1,2,4,8 on CPU; 1,4,16,64,256 on CUDA)."),
        batch_sizes: str = typer.Option("", help="Batch sizes to sweep (default 1,8,32 on CPU; 1,4,16,64,256 on CUDA)."),
        requests_per_client: int = typer.Option(2, min=1, help="Requests each closed-loop client completes."),
        max_frames: int = typer.Option(1000, min=1, max=1000, help="Cap of the frame rule for every variant (1000 = the seed's)."),
        onnx_dir: Path = typer.Option(Path("out/onnx"), help="ONNX graphs for the ort backend (exported if missing)."),
        engine_dir: Path = typer.Option(Path("engines"), help="TensorRT engines for the trt backend."),
        out: Path = typer.Option(Path("reports"), "--out", "-o", help="Folder for tts_bench.json/.md and the plots."),
        threads: int = typer.Option(
            1, min=0, help="CPU threads for torch and ONNX Runtime, the same for every variant (0: library defaults). One "
                    "thread keeps baseline and variants comparable on a shared machine, where spinning OpenMP threads "
                    "slow down by an order of magnitude."),
        quick: bool = typer.Option(False, "--quick", help="Smoke-test size: 24 frames, headline + one short text, tiny sweeps."),
        model: str = typer.Option(None, "--model", "-m", help="Stop-token model of the natural-length workload: "
                                  "voice-en (default when checkpoints/voice-en.pt is present), a checkpoint file, or "
                                  "module:factory. The seed comparison always runs the seeded tts."),
        workload: str = typer.Option("all", "--workload", help="all | natural (only the natural-length section, "
                                     "merged into an existing <out>/tts_bench.json)."),
        natural_batch: int = typer.Option(8, "--natural-batch", min=1, max=256,
                                          help="Batch size of both policies in the natural-length workload."),
        natural_requests: int = typer.Option(32, "--natural-requests", min=1, max=4096,
                                             help="Held-out sentences in the natural-length workload."),
        natural_repeats: int = typer.Option(3, "--natural-repeats", min=1, max=50,
                                            help="Runs per policy in the natural-length workload, alternating "
                                                 "in-flight and static; the report keeps each policy's fastest and "
                                                 "lists every run (--quick: 1)."),
        arrival_rate: float = typer.Option(0.0, "--arrival-rate", min=0.0, help="Natural-length arrivals per "
                                           "second (Poisson, seeded); 0: every request waiting at the start."),
    ) -> None:
        """Benchmark TTS: seed baseline vs optimized variants; writes reports/tts_bench.{json,md} and PNG plots."""
        from speechtrt.models.loading import check_model_spec

        if model is not None:
            check_model_spec(model)
        from speechtrt.bench.tts_bench import CATEGORIES, BenchConfig, run_tts_bench
        from speechtrt.files import check_writable
        from speechtrt.vocab import BACKENDS, PRECISIONS, parse_list

        gpu = device.startswith("cuda")
        if not device.startswith(("cpu", "cuda")):
            raise InputError(f"--device must be cpu or cuda[:N], got {device!r}")
        cfg = BenchConfig(
            device=device,
            backends=parse_list(backend or ("torch" if gpu else "torch,ort"), BACKENDS, "--backend", "backend"),
            precisions=parse_list(precision or ("fp16,bf16,fp32" if gpu else "fp32,int8"), PRECISIONS, "--precision",
                                  "precision"),
            repeats=repeats, warmup=warmup,
            categories=parse_list(categories, CATEGORIES, "--categories", "category"),
            baseline_categories=parse_list(baseline_categories, CATEGORIES, "--baseline-categories", "category"),
            baseline_repeats=baseline_repeats,
            concurrency=_ints(concurrency or ("1,4,16,64,256" if gpu else "1,2,4,8"), "--concurrency"),
            batch_sizes=_ints(batch_sizes or ("1,4,16,64,256" if gpu else "1,8,32"), "--batch-sizes"),
            requests_per_client=requests_per_client, max_frames=max_frames,
            max_slots=256 if gpu else 16,
            onnx_dir=str(onnx_dir), engine_dir=str(engine_dir), out_dir=str(out), threads=threads or None,
            quick=quick, model=model, workload=workload, natural_batch=natural_batch,
            natural_requests=natural_requests, natural_repeats=natural_repeats, natural_arrival_rate=arrival_rate,
        )
        if workload not in ("all", "natural"):
            raise InputError(f"--workload {workload!r}: choose all or natural")
        if "headline" not in cfg.baseline_categories:
            raise InputError("--baseline-categories must include 'headline' (the speedup is measured on it)")
        check_writable(out, "--out")
        console = Console()
        if not console.is_terminal:  # logs (CI, redirected output): one line per stage instead of a spinner
            report = run_tts_bench(cfg, log=console.print, progress=lambda msg: console.print(f"· {msg}"))
            _print_summary(console, report, out)
            return
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      transient=True) as progress:
            task = progress.add_task("starting")
            report = run_tts_bench(cfg, log=console.print,
                                   progress=lambda msg: progress.update(task, description=msg))
        _print_summary(console, report, out)


def _db(x) -> str:
    return "identical" if x is not None and float(x) == float("inf") else ("–" if x is None else f"{float(x):.1f}")


def _print_summary(console: Console, report: dict, out: Path) -> None:
    natural = report.get("natural_length") or {}
    for name, v in natural.get("variants", {}).items():
        if "speedup" in v:
            console.print(f"natural lengths {name} (batch {natural['batch']}): in-flight "
                          f"{v['in_flight']['frames_per_s']:.0f} frames/s vs static {v['static']['frames_per_s']:.0f}"
                          f" → {v['speedup']:.2f}x")
    if "baseline" not in report:
        console.print(f"wrote {out / 'tts_bench.json'} (natural_length) and {out / 'tts_bench.md'}")
        return
    table = Table(title=f"TTS bench on {report['device']['name']}")
    for col in ("variant", "p50 ms", "p95 ms", "speedup p50", "utt/s", "frames/s", "MB over start", "mel SNR dB"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    b = report["baseline"]
    table.add_row("seed-baseline", f"{b['latency_ms']['p50']:.1f}", f"{b['latency_ms']['p95']:.1f}", "1.0",
                  f"{b['throughput']['utt_per_s']:.2f}", f"{b['throughput']['frames_per_s']:.0f}",
                  f"{b['peak_mem_mb']:.0f}", _db(b['fidelity']['mel_snr_db']))
    for name, r in report["variants"].items():
        if "skipped" in r:
            table.add_row(name, "skipped", "", "", "", "", "", "")
            continue
        table.add_row(name, f"{r['latency_ms']['p50']:.1f}", f"{r['latency_ms']['p95']:.1f}",
                      f"{r['speedup_p50']:.1f}", f"{r['throughput']['utt_per_s']:.2f}",
                      f"{r['throughput']['frames_per_s']:.0f}", f"{r['peak_mem_mb']:.0f}",
                      _db(r['fidelity']['mel_snr_db']))
    console.print(table)
    for key, t in report["targets"].items():
        if t["met"] is None:
            console.print(f"target {key} {t['target']}: {t['missed_by']}")
            continue
        status = "[green]met[/]" if t["met"] else f"[red]missed[/] ({t['missed_by']})"
        console.print(f"target {key} {t['target']}: {t['variant']} = {t['value']:.4g} → {status}")
    console.print(f"wrote {out / 'tts_bench.json'}, {out / 'tts_bench.md'} and plots")
