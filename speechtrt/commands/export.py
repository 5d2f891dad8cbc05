"""``speechtrt export``: PyTorch reference models → one ONNX graph per component, with parity against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from speechtrt.errors import ExportError, InputError


def _shape(spec) -> str:
    return "[" + ",".join(str(d) for d in spec.shape) + "]"


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        model: str = typer.Option("all", "--model", "-m",
                                  help="tts | asr-small | asr-medium | asr-large | asr-stream | all, or a model of "
                                       "your own: a checkpoint file, or module:factory (see README, Bring your own "
                                       "model)."),
        out: Path = typer.Option(None, "--out", "-o", help="Folder for <component>.onnx + .json (default out/onnx; "
                                 "out/onnx/<name> for a model of your own)."),
        checkpoint: list[Path] = typer.Option(
            [], "--checkpoint", "-c",
            help="Weights to export instead of the seeded initialisation (repeatable; matched to --model by kind)."),
        seed: int = typer.Option(0, help="Initialisation seed when no checkpoint is given."),
        check: bool = typer.Option(True, "--check/--no-check", help="Compare every graph with PyTorch in ONNX Runtime."),
    ) -> None:
        """Export each component to ONNX (named I/O, dynamic axes, sidecar JSON) and print the parity table."""
        from speechtrt.models.loading import check_model_spec

        if model != "all":
            check_model_spec(model)
        import torch

        from speechtrt.export import components_for
        from speechtrt.export.components import components_of
        from speechtrt.files import check_writable
        from speechtrt.models import build_model, load_checkpoint
        from speechtrt.models.loading import resolve_own
        from speechtrt.vocab import MODEL_NAMES

        console = Console()
        if model not in (*MODEL_NAMES, "all"):
            ref = resolve_own(model, checkpoint, seed=seed)
            comps = components_of(ref.model, ref.name)
            out = out or ref.onnx_dir()
            check_writable(out, "--out")
            results, failures = _export_all(console, comps, lambda comp: (ref.model, ref.source), out, check, seed)
            _print_table(console, results, out, check, failures)
            return
        out = out or Path("out/onnx")
        comps = components_for(model)
        check_writable(out, "--out")
        loaded = {}
        for path in checkpoint:
            m, meta = load_checkpoint(path)
            name = "tts" if m.config.__class__.__name__ == "TTSConfig" else f"asr-{m.config.size}"
            loaded[name] = (m, {"checkpoint": str(path), **meta})
        unused = set(loaded) - {c.model for c in comps}
        if unused:
            raise InputError(f"checkpoint(s) for {', '.join(sorted(unused))} given, but --model {model} does not "
                             "export them; drop the checkpoint or pick that model")

        torch.manual_seed(seed)
        models: dict[str, tuple] = {}

        def model_of(comp):
            if comp.model not in models:
                models[comp.model] = loaded.get(comp.model) or (build_model(comp.model, seed), {"seed": seed})
            return models[comp.model]

        results, failures = _export_all(console, comps, model_of, out, check, seed)
        _print_table(console, results, out, check, failures)


def _export_all(console, comps, model_of, out: Path, check: bool, seed: int) -> tuple[list, list[str]]:
    """Export every component with the model ``model_of(comp)`` gives as ``(module, source)``, under a progress
    bar; returns (results, failure messages)."""
    from speechtrt.pipeline import export_component

    results, failures = [], []
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("exporting", total=len(comps))
        for comp in comps:
            progress.update(task, description=f"exporting {comp.name}")
            m, source = model_of(comp)
            try:
                results.append(export_component(comp, m, out, check=check, seed=seed, source=source))
            except ExportError as exc:
                failures.append(str(exc))
            progress.advance(task)
    return results, failures


def _print_table(console, results, out: Path, check: bool, failures: list[str]) -> None:
    table = Table(title=f"ONNX export → {out}", show_lines=False)
    table.add_column("component", style="bold")
    table.add_column("inputs")
    table.add_column("outputs")
    table.add_column("MB", justify="right")
    table.add_column("export s", justify="right")
    table.add_column("parity (rel. L2)", justify="right")
    for r in results:
        c = r.component
        parity = "not checked" if r.parity is None else (
            f"[{'green' if r.parity.ok else 'red'}]{r.parity.worst:.1e}[/]")
        table.add_row(
            c.name,
            "\n".join(f"{s.name} {_shape(s)}" for s in c.inputs),
            "\n".join(f"{s.name} {_shape(s)}" for s in c.outputs),
            f"{r.onnx_path.stat().st_size / 1e6:.1f}", f"{r.seconds:.1f}", parity,
        )
    console.print(table)
    if check:
        console.print("parity: ONNX Runtime (CPU) vs PyTorch FP32 on fresh random inputs at the min, opt and an "
                      "odd shape of each graph; tolerance 1e-4")
    if failures:
        raise ExportError("; ".join(failures))
