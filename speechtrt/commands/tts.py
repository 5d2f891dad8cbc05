"""``speechtrt tts``: text to speech files with the trained voice; ``speechtrt tts-quality``: the quality report.

    speechtrt tts "Hello there." -o hello.wav
    speechtrt tts --input lines.txt -o speech/           # one file per non-empty line: speech/0001.wav, ...
    echo "From a pipe." | speechtrt tts --input - -o piped/
    speechtrt tts-quality --sentences 40                 # reports/tts_quality.{json,md}

Every flag is checked before any work (one line, exit 1): the voice, backend × precision × device, the output's
suffix (``.wav`` or ``.flac``) and folder, and every text (through the voice's own tokenizer).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from speechtrt.errors import InputError


def _check_device(device: str, backend: str, precision: str) -> None:
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise InputError(f"--device must be cpu or cuda[:N], got {device!r}")
    cuda = device.startswith("cuda")
    if cuda or backend == "trt":
        import torch  # only asked when a GPU is

        gpu = torch.cuda.is_available()
    if cuda and not gpu:
        raise InputError("--device cuda asked for, but CUDA is not available here; use --device cpu")
    if backend == "trt" and not gpu:
        raise InputError("--backend trt runs TensorRT plans on a CUDA GPU and none is here; use --backend ort or "
                         "torch (speechtrt build makes plans ahead of time for a GPU elsewhere)")
    if backend == "torch" and precision == "int8" and cuda:
        raise InputError("--precision int8 on the torch backend is dynamic quantization on the CPU; on CUDA use "
                         "fp16, or --backend trt for INT8 plans")


def _read_input(source: str) -> list[str]:
    """Non-empty lines of ``source`` (a file, or ``-`` for standard input)."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"--input {source}: no such file (give a text file, one text per line, or - for stdin)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"--input {source}: not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"--input {source}: no text in it (every line is empty)")
    return lines


def _outputs(text: str | None, lines: list[str], out: Path | None, fmt: str) -> list[Path]:
    from speechtrt.files import check_writable
    from speechtrt.tts.synthesize import OUTPUT_FORMATS, output_format

    if text is not None:
        out = out or Path("speech.wav")
        output_format(out)
        if out.is_dir():
            raise InputError(f"-o {out} is a folder: give a file name ending in .wav or .flac")
        check_writable(out.parent if str(out.parent) else Path("."), "-o")
        return [out]
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"--format {fmt!r}: choose {' or '.join(OUTPUT_FORMATS)}")
    out = out or Path("speech")
    if out.suffix.lower() in (".wav", ".flac") or out.is_file():
        raise InputError(f"-o {out}: with --input every line becomes its own file, so -o names a folder")
    check_writable(out, "-o")
    width = max(4, len(str(len(lines))))
    return [out / f"{i:0{width}d}.{fmt}" for i in range(1, len(lines) + 1)]


def register(app: typer.Typer) -> None:
    @app.command("tts")
    def tts(
        text: str = typer.Argument(None, help="The text to speak (or use --input)."),
        out: Path = typer.Option(None, "--out", "-o", help="Output file, .wav or .flac (default speech.wav); with "
                                 "--input, a folder for one file per line (default speech/)."),
        input_: str = typer.Option(None, "--input", "-i", help="A text file, one text per line, or - for stdin."),
        voice: str = typer.Option(None, "--voice", "-v", help="voice-en (default when checkpoints/voice-en.pt is "
                                  "present), tts (the seeded model: noise), a checkpoint file, or module:factory."),
        backend: str = typer.Option("torch", "--backend", "-b", help="torch | ort | trt"),
        precision: str = typer.Option("fp32", "--precision", "-p", help="fp32 | fp16 | bf16 | int8 (see README)."),
        device: str = typer.Option("cpu", "--device", "-d", help="cpu | cuda[:N]"),
        fmt: str = typer.Option("wav", "--format", help="With --input: wav | flac."),
        artifacts: Path = typer.Option(Path("out/artifacts"), "--artifacts", help="Graphs and plans of the ort/trt "
                                       "backends go to <artifacts>/<weights hash>/ (made on first use)."),
        calib_dir: Path = typer.Option(Path("calib_data"), "--calib-dir", help="Calibration sets for fp16/int8 "
                                       "graphs (a voice's go to <calib-dir>/<voice>)."),
        threads: int = typer.Option(1, "--threads", min=0, help="CPU threads (0: library default; on a shared "
                                    "machine spinning OpenMP threads make one thread several times faster)."),
        slots: int = typer.Option(8, "--slots", min=1, max=256, help="Requests decoded together."),
    ) -> None:
        """Speak text with the trained voice (decoded to its stop token); writes WAV or FLAC files."""
        from speechtrt.models.loading import check_model_spec
        from speechtrt.vocab import check_backend, check_precision

        err = Console(stderr=True)
        check_backend(backend)
        check_precision(precision, backend)
        _check_device(device, backend, precision)
        if (text is None) == (input_ is None):
            raise InputError("give the text to speak as an argument, or --input FILE (- for stdin), not both"
                             if text is not None else "give the text to speak as an argument, or --input FILE "
                             "(- for stdin)")
        if text is not None and not text.strip():
            raise InputError("text is empty (or only whitespace): give at least one word to synthesize")
        if voice is not None:
            check_model_spec(voice, "--voice")
        lines = [text] if text is not None else _read_input(input_)
        paths = _outputs(text, lines, out, fmt)

        import torch

        from speechtrt.models.loading import DEFAULT_VOICE, default_voice, resolve_model
        from speechtrt.tts.synthesize import SynthesisOptions, check_texts, prepare_backend, synthesize_texts, \
            write_audio

        spec = voice or default_voice()
        ref = resolve_model(spec, flag="--voice", kind="tts")
        if voice is None and spec == "tts":
            err.print(f"note: no checkpoints/{DEFAULT_VOICE}.pt here yet, so this speaks with the seeded `tts` "
                      "model, whose audio is noise (train the voice with `speechtrt train tts`)", highlight=False)
        check_texts(ref.model, lines, "--input" if input_ is not None else "text")
        if threads:
            torch.set_num_threads(threads)

        from speechtrt.pipeline import model_artifacts

        where = model_artifacts(ref.model, artifacts, ref.name)
        options = SynthesisOptions(backend=backend, precision=precision, device=device, stop_token=ref.stop_token,
                                   max_slots=slots, threads=threads or None, onnx_dir=str(where.onnx_dir),
                                   engine_dir=str(where.engine_dir))
        console = Console(stderr=True)
        t0 = time.perf_counter()
        with console.status("preparing", spinner="dots") as status:
            prepare_backend(ref.model, options, ref.calib_dir(calib_dir),
                            log=lambda msg: status.update(msg))
        sr = ref.model.config.sample_rate
        written: list[tuple[Path, object]] = []
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console, transient=True, disable=len(lines) < 2) as progress:
            task = progress.add_task(f"speaking with {ref.name} ({backend} {precision})", total=len(lines))

            def done(i: int, result) -> None:
                write_audio(paths[i], result.audio, sr)
                written.append((paths[i], result))
                progress.advance(task)

            synthesize_texts(ref.model, lines, options, on_done=done)
        seconds = time.perf_counter() - t0
        audio_s = sum(len(r.audio) for _, r in written) / sr
        capped = sum(1 for _, r in written if r.finish_reason == "frame_budget") if ref.stop_token else 0
        for path, r in sorted(written, key=lambda x: str(x[0])):
            typer.echo(f"{path}  {len(r.audio) / sr:.2f} s  ({r.parts} part{'s' * (r.parts != 1)})")
        summary = (f"{len(written)} file(s), {audio_s:.1f} s of audio at {sr} Hz in {seconds:.1f} s "
                   f"(voice {ref.name}, {backend} {precision} on {device})")
        err.print(summary, highlight=False)
        if capped:
            err.print(f"warning: {capped} text(s) reached the {ref.model.config.max_frames}-frame cap before the "
                      "voice's stop token (cut short)", highlight=False)

    @app.command("tts-quality")
    def tts_quality(
        voice: str = typer.Option(None, "--voice", "-v", help="Default: voice-en when present, else the seeded "
                                  "tts (numbers meaningless, machinery real)."),
        backends: str = typer.Option("torch,ort", "--backend", "-b", help="Comma list of torch, ort, trt."),
        precisions: str = typer.Option("fp32,fp16,int8", "--precision", "-p", help="Comma list of fp32, fp16, "
                                       "bf16, int8 (pairs a backend does not run here are listed as skipped)."),
        sentences: int = typer.Option(40, "--sentences", "-n", min=1, max=2000,
                                      help="Held-out (test-split) sentences judged."),
        device: str = typer.Option("cpu", "--device", "-d", help="cpu | cuda[:N]"),
        out: Path = typer.Option(Path("reports"), "--out", "-o", help="Folder for tts_quality.json/.md."),
        lm: bool = typer.Option(True, "--lm/--no-lm", help="Also decode with the evaluation's default n-gram LM "
                                "(greedy is always scored)."),
        dnsmos: bool = typer.Option(True, "--dnsmos/--no-dnsmos", help="Score DNSMOS P.808 and P.835."),
        max_frames: int = typer.Option(0, "--max-frames", min=0, help="Cap of decoder frames per sentence (0: the "
                                       "voice's max_frames; the seeded tts: its frame rule)."),
        artifacts: Path = typer.Option(Path("out/artifacts"), "--artifacts", help="Where graphs and plans are made."),
        calib_dir: Path = typer.Option(Path("calib_data"), "--calib-dir"),
        text_source: str = typer.Option(None, "--text-source", help="Sentences (default: fortunes-min)."),
        threads: int = typer.Option(1, "--threads", min=0),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """The quality report: ASR round trip (asr-medium), DNSMOS, mel distortion and stop agreement vs FP32,
        teacher-forced vs free-running, and the FP16/INT8 gates; writes <out>/tts_quality.{json,md}."""
        from speechtrt.models.loading import check_model_spec

        if voice is not None:
            check_model_spec(voice, "--voice")
        from speechtrt.files import check_writable
        from speechtrt.tts.quality import QualityConfig, run_quality
        from speechtrt.vocab import BACKENDS, PRECISIONS, parse_list

        cfg = QualityConfig(
            voice=voice, backends=parse_list(backends, BACKENDS, "--backend", "backend"),
            precisions=parse_list(precisions, PRECISIONS, "--precision", "precision"), sentences=sentences,
            device=device, out_dir=str(out), lm=lm, dnsmos=dnsmos, max_frames=max_frames or None,
            artifacts=str(artifacts), calib_dir=str(calib_dir), text_source=text_source, threads=threads or None,
            seed=seed)
        if device != "cpu":
            _check_device(device, "torch", "fp32")
        check_writable(out, "--out")
        console = Console(stderr=True)
        with console.status("starting", spinner="dots") as status:
            report = run_quality(cfg, log=lambda msg: console.print(msg, highlight=False),
                                 progress=lambda msg: status.update(msg))
        for line in report["summary_lines"]:
            typer.echo(line)
        typer.echo(f"wrote {out / 'tts_quality.json'} and {out / 'tts_quality.md'}")
