"""``speechtrt eval``: ASR checkpoints × backends × precisions on an accented manifest, batched, with statistics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from speechtrt.errors import InputError

DEFAULT_CHECKPOINTS = ("checkpoints/asr-small.pt", "checkpoints/asr-medium.pt", "checkpoints/asr-stream.pt")
DEFAULT_MANIFEST = Path("data/asr/test.jsonl")
QUICK_MANIFEST = Path("data/asr-quick/test.jsonl")
QUICK_MAX_BOOT = 500


def _split(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def _check_files(manifest: Optional[Path], quick: bool, tune_on: Optional[Path], calib_manifest: Optional[Path],
                 checkpoints: tuple[str, ...], trained_on: Optional[Path] = None) -> None:
    """Every input file named by a flag exists (a default or --quick manifest is synthesized when missing)."""
    if manifest is not None and not quick and not manifest.is_file():
        raise InputError(f"--manifest {manifest} does not exist: make one with `speechtrt data synth --split test` "
                         "(or use --quick)")
    if trained_on is not None and not trained_on.is_file():
        raise InputError(f"--trained-on {trained_on} does not exist: give the manifest the checkpoints were trained on")
    for option, path in (("--tune-on", tune_on), ("--calib-manifest", calib_manifest)):
        if path is not None and not path.is_file():
            raise InputError(f"{option} {path} does not exist: make one with `speechtrt data synth --split dev "
                             "--exclude <training manifest>`")
    missing = [c for c in checkpoints if not Path(c).is_file()]
    if missing:
        raise InputError(f"--checkpoints: not found: {', '.join(missing)}; train with `speechtrt train asr` or pass "
                         "--checkpoints")


def _synthesize_sets(cfg, quick: bool, seed: int, console: Console):
    """Synthesize the test set (and for --quick a small dev set that calibrates INT8) when missing; the config
    that evaluates them."""
    from speechtrt.asr.data import SynthConfig, synthesize

    manifest = Path(cfg.manifest)
    if quick:
        if not manifest.exists():
            console.print(f"synthesizing a quick accented test set into {manifest.parent} ...")
            synthesize(manifest.parent, SynthConfig(split="test", speakers_per_accent=4, sentences_per_speaker=3,
                                                    seed=seed))
        dev = manifest.parent / "dev.jsonl"
        if cfg.calib_manifest is None and cfg.tune_on is None:
            if not dev.exists():
                console.print(f"synthesizing a small calibration set (dev split) into {dev.parent} ...")
                synthesize(dev.parent, SynthConfig(split="dev", speakers_per_accent=1, sentences_per_speaker=5,
                                                   seed=seed))
            cfg = replace(cfg, calib_manifest=str(dev))
        return replace(cfg, n_boot=min(cfg.n_boot, QUICK_MAX_BOOT))
    if not manifest.exists():
        console.print(f"{manifest} missing: synthesizing the default accented test set ...")
        synthesize(manifest.parent, SynthConfig(split="test", seed=seed))
    return cfg


def _print_summary(console: Console, report: dict, out: Path) -> None:
    def interval(m: dict) -> str:
        ci = m.get("ci95")
        return "n/a (1 speaker)" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    dialects = list(report["per_dialect"])
    table = Table(title="WER % by dialect (95 % speaker-bootstrap interval)")
    for col in ["variant", *dialects, "overall", "CER", "RTFx", "p95 ms"]:
        table.add_column(col, justify="right" if col != "variant" else "left")
    for name, m in report["models"].items():
        table.add_row(name, *[f"{100 * report['per_dialect'][d][name]['wer']:.1f}" for d in dialects],
                      f"{100 * m['wer']:.1f} {interval(m)}", f"{100 * m['cer']:.1f}", f"{m['rtfx']:.1f}",
                      f"{m['latency_ms']['p95']:.0f}")
    console.print(table)
    for s in report["skipped_variants"]:
        console.print(f"not run: {s['variant']} ({s['reason']})", highlight=False, markup=False)
    ip = report["input_problems"]
    console.print(f"input problems: {ip['skipped']} skipped, {ip['repaired']} repaired {ip['counts'] or ''}")
    console.print(f"wrote {out / 'asr_eval.json'}, {out / 'asr_eval.md'}"
                  + "".join(f", {out / p}" for p in report.get("plots", [])))


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
                                               "calibrates static INT8 and FP16. Never the test set."),
        calib_manifest: Optional[Path] = typer.Option(None, help="Manifest whose audio calibrates static INT8 and FP16 "
                                                      "(default: --tune-on; without either, ORT INT8 is dynamic)."),
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
        held_out: str = typer.Option("", help="Comma-separated synthesizers and <synthesizer>:<voice> no model "
                                     "heard in training (e.g. flite,espeak-ng:en-029,festival:ked_diphone); the rest "
                                     "of the test set counts as in training. Default: each checkpoint's sidecar."),
        trained_on: Optional[Path] = typer.Option(None, help="Training manifest of the checkpoints: its synthesizers "
                                                  "and voices count as in training (default: each sidecar)."),
        seed: int = typer.Option(0),
    ) -> None:
        """Evaluate ASR models across dialects: WER/CER with intervals, significance, speed, precision impact."""
        from speechtrt.asr.eval.config import EvalConfig, check_config
        from speechtrt.files import check_writable
        from speechtrt.vocab import BACKENDS, PRECISIONS, parse_list

        console = Console()
        default = QUICK_MANIFEST if quick else DEFAULT_MANIFEST
        cfg = check_config(EvalConfig(
            manifest=str(manifest or default), checkpoints=_split(checkpoints),
            backends=parse_list(backends, BACKENDS, "--backends", "backend"),
            precisions=parse_list(precisions.lower(), PRECISIONS, "--precisions", "precision"), decoder=decoder,
            lm_order=lm_order, lm_alpha=lm_alpha, lm_beta=lm_beta, beam=beam,
            tune_on=str(tune_on) if tune_on else None, calib_manifest=str(calib_manifest) if calib_manifest else None,
            batch_frames=batch_frames, n_boot=n_boot, seed=seed, out_dir=str(out), seed_loop=seed_loop,
            threads=threads, trim_classifier=trim_classifier, held_out=_split(held_out),
            trained_on=str(trained_on) if trained_on else None))
        _check_files(manifest, quick, tune_on, calib_manifest, cfg.checkpoints, trained_on)
        from speechtrt.asr.eval.evaluation import check_checkpoints, evaluate

        check_checkpoints(cfg.checkpoints)
        check_writable(out, "--out")
        cfg = _synthesize_sets(cfg, quick, seed, console)
        report = evaluate(cfg, log=lambda m: console.print(m, highlight=False, markup=False))
        _print_summary(console, report, out)

