"""``speechtrt data synth``: a real accented English ASR set spoken by espeak-ng, festival and flite, as WAV files +
a JSONL manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from speechtrt.vocab import ACCENTS


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Make and inspect ASR data sets (JSONL manifests).", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("synth")
    def synth(
        out: Path = typer.Option(Path("data/asr"), help="Output folder: wav/<split>/*.wav and <split>.jsonl."),
        split: str = typer.Option("test", help="train, dev or test (test: unseen sentences and speakers; dev: "
                                  "training-split sentences, minus --exclude manifests' ones, for tuning)."),
        synthesizers: str = typer.Option("espeak-ng", help="Comma-separated engines: espeak-ng (alias espeak), "
                                         "festival, flite."),
        accents: str = typer.Option(",".join(ACCENTS), help="Comma-separated espeak-ng accents (its voices)."),
        voices: str = typer.Option("", help="Comma-separated <synthesizer>:<voice> of the other engines, e.g. "
                                   "festival:kal_diphone (default: every English voice of each)."),
        speakers: int = typer.Option(4, min=1, help="Speakers per accent or voice."),
        sentences: int = typer.Option(20, min=1, help="Sentences per speaker."),
        synth_speakers: str = typer.Option("", help="Speakers per voice for some engines, e.g. festival=6,flite=4 "
                                           "(others: --speakers)."),
        synth_sentences: str = typer.Option("", help="Sentences per speaker for some engines, e.g. festival=150 "
                                            "(others: --sentences)."),
        test_fraction: float = typer.Option(0.2, help="Share of the text source's sentences held out for test "
                                            "(between 0 and 1)."),
        text_source: Optional[Path] = typer.Option(None, help="Text file or fortune folder (default: "
                                                   "/usr/share/games/fortunes from Debian fortunes/fortunes-min)."),
        jitter: bool = typer.Option(False, help="Jitter rate and pitch per utterance (used for training data)."),
        seed: int = typer.Option(0, help="Seed for speaker and sentence choice."),
        exclude: list[Path] = typer.Option([], help="Manifest(s) whose sentences are not used (repeatable), e.g. "
                                           "the training manifest when making a dev set."),
    ) -> None:
        """Speak sentences from an installed English text in several accents and voices with one or more engines."""
        from speechtrt.asr.data import SynthConfig, check_synth_config, parse_engine_counts, read_manifest, synthesize
        from speechtrt.asr.synth import parse_synthesizers
        from speechtrt.errors import InputError
        from speechtrt.files import check_writable

        if not 0.0 < test_fraction < 1.0:
            raise InputError(f"--test-fraction {test_fraction}: give a share strictly between 0 and 1")
        for m in exclude:
            if not m.is_file():
                raise InputError(f"--exclude {m}: no such manifest")
        if text_source is not None and not text_source.exists():
            raise InputError(f"--text-source {text_source}: no such file or folder")
        cfg = check_synth_config(SynthConfig(
            split=split, accents=tuple(a.strip() for a in accents.split(",") if a.strip()),
            speakers_per_accent=speakers, sentences_per_speaker=sentences, test_fraction=test_fraction,
            text_source=str(text_source) if text_source else None, jitter=jitter, seed=seed,
            exclude=tuple(str(m) for m in exclude), synthesizers=parse_synthesizers(synthesizers, "--synthesizers"),
            voices=tuple(v.strip() for v in voices.split(",") if v.strip()),
            speakers_by_synthesizer=parse_engine_counts(synth_speakers, "--synth-speakers"),
            sentences_by_synthesizer=parse_engine_counts(synth_sentences, "--synth-sentences")))
        check_writable(out, "--out")
        console = Console()
        with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            task = bar.add_task("synth", total=None)
            manifest = synthesize(out, cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
        rows, _ = read_manifest(manifest)
        hours = sum(r.duration for r in rows) / 3600
        engines = ", ".join(f"{e} {sum(r.synthesizer == e for r in rows)}" for e in dict.fromkeys(r.synthesizer
                                                                                                  for r in rows))
        console.print(f"wrote {manifest}: {len(rows)} utterances, {hours:.2f} h, "
                      f"{len({r.speaker for r in rows})} speakers, {len({r.dialect for r in rows})} accents, "
                      f"{len({(r.synthesizer, r.voice) for r in rows})} voices ({engines})")
