"""``speechtrt calibrate``: real calibration data, FP16 (AutoCast) and INT8 (Q/DQ) graphs, and a fidelity report."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from speechtrt.errors import InputError


def _components(model: str):
    from speechtrt.export.components import components_for

    return components_for(model)


def _ensure_fp32(comps, onnx_dir: Path, export_missing: bool, checkpoint: str | None, seed: int, progress,
                 own=None) -> list[str]:
    """Export the FP32 graphs that are not in ``onnx_dir`` (or refuse, naming them); returns the exported names."""
    from speechtrt.files import check_writable
    from speechtrt.pipeline import export_component
    from speechtrt.quantize.calib import load_model

    if onnx_dir.exists() and not onnx_dir.is_dir():
        raise InputError(f"--onnx-dir {onnx_dir} is a file, not a folder: pass the folder `speechtrt export` wrote")
    missing = [c for c in comps if not (onnx_dir / f"{c.name}.onnx").is_file()]
    if checkpoint:
        from speechtrt.export.onnx import load_sidecar

        for comp in comps:
            if comp in missing:
                continue
            made_from = load_sidecar(onnx_dir / f"{comp.name}.onnx").get("source", {}).get("checkpoint")
            if made_from != checkpoint:
                raise InputError(f"{onnx_dir / comp.name}.onnx was exported from {made_from or 'the seeded init'}, "
                                 f"not {checkpoint}: re-export it from the checkpoint or use another --onnx-dir")
    if not missing:
        return []
    if not export_missing:
        where = "does not exist" if not onnx_dir.exists() else f"lacks {', '.join(c.name + '.onnx' for c in missing)}"
        raise InputError(f"ONNX folder {onnx_dir} {where}: run `speechtrt export --out {onnx_dir}` first "
                         "or drop --no-export")
    check_writable(onnx_dir, "--onnx-dir")
    task = progress.add_task("exporting missing FP32 graphs", total=len(missing))
    models: dict[str, object] = {}
    for comp in missing:
        if own is not None:
            export_component(comp, own.model, onnx_dir, source=own.source)
            progress.advance(task)
            continue
        if comp.model not in models:
            models[comp.model] = load_model(comp.model, checkpoint, seed)
        export_component(comp, models[comp.model], onnx_dir, source={"checkpoint": checkpoint} if checkpoint else None)
        progress.advance(task)
    return [c.name for c in missing]


def register(app: typer.Typer) -> None:
    @app.command("calibrate")
    def calibrate(
        model: str = typer.Option("all", "--model", "-m", help="tts | asr-small | asr-medium | asr-large | asr-stream | all, or a model of your own: a checkpoint file or module:factory."),
        onnx_dir: Path = typer.Option(None, "--onnx-dir", help="Folder with the FP32 graphs; reduced-precision graphs go beside them (default out/onnx; out/onnx/<name> for a model of your own)."),
        calib_dir: Path = typer.Option(Path("calib_data"), "--calib-dir", help="Where calibration and held-out sets (.npz) and manifest.json go (a model of your own: <calib-dir>/<name>)."),
        method: str = typer.Option("entropy", "--method", help="INT8 calibration method: entropy | max."),
        precision: str = typer.Option("fp16,int8", "--precision", help="Comma-separated: fp16, int8."),
        samples: int = typer.Option(48, "--samples", min=1, max=512, help="Calibration samples per component."),
        heldout: int = typer.Option(16, "--heldout", min=1, max=256, help="Held-out samples per component (fidelity)."),
        reports: Path = typer.Option(Path("reports"), "--reports", help="Folder for fidelity.json and fidelity.md."),
        int8_high_precision: str = typer.Option("fp16", "--int8-high-precision", help="Precision of what INT8 leaves unquantized: fp16 | fp32."),
        recapture: bool = typer.Option(False, "--recapture", help="Capture calibration data again even when present."),
        export: bool = typer.Option(True, "--export/--no-export", help="Export missing FP32 graphs first."),
        fidelity: bool = typer.Option(True, "--fidelity/--no-fidelity", help="Measure fidelity against FP32."),
        checkpoint: str = typer.Option(None, "--checkpoint", help="Checkpoint of the model (single --model only); default: the seeded init."),
        seed: int = typer.Option(0, "--seed", help="Seed of the default model init and of the data sampling."),
    ) -> None:
        """Capture real calibration data, write FP16 and INT8 graphs with ModelOpt, and report their fidelity."""
        from speechtrt.models.loading import check_model_spec

        if model != "all":
            check_model_spec(model)
        from speechtrt.quantize.precision import HIGH_PRECISIONS, check_method, parse_precisions

        console = Console() if sys.stdout.isatty() else Console(width=150)
        check_method(method)
        precisions = parse_precisions(precision)
        if int8_high_precision not in HIGH_PRECISIONS:
            raise InputError(f"unknown --int8-high-precision {int8_high_precision!r}: choose fp16 or fp32")
        from speechtrt.vocab import MODEL_NAMES

        own = None
        if model not in (*MODEL_NAMES, "all"):
            from speechtrt.export.components import components_of
            from speechtrt.models.loading import resolve_own

            own = resolve_own(model, checkpoint, seed=seed)
            comps = components_of(own.model, own.name)
            onnx_dir = onnx_dir or own.onnx_dir()
            calib_dir = own.calib_dir(calib_dir)
        else:
            comps = _components(model)
            onnx_dir = onnx_dir or Path("out/onnx")
        if checkpoint and model == "all":
            raise InputError("--checkpoint belongs to one model: pass --model too (e.g. --model asr-small)")

        from speechtrt.quantize import calib as C
        from speechtrt.quantize import fidelity as F
        from speechtrt.quantize.precision import CALIB_BATCH, make_fp16, make_int8
        from speechtrt.runtime.open import graph_opener

        rows: dict[tuple[str, str], dict] = {}
        timings: dict[str, float] = {}
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            t0 = time.perf_counter()
            exported = _ensure_fp32(comps, onnx_dir, export, checkpoint, seed, progress, own)
            timings["export"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            def captured(name: str) -> bool:
                files = [calib_dir / f"{name}.npz", calib_dir / "heldout" / f"{name}.npz"]
                if name.startswith("asr_"):  # whole held-out utterances for transcripts
                    files.append(calib_dir / "heldout" / "asr_utterances.npz")
                return all(f.is_file() for f in files)

            need = [c for c in comps if recapture or not captured(c.name)]
            if need:
                task = progress.add_task("capturing calibration data", total=None)

                def tick(desc: str, advance: int = 0) -> None:
                    progress.update(task, description=f"capturing: {desc}", advance=advance)

                checkpoints = {comps[0].model: checkpoint} if checkpoint else {}
                C.capture(need, calib_dir, C.CaptureConfig(samples=samples, heldout=heldout, seed=seed),
                          checkpoints=checkpoints, progress=tick, model=own.model if own else None,
                          stop_token=bool(own and own.stop_token))
                progress.update(task, total=1, completed=1, description="calibration data captured")
            timings["capture"] = time.perf_counter() - t0

            task = progress.add_task("quantizing", total=len(comps) * len(precisions))
            t0 = time.perf_counter()
            for comp in comps:
                calib_path = calib_dir / f"{comp.name}.npz"
                feeds = C.minibatches(comp, C.load_set(calib_dir, comp.name), CALIB_BATCH)
                for prec in precisions:
                    how = f" ({method} calibration{', minutes per graph on a CPU' if method == 'entropy' else ''})"
                    progress.update(task, description=f"{prec}{how if prec == 'int8' else ''}: {comp.name}")
                    if prec == "fp16":
                        res = make_fp16(comp, onnx_dir, feeds, calib_path)
                    else:
                        res = make_int8(comp, onnx_dir, feeds, method, calib_path, high_precision=int8_high_precision)
                    counts = res.sidecar["quantization"]["counts"]
                    rows[(comp.name, prec)] = {"build_s": res.seconds, "qdq": counts["quantize_linear"],
                                               "casts": counts["casts"], "path": res.onnx_path}
                    progress.advance(task)
            timings["quantize"] = time.perf_counter() - t0

            report = None
            if fidelity:
                t0 = time.perf_counter()
                names = [c.name for c in comps]
                e2e = all(n in names for n in ("tts_encoder", "tts_decoder_step", "tts_vocoder"))
                task = progress.add_task("fidelity", total=len(comps) * len(precisions) + (len(precisions) if e2e else 0))
                report = F.FidelityReport(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), str(onnx_dir), str(calib_dir))
                open_graph = graph_opener(onnx_dir)
                for name in names:
                    for prec in precisions:
                        progress.update(task, description=f"fidelity: {name} {prec}")
                        row = F.evaluate_component(name, prec, calib_dir, open_graph,
                                                   comp=next(c for c in comps if c.name == name))
                        report.rows.append(row)
                        rows[(name, prec)].update(row)
                        progress.advance(task)
                if e2e:
                    for prec in precisions:
                        progress.update(task, description=f"fidelity: TTS end to end {prec}")
                        row = F.evaluate_tts_e2e(prec, calib_dir, open_graph,
                                                 comps={c.name: c for c in comps})
                        report.rows.append(row)
                        rows[("tts_end_to_end", prec)] = row
                        progress.advance(task)
                timings["fidelity"] = time.perf_counter() - t0
                json_path, md_path = F.write_report(report, reports)

        table = Table(title=f"speechtrt calibrate ({method}, INT8 rest in {int8_high_precision})")
        for col in ("component", "precision", "Q/DQ", "casts", "seconds", "backend", "SNR dB", "rel L2", "top-1", "CER",
                    "ok"):
            table.add_column(col, justify="left" if col in ("component", "precision", "backend", "ok") else "right",
                             no_wrap=True)
        for (name, prec), r in rows.items():
            snr = r.get("mel_snr_db", r.get("min_snr_db"))
            table.add_row(
                name, prec, str(r.get("qdq", "")), str(r.get("casts", "")), F._fmt(r.get("build_s"), ".1f"),
                r.get("backend", ""), F._fmt(snr, ".1f"), F._fmt(r.get("max_rel_l2", r.get("mel_rel_l2")), ".2e"),
                F._fmt(r.get("top1_agreement"), ".3f"), F._fmt(r.get("cer_vs_fp32"), ".3f"),
                "" if "ok" not in r else ("[green]yes[/]" if r["ok"] else "[red]NO[/]"),
            )
        console.print(table)
        console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
                      + (f"; exported {', '.join(exported)}" if exported else ""))
        if report is not None:
            console.print(f"fidelity report: {json_path} and {md_path}")
            if not report.ok:
                failed = [f"{r['component']} {r['precision']}" for r in report.rows if not r["ok"]]
                console.print(f"[bold red]fidelity bounds not met:[/] {', '.join(failed)}")
                raise typer.Exit(1)
