"""``speechtrt gpu-report``: every GPU measurement in one command with a hard time budget, packed in one archive."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command("gpu-report")
    def gpu_report(
        device: str = typer.Option("cuda", "--device", "-d", help="cuda (the report) | cpu (smoke test, with --quick)."),
        out: Path = typer.Option(Path("reports/gpu"), "--out", "-o", help="Folder for the reports and the archive."),
        inputs: Path = typer.Option(Path("gpu_inputs"), "--inputs", help="Prepared inputs (see --prepare)."),
        budget_s: float = typer.Option(480.0, "--budget-s", min=30.0, help="Hard total budget in seconds."),
        quick: bool = typer.Option(False, "--quick", help="Smoke-test sizes (the CPU test of this script)."),
        prepare: bool = typer.Option(False, "--prepare", help="Only write the inputs (needs espeak-ng; run it "
                                     "before going to the GPU machine)."),
    ) -> None:
        """TTS bench + profile, ASR eval RTFx of asr-medium, streaming capacity: on a GPU, within the budget."""
        from speechtrt.bench.gpu_report import GpuReportConfig, prepare_inputs, run
        from speechtrt.errors import InputError
        from speechtrt.files import check_writable

        console = Console()
        if prepare:
            prepare_inputs(inputs, log=console.print)
            return
        if not device.startswith(("cpu", "cuda")):
            raise InputError(f"--device must be cpu or cuda[:N], got {device!r}")
        check_writable(out, "--out")
        summary = run(GpuReportConfig(device, out, inputs, budget_s, quick), log=console.print)
        for step in summary["steps"]:
            console.print(f"{step['step']}: {step['status']}" + (f" ({step['reason']})" if "reason" in step else ""))
        console.print(f"wrote {out / 'gpu_report.md'} and {out / 'gpu_report.tar.gz'}")
