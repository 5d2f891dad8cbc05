"""The run: checkpoints × backends × precisions on a test manifest, scored, compared with the seed's loop, and
written as ``asr_eval.json`` + ``asr_eval.md`` + PNGs. Also :func:`quick_score`, one checkpoint's torch FP32 score
for training sidecars."""

from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.asr import stats
from speechtrt.asr.decode import training_lexicon
from speechtrt.asr.eval.config import EvalConfig, check_config
from speechtrt.asr.eval.inputs import (InputProblem, Prepared, auto_batch_frames, calibration_batches, largest_batch,
                                       load_dev_set,
                                       prepare_inputs)
from speechtrt.asr.eval.generalization import check_held_out, trained_on_for
from speechtrt.asr.eval.markdown import markdown
from speechtrt.asr.eval.plots import plot
from speechtrt.asr.eval.report import build_report
from speechtrt.asr.eval.run import VariantRun, compare_runs, run_batched, seed_loop
from speechtrt.asr.eval.scoring import LMDecoder, Scored, decoder_summary, primary_decoder, score_variant
from speechtrt.asr.eval.variants import (BackendUnavailable, EvaluatedModel, VariantOptions, classifier_trim,
                                         open_variant)
from speechtrt.asr.lm import SEARCH_COLUMNS
from speechtrt.asr.metrics import corpus_score, score_pair
from speechtrt.errors import InputError
from speechtrt.files import check_writable
from speechtrt.reporting import environment, write_json, write_text

Log = Callable[[str], None]


def load_asr_checkpoint(ckpt: str) -> torch.nn.Module:
    """The ASR model a checkpoint holds; one line naming ``--checkpoints`` for a file that is not one."""
    from speechtrt.models.checkpoints import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    if not hasattr(model, "classifier"):
        raise InputError(f"--checkpoints {ckpt}: not an ASR checkpoint ({type(model).__name__})")
    return model


def check_checkpoints(checkpoints: tuple[str, ...]) -> list[str]:
    """The variant name of every checkpoint (its file stem), after loading each once before any work: a file that
    cannot be read, a TTS checkpoint or two checkpoints of the same name are refused with one line."""
    names: list[str] = []
    for ckpt in checkpoints:
        load_asr_checkpoint(ckpt)
        name = Path(ckpt).stem
        if name in names:
            raise InputError(f"--checkpoints: two checkpoints are named {name!r}; variants are named after the file")
        names.append(name)
    return names


@dataclass
class EvalRun:
    """The state of one run while its variants are evaluated (see :func:`evaluate`)."""

    cfg: EvalConfig
    prepared: list[Prepared]
    prep_s: float
    batch_frames: int
    options: VariantOptions
    decode: Callable[[VariantRun], list[str]] | None
    log: Log
    variants: list[Scored] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    classifiers: dict[str, dict] = field(default_factory=dict)
    seed_speed: dict | None = None

    @property
    def refs(self) -> list[str]:
        return [p.reference for p in self.prepared]

    @property
    def audio_s(self) -> float:
        return sum(p.seconds for p in self.prepared)

    def checkpoint(self, ckpt: str, subject: EvaluatedModel) -> None:
        """Every backend × precision of one checkpoint, then (once per run) the seed loop beside its torch FP32."""
        reference = None  # this model's torch FP32 run: the fidelity reference of its other variants
        for backend in self.cfg.backends:
            for precision in self.cfg.precisions:
                run = self.variant(ckpt, subject, backend, precision, reference)
                if run is not None and backend == "torch" and precision == "fp32":
                    reference = run
        if reference is not None:
            reference.log_probs = None
        if self.cfg.seed_loop and self.seed_speed is None:
            self.seed_speed = self.seed_comparison(subject)

    def variant(self, ckpt: str, subject: EvaluatedModel, backend: str, precision: str,
                reference: VariantRun | None) -> VariantRun | None:
        name = f"{subject.name}/{backend}/{precision}"
        try:
            forward = open_variant(subject, backend, precision, self.options)
        except BackendUnavailable as exc:
            self.skipped.append({"variant": name, "reason": str(exc)})
            self.log(f"skip {name}: {exc}")
            return None
        try:
            run = run_batched(forward, self.prepared, self.batch_frames, keep_log_probs=True)
        finally:
            forward.close()
        scored = score_variant(name, ckpt, run, self.refs, self.decode)
        if reference is not None:
            scored.fidelity = compare_runs(run, reference)
        if not (backend == "torch" and precision == "fp32"):
            run.log_probs = None
        self.variants.append(scored)
        wer, greedy = corpus_score(scored.errors).wer, corpus_score(scored.greedy_errors).wer
        self.log(f"{name}: WER {wer:.3f} (greedy {greedy:.3f}) RTFx {self.audio_s / run.compute_s:.1f}")
        return run

    def seed_comparison(self, subject: EvaluatedModel) -> dict | None:
        """The seed's per-utterance loop against this model's batched torch FP32 and its fastest variant."""
        mine = [v for v in self.variants if v.model == subject.name]
        batched = next((v for v in mine if v.backend == "torch" and v.precision == "fp32"), None)
        if batched is None:
            return None
        loop = seed_loop(subject.model, self.prepared, Path(self.cfg.manifest).parent)
        speed = seed_speed(loop, batched, min(mine, key=lambda v: v.run.compute_s), self.prep_s, self.audio_s,
                           self.cfg.threads)
        self.log(f"seed per-utterance loop {loop['compute_seconds']:.2f} s vs batched {batched.run.compute_s:.2f} s "
                 f"compute ({speed['speedup']:.1f}x); end to end {loop['end_to_end_seconds']:.2f} s vs "
                 f"{speed['batched_end_to_end_seconds']:.2f} s ({speed['end_to_end_speedup']:.1f}x); fastest variant "
                 f"{speed['fastest_variant']['variant']} {speed['fastest_variant']['batched_seconds']:.2f} s "
                 f"({speed['fastest_variant']['speedup']:.1f}x)")
        return speed


def seed_speed(loop: dict, batched: Scored, fastest: Scored, prep_s: float, audio_s: float, threads: int) -> dict:
    """``speed.seed_loop_vs_batched``: compute and end-to-end speed-ups of the batched pipeline over the loop."""
    ours_e2e = prep_s + batched.run.compute_s + batched.score_seconds
    compute = loop["compute_seconds"]
    return {
        "model": batched.model, "utterances": len(loop["texts"]), "audio_seconds": audio_s, "threads": threads,
        "seed_loop_seconds": compute, "batched_seconds": batched.run.compute_s,
        "speedup": compute / batched.run.compute_s,
        "seed_loop_end_to_end_seconds": loop["end_to_end_seconds"], "batched_end_to_end_seconds": ours_e2e,
        "end_to_end_speedup": loop["end_to_end_seconds"] / ours_e2e,
        "batch1_latency_ms": {"p50": stats.percentile(loop["latency_ms"], 50),
                              "p95": stats.percentile(loop["latency_ms"], 95)},
        "identical_transcripts": float(np.mean([a == b for a, b in zip(loop["texts"], batched.run.hypotheses)])),
        "note": ("compute = forward + greedy decode; end to end = reading audio + features + forward + decode + "
                 "scoring. Both use the same log-mel code: the seed loop inside its loop at the run's torch threads, "
                 "the batched pipeline once per utterance at one torch thread in --threads worker threads (shared "
                 "by all variants)"),
        "batched_features_seconds": prep_s,
        "fastest_variant": {
            "variant": fastest.name, "batched_seconds": fastest.run.compute_s,
            "speedup": compute / fastest.run.compute_s,
            "end_to_end_speedup": loop["end_to_end_seconds"] / (prep_s + fastest.run.compute_s
                                                               + fastest.score_seconds),
            "score_seconds": fastest.score_seconds,
            "wer": corpus_score(fastest.errors).wer, "fp32_wer": corpus_score(batched.errors).wer,
            "greedy_transcripts_identical_to_fp32": float(np.mean(
                [a == b for a, b in zip(fastest.run.hypotheses, batched.run.hypotheses)])),
        },
    }


def _torch_fp32_run(ckpt: str, utterances: list[Prepared], batch_frames: int) -> VariantRun:
    """A checkpoint's torch FP32 run on ``utterances``, with the log-probabilities the beam search reads."""
    with tempfile.TemporaryDirectory(prefix="speechtrt-tune-") as tmp:
        subject = EvaluatedModel.create(Path(ckpt).stem, load_asr_checkpoint(ckpt), Path(tmp))
        forward = open_variant(subject, "torch", "fp32", VariantOptions())
        try:
            return run_batched(forward, utterances, batch_frames, keep_log_probs=True)
        finally:
            forward.close()


def _test_set(cfg: EvalConfig, log: Log) -> tuple[list[Prepared], list[InputProblem], float]:
    t_prep = time.perf_counter()
    prepared, problems = prepare_inputs(cfg.manifest, workers=cfg.threads)
    prep_s = time.perf_counter() - t_prep
    for p in problems:
        log(f"input {p.action}: #{p.index} {p.audio_filepath or '(manifest)'}: {p.problem} ({p.detail})")
    if not prepared:
        raise InputError(f"manifest {cfg.manifest} has no usable utterance ({len(problems)} problems); see above")
    speakers = {p.row.speaker for p in prepared}
    dialects = {p.row.dialect for p in prepared}
    log(f"{len(prepared)} utterances, {sum(p.seconds for p in prepared) / 60:.1f} min audio, {len(dialects)} "
        f"dialects, {len(speakers)} speakers; {len(problems)} input problem(s)")
    return prepared, problems, prep_s


def evaluate(cfg: EvalConfig, log: Log = print) -> dict:
    """Run the whole evaluation; write ``asr_eval.json``, ``asr_eval.md`` and plots under ``cfg.out_dir``.

    Returns the report dict. Every flag is checked and every checkpoint loaded before any work starts; bad inputs
    never stop the run; a manifest with no usable utterance raises :class:`InputError` (there is nothing to score).
    """
    check_config(cfg)
    names = check_checkpoints(cfg.checkpoints)
    out_dir = check_writable(cfg.out_dir, "--out")
    torch.set_num_threads(cfg.threads)
    prepared, problems, prep_s = _test_set(cfg, log)
    if cfg.held_out:
        check_held_out(cfg.held_out, [p.row for p in prepared])
    trained_on = {name: trained_on_for(ckpt, cfg) for ckpt, name in zip(cfg.checkpoints, names)}
    refs = [p.reference for p in prepared]
    batch_frames = cfg.batch_frames or auto_batch_frames()
    lexicon = training_lexicon(cfg.text_source) if cfg.decoder in ("lexicon", "lm") else None
    dev = load_dev_set(cfg.tune_on, refs, "development") if cfg.tune_on else None
    decoder = None
    if cfg.decoder == "lm":
        def dev_log_probs() -> list[np.ndarray]:
            return _torch_fp32_run(cfg.checkpoints[0], dev, batch_frames).log_probs

        decoder = LMDecoder.prepare(cfg, refs, dev_log_probs, dev, log)
    if cfg.calib_manifest and cfg.calib_manifest != cfg.tune_on:
        calib, calib_source = load_dev_set(cfg.calib_manifest, refs, "calibration"), cfg.calib_manifest
    else:
        calib, calib_source = dev, cfg.tune_on
    calibration = calibration_batches(calib, calib_source, log) if calib else None
    options = VariantOptions(cfg.threads, calibration, largest_batch(prepared, batch_frames))
    run = EvalRun(cfg, prepared, prep_s, batch_frames, options, primary_decoder(cfg, decoder, lexicon), log)
    # the language models and lexicon are large and live to the end: keep the cyclic collector from walking them
    # again and again inside timed sections (one full pass over them took ~0.15 s)
    gc.collect()
    gc.freeze()
    try:
        _run_checkpoints(run, names, calib, calib_source)
    finally:
        gc.unfreeze()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = build_report(cfg, prepared, problems, run.variants, run.skipped, run.seed_speed, lexicon,
                          environment(device, cfg.threads), trained_on)
    report["decoder"] = decoder_summary(cfg, lexicon, decoder, refs)
    report["classifier"] = run.classifiers
    report["quantization"] = quantization_summary(cfg, calibration)
    write_outputs(report, out_dir, cfg.plots)
    return report


def _run_checkpoints(run: EvalRun, names: list[str], calib: list[Prepared] | None, calib_source: str | None
                     ) -> None:
    """Every checkpoint in turn (loaded when its turn comes), its graphs in this run's temporary folder."""
    cfg = run.cfg
    trimmable = cfg.trim_classifier and any(b in ("ort", "trt") for b in cfg.backends)
    with tempfile.TemporaryDirectory(prefix="speechtrt-eval-") as tmp:
        for ckpt, name in zip(cfg.checkpoints, names):
            model = load_asr_checkpoint(ckpt)
            trim = classifier_trim(model, calib, calib_source, trimmable, run.batch_frames)
            run.classifiers[name] = trim
            run.log(f"{name} classifier: {trim['note']}")
            subject = EvaluatedModel.create(name, model, Path(tmp) / name, SEARCH_COLUMNS if trim["trimmed"] else None)
            run.checkpoint(ckpt, subject)


def quantization_summary(cfg: EvalConfig, calibration: list[np.ndarray] | None) -> dict:
    """How each reduced precision was made, in words (``quantization`` in the report)."""
    from speechtrt.quantize.ort_int8 import STATIC_INT8_OPS

    source = cfg.calib_manifest or cfg.tune_on
    out = {"ort_int8": (f"static QDQ ({'/'.join(STATIC_INT8_OPS)}, per-channel INT8 weights, UINT8 activations) "
                        f"calibrated on {len(calibration)} batches of {source}, LSTM weights dynamic INT8"
                        if calibration else "ONNX Runtime dynamic INT8, per-channel weights (no calibration manifest "
                        "given)"),
           "torch_int8": "torch.ao dynamic INT8 of LSTM and Linear weights"}
    if "fp16" in cfg.precisions:
        out["fp16"] = (f"ModelOpt AutoCast FP16 graph (LSTMs kept FP32) calibrated on {source}: the graph TensorRT "
                       "builds, run by ONNX Runtime where its CPU kernels take it (tried in a child process first); "
                       "torch FP16 on CUDA only" if calibration else
                       "ORT/TRT FP16 graphs are calibrated on a development set and none was given")
    return out


def write_outputs(report: dict, out_dir: Path, plots: bool = True) -> None:
    if plots:
        report["plots"] = plot(report, out_dir)
    write_json(Path(out_dir) / "asr_eval.json", report)
    write_text(Path(out_dir) / "asr_eval.md", markdown(report))


def quick_score(checkpoint: str | Path, manifest: str | Path, text_source=None) -> dict:
    """Torch FP32 WER/CER of one checkpoint on a manifest (for sidecars): the default lm decoder (weights of
    :class:`EvalConfig`), the lexicon pass and greedy best path."""
    from speechtrt.asr.lm import BeamConfig, ctc_beam_search, training_lm

    prepared, problems = prepare_inputs(manifest)
    if not prepared:
        raise InputError(f"manifest {manifest} has no usable utterance")
    run = _torch_fp32_run(str(checkpoint), prepared, auto_batch_frames())
    refs = [p.reference for p in prepared]
    defaults = EvalConfig(manifest=str(manifest), checkpoints=(str(checkpoint),))
    beam = BeamConfig(alpha=defaults.lm_alpha, beta=defaults.lm_beta, beam=defaults.beam)
    lm = training_lm(text_source, order=defaults.lm_order)
    lexicon = training_lexicon(text_source)
    greedy = corpus_score([score_pair(r, h) for r, h in zip(refs, run.hypotheses)])
    lex = corpus_score([score_pair(r, lexicon.correct(h)) for r, h in zip(refs, run.hypotheses)])
    lm_score = corpus_score([score_pair(r, ctc_beam_search(x, lm, beam)) for r, x in zip(refs, run.log_probs)])
    return {"manifest": str(manifest), "utterances": len(prepared), "wer": lm_score.wer, "cer": lm_score.cer,
            "decoder": f"lm ({lm.order}-gram, alpha {beam.alpha}, beta {beam.beta}, beam {beam.beam})",
            "lexicon_wer": lex.wer, "lexicon_cer": lex.cer, "greedy_wer": greedy.wer, "greedy_cer": greedy.cer,
            "rtfx_torch_fp32": sum(p.seconds for p in prepared) / run.compute_s, "input_problems": len(problems)}
