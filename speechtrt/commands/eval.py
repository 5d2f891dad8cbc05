"""``speechtrt eval``: ASR checkpoints × backends × precisions on an accented manifest, batched, with statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from speechtrt.errors import InputError

DEFAULT_CHECKPOINTS = ("checkpoints/asr-small.pt", "checkpoints/asr-medium.pt", "checkpoints/asr-stream.pt")


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        manifest: Optional[Path] = typer.Option(None, help="JSONL manifest (audio_filepath, text, duration, dialect, "
                                                "speaker). Default: data/asr/test.jsonl, synthesized if missing."),
        checkpoints: str = typer.Option(",".join(DEFAULT_CHECKPOINTS), help="Comma-separated ASR checkpoints."),
        backends: str = typer.Option("torch,ort", help="Comma-separated: torch, ort, trt."),
        precisions: str = typer.Option("fp32,int8", help="Comma-separated: fp32, fp16, int8."),
        decoder: str = typer.Option("lm", help="Primary decoder: lm (CTC beam search with a word n-gram model of "
                                    "the text source's training split), lexicon or greedy (greedy is always reported)."),
        lm_order: int = typer.Option(3, help="n-gram order of the decoder's language model."),
        lm_alpha: float = typer.Option(0.8, help="Language-model weight (used when --tune-on is not given)."),
        lm_beta: float = typer.Option(3.0, help="Word insertion bonus (used when --tune-on is not given)."),
        beam: int = typer.Option(16, help="Beam width of the lm decoder."),
        tune_on: Optional[Path] = typer.Option(None, help="Development manifest (speechtrt data synth --split dev) "
                                               "on which the lm decoder's weights are grid-searched; it also "
                                               "calibrates static INT8. Never the test set."),
        calib_manifest: Optional[Path] = typer.Option(None, help="Manifest whose audio calibrates static INT8 for ORT "
                                                      "(default: --tune-on; without either, INT8 is dynamic)."),
        batch_frames: Optional[int] = typer.Option(None, help="Padded feature frames per batch (length-bucketed); "
                                                   "default 2000 on a CPU, 64000 on a GPU."),
        n_boot: int = typer.Option(1000, help="Bootstrap resamples."),
        threads: int = typer.Option(1, help="CPU threads for torch and ONNX Runtime."),
        out: Path = typer.Option(Path("reports"), help="Report folder (asr_eval.json, asr_eval.md, PNGs)."),
        quick: bool = typer.Option(False, help="Synthesize a small accented set (6 accents x 4 unseen speakers x 3 "
                                   "unseen sentences) and a 30-utterance dev set for INT8 calibration, and evaluate "
                                   "the shipped checkpoints on it."),
        seed_loop: bool = typer.Option(True, help="Also time the seed's per-utterance loop on the same set."),
        trim_classifier: bool = typer.Option(True, "--trim-classifier/--full-classifier",
                                             help="ORT/TRT compute only the 29 classes the decoders read when the dev "
                                             "set shows the model puts < 0.001 nats of log-mass elsewhere."),
        seed: int = typer.Option(0),
    ) -> None:
        """Evaluate ASR models across dialects: WER/CER with intervals, significance, speed, precision impact."""
        from speechtrt.asr.data import SynthConfig, synthesize
        from speechtrt.asr.eval import EvalConfig, evaluate

        console = Console()
        if decoder not in ("lm", "lexicon", "greedy"):
            raise InputError(f"unknown decoder {decoder!r}: choose lm, lexicon or greedy")
        for option, path in (("--tune-on", tune_on), ("--calib-manifest", calib_manifest)):
            if path is not None and not path.is_file():
                raise InputError(f"{option} {path} does not exist: make one with `speechtrt data synth --split dev "
                                 "--exclude <training manifest>`")
        if quick:
            manifest = manifest or Path("data/asr-quick/test.jsonl")
            if not manifest.exists():
                console.print(f"synthesizing a quick accented test set into {manifest.parent} ...")
                synthesize(manifest.parent, SynthConfig(split="test", speakers_per_accent=4, sentences_per_speaker=3,
                                                        seed=seed))
            dev = manifest.parent / "dev.jsonl"
            if calib_manifest is None and tune_on is None:
                if not dev.exists():
                    console.print(f"synthesizing a small calibration set (dev split) into {dev.parent} ...")
                    synthesize(dev.parent, SynthConfig(split="dev", speakers_per_accent=1, sentences_per_speaker=5,
                                                       seed=seed))
                calib_manifest = dev
            n_boot = min(n_boot, 500)
        else:
            manifest = manifest or Path("data/asr/test.jsonl")
            if not manifest.exists():
                console.print(f"{manifest} missing: synthesizing the default accented test set ...")
                synthesize(manifest.parent, SynthConfig(split="test", seed=seed))
        ckpts = _split(checkpoints)
        missing = [c for c in ckpts if not Path(c).is_file()]
        if missing:
            raise InputError(f"checkpoint(s) not found: {', '.join(missing)}; train with `speechtrt train asr` "
                             "or pass --checkpoints")
        cfg = EvalConfig(manifest=str(manifest), checkpoints=ckpts, backends=_split(backends),
                         precisions=_split(precisions), decoder=decoder, lm_order=lm_order, lm_alpha=lm_alpha,
                         lm_beta=lm_beta, beam=beam, tune_on=str(tune_on) if tune_on else None,
                         calib_manifest=str(calib_manifest) if calib_manifest else None,
                         batch_frames=batch_frames, n_boot=n_boot,
                         seed=seed, out_dir=str(out), seed_loop=seed_loop, threads=threads,
                         trim_classifier=trim_classifier)
        report = evaluate(cfg, log=lambda m: console.print(m, highlight=False, markup=False))
        dialects = list(report["per_dialect"])
        table = Table(title="WER % by dialect (95 % speaker-bootstrap interval)")
        for col in ["variant", *dialects, "overall", "CER", "RTFx", "p95 ms"]:
            table.add_column(col, justify="right" if col != "variant" else "left")
        for name, m in report["models"].items():
            table.add_row(name, *[f"{100 * report['per_dialect'][d][name]['wer']:.1f}" for d in dialects],
                          f"{100 * m['wer']:.1f} [{100 * m['ci95'][0]:.1f}, {100 * m['ci95'][1]:.1f}]",
                          f"{100 * m['cer']:.1f}", f"{m['rtfx']:.1f}", f"{m['latency_ms']['p95']:.0f}")
        console.print(table)
        ip = report["input_problems"]
        console.print(f"input problems: {ip['skipped']} skipped, {ip['repaired']} repaired {ip['counts'] or ''}")
        console.print(f"wrote {out / 'asr_eval.json'}, {out / 'asr_eval.md'}"
                      + "".join(f", {out / p}" for p in report.get("plots", [])))
