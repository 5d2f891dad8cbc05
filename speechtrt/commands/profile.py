"""``speechtrt profile``: top bottlenecks per TTS stage (encoder / decoder step / vocoder) into reports/profile.md."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from speechtrt.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile(
        device: str = typer.Option("cpu", "--device", "-d", help="cpu | cuda"),
        backend: str = typer.Option("", "--backend", "-b",
                                    help="Comma list of ort, torch, trt (default: ort,torch on CPU; torch on CUDA; "
                                         "trt = TensorRT per-layer times of built plans, CUDA only)."),
        steps: int = typer.Option(64, min=1, help="Decoder steps to profile (past grows 0 → 250 frames)."),
        batch: int = typer.Option(1, min=1, help="Batch size of every stage."),
        top: int = typer.Option(8, min=1, help="Operators listed per stage."),
        onnx_dir: Path = typer.Option(Path("out/onnx"), help="ONNX graphs for the ort profile (exported if missing)."),
        engine_dir: Path = typer.Option(Path("engines"), help="Plans for the trt profile (speechtrt build)."),
        precision: str = typer.Option("fp16", help="Which plan precision the trt profile uses: fp32, fp16, int8."),
        out: Path = typer.Option(Path("reports"), "--out", "-o", help="Folder for profile.md / profile.json."),
        threads: int = typer.Option(0, min=0, help="CPU threads (0: library defaults)."),
        quick: bool = typer.Option(False, "--quick", help="Smoke-test size: 4 steps, short seed-growth points."),
    ) -> None:
        """Profile the TTS stages: ONNX Runtime node times (CPU), torch profiler (+NVTX on CUDA), seed growth."""
        from speechtrt.bench.profile import ProfileConfig, run_profile
        from speechtrt.files import check_writable
        from speechtrt.vocab import BACKENDS, GRAPH_PRECISIONS, check_precision, parse_list

        gpu = device.startswith("cuda")
        if not device.startswith(("cpu", "cuda")):
            raise InputError(f"--device must be cpu or cuda[:N], got {device!r}")
        names = parse_list(backend or ("torch" if gpu else "ort,torch"), BACKENDS, "--backend", "backend")
        if "trt" in names and not gpu:
            raise InputError("--backend trt profiles TensorRT plans on a GPU: add --device cuda (on a CPU machine "
                             "use ort and torch)")
        if precision not in GRAPH_PRECISIONS:
            check_precision(precision, "trt")
        check_writable(out, "--out")
        console = Console()
        if quick:
            steps, top = min(steps, 4), min(top, 5)
        cfg = ProfileConfig(device=device, backends=names, decode_steps=steps, batch=batch, top=top,
                            onnx_dir=str(onnx_dir), out_dir=str(out), threads=threads or None,
                            engine_dir=str(engine_dir), precision=precision,
                            growth_points=(1, 16) if quick else (1, 64, 128, 250))
        with console.status("profiling TTS stages"):
            run_profile(cfg, log=console.print)
        console.print(f"wrote {out / 'profile.md'} and {out / 'profile.json'}")
