"""``speechtrt train asr``: CTC training of a reference ASR size on a manifest, with a JSON sidecar."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from speechtrt.errors import InputError
from speechtrt.vocab import AUGMENTATIONS


def register(app: typer.Typer) -> None:
    train_app = typer.Typer(help="Train reference models.", no_args_is_help=True)
    app.add_typer(train_app, name="train")

    @train_app.command("asr")
    def train_asr(
        size: str = typer.Option("small", help="small | medium | large | stream"),
        train_manifest: Path = typer.Option(Path("data/asr/train.jsonl"), help="Training manifest (JSONL)."),
        test_manifest: Optional[Path] = typer.Option(None, help="Held-out manifest scored after training "
                                                     "(never used for training or model selection)."),
        dev_manifest: Optional[Path] = typer.Option(None, help="Development manifest: its clean CTC loss is logged "
                                                    "every --dev-every steps (sidecar `dev_loss`) and it is scored "
                                                    "after training (sidecar `dev`): what checkpoints are chosen by."),
        dev_every: int = typer.Option(200, min=1, help="Steps between development-loss measurements."),
        out: Optional[Path] = typer.Option(None, help="Checkpoint path (default checkpoints/asr-<size>.pt)."),
        minutes: float = typer.Option(30.0, help="Wall-clock training budget (> 0); the LR schedule follows it."),
        batch_frames: int = typer.Option(3000, min=16, help="Padded feature frames per batch."),
        lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, > 0)."),
        augment: bool = typer.Option(True, help="Waveform augmentation (--augmentations) and SpecAugment."),
        augmentations: str = typer.Option(",".join(AUGMENTATIONS), help="Comma-separated waveform augmentations: "
                                          + ", ".join(AUGMENTATIONS) + " (or none)."),
        threads: int = typer.Option(1, min=1, help="torch CPU threads."),
        seed: int = typer.Option(0),
        init_from: Optional[Path] = typer.Option(None, help="Continue from this checkpoint's weights (warm start)."),
        frontend_from: Optional[Path] = typer.Option(None, help="Start the convolution front end from this "
                                                     "checkpoint (any offline size); the rest starts fresh."),
    ) -> None:
        """Train an ASR size with CTC; write the checkpoint (FP16 weights) and <checkpoint>.json."""
        from speechtrt.asr.augment import parse_augmentations
        from speechtrt.asr.train import TrainConfig, train
        from speechtrt.config import asr_config
        from speechtrt.errors import InputError
        from speechtrt.files import check_writable_file

        console = Console()
        asr_config(size)  # unknown size: one line naming the choices
        kinds = parse_augmentations(augmentations, "--augmentations")
        if minutes <= 0 or lr <= 0:
            raise InputError(f"--minutes {minutes} and --lr {lr} must both be > 0")
        for flag, path in (("--train-manifest", train_manifest), ("--test-manifest", test_manifest),
                           ("--dev-manifest", dev_manifest),
                           ("--init-from", init_from), ("--frontend-from", frontend_from)):
            if path is not None and not path.is_file():
                raise InputError(f"{flag} {path}: no such file")
        out = out or Path(f"checkpoints/asr-{size}.pt")
        check_writable_file(out, "--out")
        cfg = TrainConfig(size=size, train_manifest=str(train_manifest), out=str(out), minutes=minutes,
                          batch_frames=batch_frames, peak_lr=lr, augment=augment, augmentations=kinds, seed=seed,
                          threads=threads, dev_manifest=str(dev_manifest) if dev_manifest else None,
                          dev_every=dev_every, init_from=str(init_from) if init_from else None,
                          frontend_from=str(frontend_from) if frontend_from else None)
        started = time.time()
        summary = train(cfg, log=lambda msg: console.print(msg, highlight=False))
        trained_on = summary.pop("composition")
        sidecar = {
            "command": "speechtrt " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "checkpoint": str(out), "size": size, "seed": seed,
            "weights": "fp16 (computed in fp32 after loading)",
            "data": {"train_manifest": str(train_manifest),
                     "test_manifest": str(test_manifest) if test_manifest else None,
                     "dev_manifest": str(dev_manifest) if dev_manifest else None, "composition": trained_on},
            "started_unix": round(started, 1), "host": platform.node(), "python": platform.python_version(),
            **summary,
        }
        for key, manifest in (("dev", dev_manifest), ("test", test_manifest)):
            if manifest:
                from speechtrt.asr.eval import quick_score

                sidecar[key] = quick_score(out, manifest)
                console.print(f"{key}: WER {sidecar[key]['wer']:.3f}  CER {sidecar[key]['cer']:.3f} "
                              f"(greedy {sidecar[key]['greedy_wer']:.3f})")
        side = out.with_suffix(".json")
        side.write_text(json.dumps(sidecar, indent=2) + "\n")
        console.print(f"wrote {side}")

    @train_app.command("tts")
    def train_tts(
        data: Path = typer.Option(Path("data/voice"), help="Prepared voice data (made here first when missing)."),
        out: Path = typer.Option(Path("checkpoints/voice-en.pt"), help="Best checkpoint (by development "
                                 "free-running CER); <out>.csv logs every evaluation, <out>.last.pt the latest "
                                 "state."),
        minutes: float = typer.Option(60.0, help="Training budget in CPU minutes (evaluations not counted); the LR schedule "
                                      "follows it."),
        seed: int = typer.Option(0),
        init_from: Optional[Path] = typer.Option(None, help="Resume from a voice checkpoint or a <out>.last.pt state."),
        batch_frames: int = typer.Option(6000, help="Padded mel frames per batch."),
        lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW)."),
        warmup_steps: int = typer.Option(300),
        reduction: Optional[int] = typer.Option(None, help="Mel frames per decoder step (new models: 4). With "
                                                "--init-from, another value than the checkpoint's regroups it: every "
                                                "weight is kept, the frame projection is tiled, the optimizer "
                                                "restarts."),
        prenet_dim: int = typer.Option(128, help="Prenet width (new models only)."),
        feedback: Optional[bool] = typer.Option(None, "--feedback/--no-feedback", help="Whether the decoder reads "
                                                "its previous frames (default: the checkpoint's; new models: yes)."),
        durations_from: Optional[str] = typer.Option(None, help="Train an aligned voice on phoneme durations: "
                                                     "`espeak` (espeak-ng's own timing of the data it spoke) or an "
                                                     "attention voice's checkpoint (read off its cross-attention); "
                                                     "cached beside the data. An attention voice given as "
                                                     "--init-from is made aligned. Pair with --no-feedback."),
        dropout: Optional[float] = typer.Option(None, help="Dropout of the encoder, decoder and conv layers "
                                                "(default: the checkpoint's; new models: 0.1); the prenet's stays."),
        aligned_sigma: float = typer.Option(1.0, help="Aligned voice: width in decoder steps of the attention "
                                            "prior around each phoneme."),
        ss_rate: float = typer.Option(0.5, help="Scheduled sampling: final share of decoder inputs taken from the "
                                      "model's own predictions."),
        ss_passes: int = typer.Option(2, help="Passes per step (1 = teacher forcing; 3 = predictions of predictions)."),
        ss_start: float = typer.Option(10.0, help="Minutes of this sitting before sampling starts."),
        ss_ramp: float = typer.Option(20.0, help="Minutes over which the sampling rate rises."),
        input_noise: float = typer.Option(0.0, help="Gaussian noise (std, normalised log-mel) on true inputs."),
        guided_weight: float = typer.Option(2.0, help="Weight of the guided-attention loss."),
        eval_every: float = typer.Option(12.0, help="Minutes of training between development evaluations."),
        monitor: int = typer.Option(30, help="Development sentences decoded free-running at each evaluation."),
        threads: int = typer.Option(1, help="torch CPU threads."),
        train_sentences: int = typer.Option(6000, help="Data preparation: training sentences."),
        dev_sentences: int = typer.Option(200, help="Data preparation: development sentences."),
        data_seed: int = typer.Option(0, help="Data preparation: sentence shuffle seed."),
        voice: str = typer.Option("en-us", help="Data preparation: espeak-ng voice."),
    ) -> None:
        """Train the reference voice on espeak-ng speech; write the best checkpoint (FP16) and <out>.json."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from speechtrt.tts.data import VoiceDataConfig, prepare_voice_data
        from speechtrt.tts.train import VoiceTrainConfig, train_voice

        console = Console()
        cfg = VoiceTrainConfig(
            data=str(data), out=str(out), minutes=minutes, seed=seed, threads=threads,
            init_from=str(init_from) if init_from else None, batch_frames=batch_frames, peak_lr=lr,
            warmup_steps=warmup_steps, reduction=reduction, prenet_dim=prenet_dim, feedback=feedback, ss_rate=ss_rate,
            ss_passes=ss_passes, ss_start=ss_start, ss_ramp=ss_ramp, input_noise=input_noise,
            guided_weight=guided_weight, eval_every=eval_every, monitor=monitor,
            durations_from=durations_from, aligned_sigma=aligned_sigma, dropout=dropout,
        )
        cfg.check()
        if not (data / "train.pt").is_file():
            if train_sentences < 1 or dev_sentences < monitor:
                raise InputError(f"--train-sentences {train_sentences} / --dev-sentences {dev_sentences}: need at "
                                 f"least 1 training sentence and --monitor ({monitor}) development sentences")
            console.print(f"preparing {data} ({train_sentences} + {dev_sentences} sentences, voice {voice})")
            prepare_voice_data(VoiceDataConfig(out=str(data), voice=voice, train_sentences=train_sentences,
                                               dev_sentences=dev_sentences, seed=data_seed),
                               log=lambda m: console.print(m, highlight=False))
        started = time.time()
        with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TextColumn("{task.description}"), TimeRemainingColumn(), console=console,
                      disable=not console.is_terminal) as bar:
            task = bar.add_task("", total=1.0)
            summary = train_voice(cfg, log=lambda m: console.print(m, highlight=False),
                                  progress=lambda f, text: bar.update(task, completed=f, description=text))
        sidecar = {
            "command": "speechtrt " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "checkpoint": str(out), "seed": seed, "weights": "fp16 (computed in fp32 after loading)",
            "started_unix": round(started, 1), "host": platform.node(), "python": platform.python_version(),
            **summary,
        }
        side = out.with_suffix(".json")
        side.write_text(json.dumps(sidecar, indent=2) + "\n")
        console.print(f"wrote {side}")
