"""``speechtrt build``: compile exported graphs into TensorRT plans for one GPU architecture.

    speechtrt build --gpu sm86 --fp32 --fp16 --int8 --model asr-small --shape batch=1:8:32

Every requested graph is checked to exist before anything is compiled, so a missing FP16/INT8 graph is reported at
once with the command that creates it. Plans land in ``engines/<gpu>/<model>/<component>.<precision>.plan`` next to
``manifest.json``; the closing table shows each plan's size, build time and the precision evidence it was built from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from speechtrt.engines.arch import GPU_NAMES, HARDWARE_COMPAT_LEVELS, parse_gpu
from speechtrt.errors import BuildError, InputError, SpeechTRTError
from speechtrt.vocab import GRAPH_PRECISIONS, MODEL_NAMES

if TYPE_CHECKING:
    from speechtrt.engines.builder import EngineBuildResult


def _components(model: str):
    """The registry components of a reference model (or ``all``); a model of your own's, shaped by its config."""
    from speechtrt.export.components import components_for, components_of

    if model in (*MODEL_NAMES, "all"):
        return components_for(model)
    from speechtrt.models.loading import resolve_model

    ref = resolve_model(model)
    return components_of(ref.model, ref.name)


def _selected_precisions(fp32: bool, fp16: bool, int8: bool) -> list[str]:
    chosen = [p for p, on in zip(GRAPH_PRECISIONS, (fp32, fp16, int8)) if on]
    return chosen or ["fp32"]


def _check_overrides(overrides, comps) -> None:
    names = [o.name for o in overrides]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"--shape names {', '.join(dupes)} more than once: give each dim one range")
    known = sorted({d for c in comps for d in c.dims})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(
            f"--shape {', '.join(unknown)}: no selected graph has such a dim; the dims are {', '.join(known)}"
        )


def _summary_table(results: list[EngineBuildResult], title: str) -> Table:
    table = Table(title=title)
    for col in ("component", "precision"):
        table.add_column(col)
    for col in ("plan MB", "build s", "INT8", "HALF", "FLOAT", "Q/DQ layers"):
        table.add_column(col, justify="right")
    for r in results:
        s = r.summary
        table.add_row(r.component, r.precision, f"{r.plan_bytes / 2**20:.1f}", f"{r.seconds:.2f}",
                      str(s.count("INT8")), str(s.count("HALF")), str(s.count("FLOAT")), str(s.qdq_layers))
    return table


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        gpu: str = typer.Option("sm86", "--gpu", help=f"Target GPU architecture: {'|'.join(GPU_NAMES)}."),
        fp32: bool = typer.Option(False, "--fp32", help="Build FP32 engines from <component>.onnx."),
        fp16: bool = typer.Option(False, "--fp16", help="Build FP16 engines from <component>.fp16.onnx."),
        int8: bool = typer.Option(False, "--int8", help="Build INT8 engines from <component>.int8.onnx (Q/DQ)."),
        model: str = typer.Option(
            "all", "--model", help="tts|asr-small|asr-medium|asr-large|asr-stream|all, or a model of your own (a "
                                   "checkpoint file or module:factory): its plans go to <engine-dir>/<gpu>/<name>/."
        ),
        onnx_dir: Path = typer.Option(None, "--onnx-dir", help="Folder with the exported graphs (default out/onnx; "
                                      "out/onnx/<name> for a model of your own)."),
        engines_dir: Path = typer.Option(Path("engines"), "--engine-dir", "--engines-dir",
                                         help="Root folder for plans (the folder bench/profile/stream read)."),
        shape: list[str] = typer.Option(
            [], "--shape", help="Override a dim's profile range, NAME=MIN:OPT:MAX (repeatable), e.g. batch=1:8:32."
        ),
        workspace_mb: int | None = typer.Option(None, "--workspace-mb", min=1, help="Builder workspace limit in MiB."),
        hardware_compat: str = typer.Option(
            "none", "--hardware-compat",
            help=f"TensorRT hardware-compatibility level: {'|'.join(HARDWARE_COMPAT_LEVELS)}.",
        ),
    ) -> None:
        """Compile exported ONNX graphs into TensorRT engines for one GPU architecture (default: FP32 only)."""
        from speechtrt.models.loading import check_model_spec

        if model != "all":
            check_model_spec(model)
        from speechtrt.engines.builder import (
            BuildSettings, EngineBuilder, missing_graph_hint, onnx_path_for, parse_shape_override,
        )

        console = Console()
        arch = parse_gpu(gpu)
        precisions = _selected_precisions(fp32, fp16, int8)
        comps = _components(model)
        if onnx_dir is None:
            onnx_dir = Path("out/onnx") if model in (*MODEL_NAMES, "all") else Path("out/onnx") / comps[0].model
        overrides = tuple(parse_shape_override(s) for s in shape)
        _check_overrides(overrides, comps)

        settings = BuildSettings(arch, engines_dir, workspace_mb, hardware_compat, overrides)
        builder = EngineBuilder(settings)  # checks first that this TensorRT can target the architecture
        from speechtrt.files import check_writable

        check_writable(engines_dir, "--engine-dir")  # after the target check: a refused target leaves no folder

        jobs = [(c, p) for c in comps for p in precisions]
        missing = [missing_graph_hint(c.model, p, onnx_path_for(onnx_dir, c.name, p))
                   for c, p in jobs if not onnx_path_for(onnx_dir, c.name, p).is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more missing graphs)" if len(missing) > 1 else ""
            raise BuildError(missing[0] + more)
        where = ("ahead of time, no GPU here" if builder.device is None
                 else f"on {builder.device.name} ({builder.device.sm})")
        console.print(f"Building {len(jobs)} engine(s) for {arch.describe()} with {builder.flavour.label}, {where}")

        results: list[EngineBuildResult] = []
        columns = (TextColumn("{task.fields[engine]:<28}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), TextColumn("{task.description}"))
        try:
            with Progress(*columns, console=console) as bar:
                tasks = [bar.add_task("waiting", total=1.0, engine=f"{c.name} {p}") for c, p in jobs]
                for (comp, precision), task in zip(jobs, tasks):
                    def report(what: str, fraction: float, task=task) -> None:
                        bar.update(task, completed=fraction, description=what)

                    results.append(builder.build(comp, precision, onnx_dir, progress=report))
        except SpeechTRTError:
            if results:
                console.print(_summary_table(results, "Engines built before the error"))
            raise

        console.print(_summary_table(results, f"Engines for {arch.sm} ({builder.flavour.label})"))
        for r in results:
            for warning in r.warnings:
                console.print(f"[yellow]warning:[/] {r.component} {r.precision}: {warning}", highlight=False)
        folders = sorted({str(r.manifest.parent) for r in results})
        console.print(f"Plans and manifest.json in: {', '.join(folders)}")
        if builder.device is None:
            console.print("Precision counts come from the strongly typed network each plan was compiled from "
                          "(no GPU here to deserialize and inspect the engines).")
