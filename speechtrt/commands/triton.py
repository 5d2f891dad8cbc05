"""``speechtrt triton export`` (model repository) and ``speechtrt triton serve`` (the bundled tritonserver on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

triton_app = typer.Typer(help="Scale-out on Triton Inference Server: write a model repository, serve it.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(triton_app, name="triton")


@triton_app.command("export")
def export(
    out: Path = typer.Option(Path("model_repository"), "--out", "-o", help="Repository folder to write."),
    models: str = typer.Option("asr-small,asr-stream,tts", "--models", "-m",
                               help="Comma-separated: tts, asr-small, asr-medium, asr-large, asr-stream (or all)."),
    kind: str = typer.Option("cpu", "--kind", help="cpu: Python-backend models over ONNX Runtime (runs anywhere); "
                                                  "gpu: TensorRT plans for --gpu + the Python-backend TTS loop."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="Architecture of a gpu repository (sm75 ... sm120)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 graphs/plans."),
    artifacts: Path = typer.Option(Path("out/triton-artifacts"), "--artifacts",
                                   help="Where graphs and plans are made and reused (one folder per weights)."),
    checkpoint: list[Path] = typer.Option([], "--checkpoint", "-c",
                                          help="Weights to use (repeatable; default: checkpoints/asr-*.pt, else seeded)."),
    seed: int = typer.Option(0, help="Initialisation seed of models without a checkpoint."),
    max_batch: int = typer.Option(64, help="Cap on max_batch_size."),
    queue_delay_us: int = typer.Option(2000, "--queue-delay-us", help="Dynamic batching: max_queue_delay_microseconds."),
    sequence_idle_us: int = typer.Option(10_000_000, "--sequence-idle-us",
                                         help="Sequence batcher: max_sequence_idle_microseconds."),
    instances: int = typer.Option(1, help="Instances per model (instance_group count)."),
    threads: int = typer.Option(1, help="CPU kind: ONNX Runtime threads per model instance."),
) -> None:
    """Write a Triton model repository: config.pbtxt generated from the graphs' sidecars (and checked against the
    plans' manifests for --kind gpu), graphs/plans and Python-backend models copied in."""
    from speechtrt.triton.repository import RepositoryConfig, export_repository, parse_models

    console = Console()
    settings = RepositoryConfig(out=out, models=parse_models(models), kind=kind, gpu=gpu, precision=precision,
                                artifacts=artifacts, checkpoints=tuple(checkpoint), seed=seed, max_batch=max_batch,
                                max_queue_delay_us=queue_delay_us, max_sequence_idle_us=sequence_idle_us,
                                instances=instances, threads=threads)
    with console.status("writing the model repository"):
        result = export_repository(settings, log=lambda msg: console.print(f"[dim]{msg}[/]"))
    table = Table(title=f"Triton model repository → {result.out} ({result.kind}{', ' + result.gpu if result.gpu else ''})")
    for col in ("model", "serves", "max batch", "scheduling", "inputs → outputs"):
        table.add_column(col)
    for m in result.models:
        c = m.config
        sched = ("sequence batcher" if "sequence_batching" in c else "dynamic batching" if "dynamic_batching" in c
                 else "decoupled (in-flight loop)" if c.get("model_transaction_policy") else "one request per run")
        kind_ = c.get("platform") or f"{c.get('backend')} backend"
        table.add_row(m.name, f"{m.component or 'tts decode loop'} ({kind_})", str(c["max_batch_size"]), sched,
                      ", ".join(t["name"] for t in c["input"]) + " → " + ", ".join(t["name"] for t in c["output"]))
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"serve it: speechtrt triton serve --repository {result.out}")


@triton_app.command("serve")
def serve(
    repository: Path = typer.Option(Path("model_repository"), "--repository", "-r", help="Model repository folder."),
    host: str = typer.Option("127.0.0.1", help="Address to bind HTTP, gRPC and metrics to (0.0.0.0: every interface)."),
    http_port: int = typer.Option(8000, help="KServe v2 HTTP port (0: pick a free one)."),
    grpc_port: int = typer.Option(8001, help="KServe v2 gRPC port (0: pick a free one)."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (0: pick a free one)."),
    venv: Optional[Path] = typer.Option(None, help="Virtualenv with nvidia-pytriton (default: .venv-triton)."),
    startup_timeout: float = typer.Option(300.0, help="Seconds to wait for every model to load."),
    log_file: Optional[Path] = typer.Option(None, help="Server log (default: tritonserver.log beside the repository)."),
) -> None:
    """Run the tritonserver bundled with nvidia-pytriton on a repository until Ctrl-C (graceful shutdown)."""
    from speechtrt.triton.server import ServerConfig, serve as run_server

    console = Console()
    config = ServerConfig(repository=repository, host=host, http_port=http_port, grpc_port=grpc_port,
                          metrics_port=metrics_port, venv=venv, startup_timeout_s=startup_timeout, log_file=log_file)

    def ready(server) -> None:
        console.print(f"[green]ready[/]: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}"
                      f"  (log {server.log_path}); Ctrl-C stops it")

    console.print(f"starting tritonserver on {repository} (models load in their Python-backend stubs)")
    code = run_server(config, on_ready=ready)
    console.print(f"tritonserver stopped (exit code {code})")
    raise typer.Exit(code)
