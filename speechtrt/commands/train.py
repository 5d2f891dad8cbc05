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

from speechtrt.asr.augment import AUGMENTATIONS
from speechtrt.asr.train import TrainConfig, train


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
