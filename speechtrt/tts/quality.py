"""The TTS quality report: would a listener trust this voice at this precision on this backend?

On held-out sentences (the test split of the text source, :func:`speechtrt.asr.data.sentence_split`: no voice
trains on them), for every backend × precision that runs here, the voice speaks each sentence to its stop token
through the in-flight :class:`~speechtrt.tts.service.TTSService`, and the audio is judged:

* **Intelligibility**: ASR round trip with the shipped ``asr-medium`` — WER/CER with the evaluation's default
  n-gram LM decoder (the LM knows the text source's training split only) and greedy
  (:class:`~speechtrt.tts.intelligibility.ASRJudge`).
* **DNSMOS** P.808 MOS and P.835 SIG/BAK/OVRL (:mod:`speechtrt.tts.dnsmos`), the mean over sentences.
* **Against FP32** (the torch FP32 variant of the same run): mel SNR of the decoder frames over the frames both
  decoded, mel-cepstral distortion of the audio, and stop-length agreement (same frame count; within 10 %).
* **Ceilings**: the espeak-ng audio of the same sentences spoken with the voice's own settings, raw, and through
  the voice's analysis → its vocoder (what a perfect acoustic model would give through this vocoder).
* **Teacher-forced vs free-running**: the decoder fed the true previous frames (the espeak-ng reference's frames,
  computed as the voice's training computes them) beside the decoder fed its own — the exposure-bias gap.

Gates (the seed's "MOS within 5 % of baseline", made checkable): every FP16 and INT8 variant has DNSMOS P.808
within 5 % of FP32 (same backend's FP32 when it ran, else torch FP32) and CER within +1 point of FP32. Also shown:
the intelligibility target (FP32 free-running CER ≤ 10 % with the LM decoder).

MCD: 13 mel-cepstral coefficients (DCT-II of the natural-log mel *amplitude* of the 80-bin, 10 ms analysis every
ASR feature uses; c0 left out), ``(10 / ln 10) · sqrt(2 Σ Δc²)`` per frame, averaged over the frames both clips
have, without time warping (the variants decode the same model, so frames correspond until their lengths part).
pymcd is not used: it installs librosa, pyworld and pysptk, and measures WORLD spectra of files rather than the
same analysis for every variant.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.errors import InputError, SpeechTRTError
from speechtrt.models.audio import FEATURES, espeak_speech, log_mel, resample
from speechtrt.models.text import tokenizer_of

GATES = {"dnsmos_p808_rel": 0.05, "cer_points": 1.0}
"""FP16/INT8 vs FP32: DNSMOS P.808 within 5 % (relative), CER at most +1 point (percentage points)."""

INTELLIGIBILITY_TARGET_CER = 0.10
"""The voice's target: FP32 free-running CER with the default LM decoder at most 10 % (the issue's)."""

ESPEAK_DEFAULTS = {"voice": "en-us", "rate": 175, "pitch": 50}
"""espeak-ng settings of the reference audio when the voice does not record its own (the voice data's defaults)."""

Log = Callable[[str], None]


@dataclass(frozen=True)
class QualityConfig:
    voice: str | None = None  # None: voice-en when present, else the seeded tts
    backends: tuple[str, ...] = ("torch", "ort")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    sentences: int = 40
    device: str = "cpu"
    out_dir: str = "reports"
    lm: bool = True
    dnsmos: bool = True
    max_frames: int | None = None  # cap of decoder frames per sentence (None: the model's; seeded tts: frame rule)
    artifacts: str = "out/artifacts"
    calib_dir: str = "calib_data"
    text_source: str | None = None
    threads: int | None = 1
    seed: int = 0
    slots: int = 8
    teacher_forced: bool = True
    ceiling: bool = True
    write: bool = True


# ---------------------------------------------------------------- sentences and reference audio


def held_out_sentences(model, count: int, seed: int = 0, text_source: str | None = None) -> list[str]:
    """``count`` test-split sentences (never trained on) that the model's tokenizer reads and one request holds, in
    a seeded order."""
    from speechtrt.asr.data import load_sentences, sentence_split

    tok = tokenizer_of(model)
    pool = [s for s in load_sentences(text_source) if sentence_split(s) == "test"]
    random.Random(seed).shuffle(pool)
    out = []
    for s in pool:
        try:
            if len(tok.tokens(s)) <= model.config.max_text_len:
                out.append(s)
        except InputError:
            continue
        if len(out) == count:
            break
    if len(out) < count:
        raise InputError(f"the text source's test split has only {len(out)} sentences this voice reads; ask for "
                         "fewer (--sentences) or give another --text-source")
    return out


def espeak_settings(ref) -> dict:
    """The espeak-ng voice, rate and pitch the model was trained on (its checkpoint's data settings), else the
    voice data's defaults."""
    out = dict(ESPEAK_DEFAULTS)
    data_cfg = ((ref.meta or {}).get("data") or {}).get("config") or {}
    for key in out:
        if key in data_cfg:
            out[key] = data_cfg[key]
    voice = getattr(ref.model.config, "phoneme_voice", None)
    if voice and "voice" not in data_cfg:
        out["voice"] = voice
    return out


def reference_frames(model, audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
    """The decoder frames [T, mel_dim] the model was trained to emit for ``audio``, or None when the model does not
    say how its frames are computed.

    ``model.reference_frames(audio, sr)`` when it has one; for a trained voice without it, its training features
    (natural-log mel magnitude of :mod:`speechtrt.models.vocoder`, normalised with the stored statistics, padded
    with silence to whole decoder frames of ``reduction`` mel frames); for a model whose frame is 80 bins and says
    nothing, the shared 80-bin log-mel (the seeded model: the numbers mean nothing, the machinery runs).
    """
    if callable(getattr(model, "reference_frames", None)):
        return np.asarray(model.reference_frames(audio, sample_rate), dtype=np.float32)
    c = model.config
    if hasattr(model, "mel_mean") and hasattr(c, "mel") and hasattr(c, "reduction"):
        from speechtrt.models.vocoder import log_mel_magnitude  # the voices' analysis

        mel = log_mel_magnitude(resample(audio, sample_rate, c.mel.sample_rate), c.mel)  # [T, n_mels]
        norm = (mel - model.mel_mean.float()) / model.mel_std.float()
        r = c.reduction
        groups = math.ceil(norm.shape[0] / r)
        silence = (math.log(c.mel.log_floor) - model.mel_mean.float()) / model.mel_std.float()
        padded = silence.repeat(groups * r, 1)
        padded[: norm.shape[0]] = norm
        return padded.reshape(groups, r * c.n_mels).numpy()
    if c.mel_dim == FEATURES.n_mels:
        return log_mel(resample(audio, sample_rate, FEATURES.sample_rate)).numpy()
    return None


@torch.no_grad()
def teacher_forced(model, texts: list[str], frames: list[np.ndarray], batch: int = 8) -> list[np.ndarray]:
    """Decoder output [T_i, mel_dim] of every text when each step is fed the *true* previous frame
    (``frames[i][t - 1]``; zeros at the first step) instead of its own: torch FP32, the cached step."""
    tok = tokenizer_of(model)
    c = model.config
    out: list[np.ndarray] = []
    for lo in range(0, len(texts), batch):
        ids = [tok.tokens(t) for t in texts[lo:lo + batch]]
        refs = [torch.from_numpy(np.asarray(f[: c.max_frames], np.float32)) for f in frames[lo:lo + batch]]
        b, s, n = len(ids), max(len(x) for x in ids), max(len(f) for f in refs)
        tokens = torch.zeros(b, s, dtype=torch.int64)
        for i, x in enumerate(ids):
            tokens[i, : len(x)] = torch.tensor(x)
        lengths = torch.tensor([len(x) for x in ids])
        truth = torch.zeros(b, n, c.mel_dim)
        for i, f in enumerate(refs):
            truth[i, : len(f)] = f
        ck, cv = model.cross_kv(model.encode(tokens, lengths))
        past_k = torch.zeros(c.num_layers, b, c.num_heads, n, c.head_dim)
        past_v = torch.zeros_like(past_k)
        decoded = torch.zeros(b, n, c.mel_dim)
        prev = torch.zeros(b, c.mel_dim)
        for t in range(n):
            p = max(t, 1)
            frame, _, nk, nv = model.decode_step(prev, torch.full((b,), t, dtype=torch.int64),
                                                 list(past_k[:, :, :, :p]), list(past_v[:, :, :, :p]),
                                                 list(ck), list(cv), lengths)
            past_k[:, :, :, t], past_v[:, :, :, t] = nk[:, :, :, 0], nv[:, :, :, 0]
            decoded[:, t] = frame
            prev = truth[:, t]
        out += [decoded[i, : len(f)].numpy() for i, f in enumerate(refs)]
    return out


@torch.no_grad()
def vocode(model, frames: list[np.ndarray], reference: bool = False) -> list[np.ndarray]:
    """Audio of each frame sequence through the model's own vocoder (torch FP32), one at a time (no padding).
    ``reference``: the frames are true frames (analysed from real audio): a model's ``reference_vocoder`` when it has
    one (a voice's postnet is trained on its decoder's output, not on true frames)."""
    voc = getattr(model, "reference_vocoder", None) if reference else None
    voc = voc or model.vocoder_inference
    return [voc(torch.from_numpy(np.asarray(f, np.float32))[None])[0].numpy() for f in frames]


# ---------------------------------------------------------------- measures


def mel_cepstra(audio: np.ndarray, sample_rate: int, n: int = 13) -> np.ndarray:
    """[frames, n] mel-cepstra of ``audio``: DCT-II (orthonormal) of the natural-log mel amplitude of the shared
    80-bin analysis at 16 kHz."""
    from scipy.fft import dct

    logmel = log_mel(resample(audio, sample_rate, FEATURES.sample_rate)).numpy()  # log power
    return dct(0.5 * logmel, type=2, norm="ortho", axis=-1)[:, :n]


def mcd_db(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float | None:
    """Mel-cepstral distortion (dB) of ``test`` against ``reference`` over the frames both have (c0 left out)."""
    a, b = mel_cepstra(reference, sample_rate), mel_cepstra(test, sample_rate)
    n = min(len(a), len(b))
    if n == 0:
        return None
    diff = a[:n, 1:] - b[:n, 1:]
    return float(np.mean((10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum(diff * diff, axis=-1))))


def mel_snr_db(reference: list[np.ndarray], test: list[np.ndarray]) -> float:
    """SNR (dB) of the decoder frames over the frames both runs decoded, pooled over sentences."""
    from speechtrt.quantize.fidelity import snr_db

    ref = np.concatenate([r[: min(len(r), len(t))].ravel() for r, t in zip(reference, test)])
    got = np.concatenate([t[: min(len(r), len(t))].ravel() for r, t in zip(reference, test)])
    return snr_db(got, ref)


def stop_agreement(reference: list[int], test: list[int]) -> dict:
    """How the stop lengths of ``test`` agree with ``reference`` (decoder frames per sentence)."""
    ref, got = np.asarray(reference, float), np.asarray(test, float)
    ratio = got / np.maximum(ref, 1)
    return {"same_length": float(np.mean(ref == got)), "within_10pct": float(np.mean(np.abs(ratio - 1) <= 0.1)),
            "median_ratio": float(np.median(ratio)), "mean_abs_frames": float(np.mean(np.abs(got - ref)))}


@dataclass
class _Judges:
    asr: object
    mos: object | None

    def score(self, texts: list[str], audios: list[np.ndarray], sample_rate: int) -> tuple[dict, list, list]:
        """(ASR and DNSMOS summary, greedy transcripts, LM transcripts or None)."""
        rt = self.asr.round_trip(texts, audios, sample_rate)
        out = {k: float(v) for k, v in rt.scores().items()}
        if self.mos is not None:
            scores = [self.mos(resample(a, sample_rate, 16000)) for a in audios]
            out["dnsmos"] = {k: float(np.mean([getattr(s, k) for s in scores]))
                             for k in ("p808_mos", "sig", "bak", "ovrl")}
        return out, rt.greedy, rt.lm


# ---------------------------------------------------------------- variants and gates


def plan_variants(cfg: QualityConfig) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(variants that run, in order with torch FP32 — the reference — first; {name: reason} of those that do not)."""
    from speechtrt.vocab import BACKEND_PRECISIONS

    cuda = cfg.device.startswith("cuda")
    run, skipped = [("torch", "fp32")], {}
    for backend in cfg.backends:
        for precision in cfg.precisions:
            name = f"{backend}-{precision}"
            if (backend, precision) in run:
                continue
            if precision not in BACKEND_PRECISIONS[backend]:
                skipped[name] = f"the {backend} backend runs {', '.join(BACKEND_PRECISIONS[backend])}"
            elif backend == "trt" and not torch.cuda.is_available():
                skipped[name] = "TensorRT plans run on a CUDA GPU; none here"
            elif backend == "torch" and precision in ("fp16", "bf16") and not cuda:
                skipped[name] = (f"torch {precision} on a CPU runs through conversions (minutes per sentence); the "
                                 f"{precision} numerics are measured by the ort/trt graphs")
            elif backend == "torch" and precision == "int8" and cuda:
                skipped[name] = "torch INT8 (dynamic quantization) runs on the CPU only"
            else:
                run.append((backend, precision))
    return run, skipped


def gates(variants: dict) -> list[dict]:
    """Each FP16/INT8 variant against FP32 (the same backend's when it ran, else torch FP32): DNSMOS P.808 within
    5 % and CER within +1 point; met or missed, and by how much."""
    out = []
    for name, v in variants.items():
        if "skipped" in v or v["precision"] not in ("fp16", "int8"):
            continue
        ref_name = f"{v['backend']}-fp32" if "asr" in variants.get(f"{v['backend']}-fp32", {}) else "torch-fp32"
        ref = variants[ref_name]
        key = "cer" if "cer" in v["asr"] else "greedy_cer"
        cer, cer_ref = v["asr"][key], ref["asr"][key]
        points = (cer - cer_ref) * 100
        row = {"variant": name, "reference": ref_name,
               "cer": {"decoder": "lm" if key == "cer" else "greedy", "value": cer, "fp32": cer_ref,
                       "points": points, "limit_points": GATES["cer_points"], "met": points <= GATES["cer_points"],
                       "missed_by_points": max(0.0, points - GATES["cer_points"])}}
        if "dnsmos" in v["asr"] and "dnsmos" in ref["asr"]:
            mos, mos_ref = v["asr"]["dnsmos"]["p808_mos"], ref["asr"]["dnsmos"]["p808_mos"]
            rel = (mos - mos_ref) / mos_ref
            row["dnsmos_p808"] = {"value": mos, "fp32": mos_ref, "rel_change": rel,
                                  "limit_rel": GATES["dnsmos_p808_rel"], "met": abs(rel) <= GATES["dnsmos_p808_rel"],
                                  "missed_by_rel": max(0.0, abs(rel) - GATES["dnsmos_p808_rel"])}
        row["met"] = all(row[k]["met"] for k in ("cer", "dnsmos_p808") if k in row)
        out.append(row)
    return out


# ---------------------------------------------------------------- the run


def run_quality(cfg: QualityConfig, log: Log = print, progress: Log | None = None) -> dict:
    """Run the whole report; writes ``tts_quality.json`` and ``tts_quality.md`` into ``cfg.out_dir`` (unless
    ``cfg.write`` is False) and returns the report."""
    from speechtrt.models.loading import DEFAULT_VOICE, default_voice, resolve_model
    from speechtrt.pipeline import model_artifacts
    from speechtrt.reporting import environment, write_json, write_text
    from speechtrt.tts.intelligibility import ASRJudge
    from speechtrt.tts.quality_report import markdown, summary_lines
    from speechtrt.tts.synthesize import SynthesisOptions, prepare_backend, synthesize_texts

    step = progress or (lambda msg: None)
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = cfg.voice or default_voice()
    ref = resolve_model(spec, flag="--voice", kind="tts")
    model, c = ref.model, ref.model.config
    note = None
    if not ref.stop_token:
        note = (f"the seeded `tts` model (no checkpoints/{DEFAULT_VOICE}.pt here): random weights, noise audio, "
                "fixed-length decoding; the numbers are meaningless, the machinery is the report's")
    step("choosing held-out sentences")
    texts = held_out_sentences(model, cfg.sentences, cfg.seed, cfg.text_source)
    step("loading the judges (asr-medium, LM, DNSMOS)")
    judges = _Judges(ASRJudge(lm=cfg.lm, exclude=texts, text_source=cfg.text_source),
                     _dnsmos(cfg, log) if cfg.dnsmos else None)
    where = model_artifacts(model, cfg.artifacts, ref.name)
    sr = c.sample_rate
    run_list, skipped = plan_variants(cfg)
    variants: dict[str, dict] = {}
    outputs: dict[str, list] = {}
    transcripts: dict[str, list] = {}
    for backend, precision in run_list:
        name = f"{backend}-{precision}"
        step(f"{name}: speaking {len(texts)} sentences")
        options = SynthesisOptions(backend=backend, precision=precision, device=cfg.device,
                                   stop_token=ref.stop_token, max_slots=cfg.slots, threads=cfg.threads,
                                   onnx_dir=str(where.onnx_dir), engine_dir=str(where.engine_dir),
                                   max_frames=cfg.max_frames)
        t0 = time.perf_counter()
        try:
            prepare_backend(model, options, ref.calib_dir(cfg.calib_dir), log=step)
            prepared = time.perf_counter()
            results = synthesize_texts(model, texts, options)
        except (SpeechTRTError, RuntimeError, OSError) as exc:
            if name == "torch-fp32":
                raise
            variants[name] = {"backend": backend, "precision": precision, "skipped": str(exc).splitlines()[0][:300]}
            log(f"{name}: skipped ({variants[name]['skipped']})")
            continue
        seconds = time.perf_counter() - prepared  # speaking only: making the graphs on first use is not speed
        step(f"{name}: judging")
        audios = [r.audio for r in results]
        scores, greedy, lm = judges.score(texts, audios, sr)
        outputs[name] = results
        transcripts[name] = lm or greedy
        audio_s = sum(len(a) for a in audios) / sr
        variants[name] = {
            "backend": backend, "precision": precision, "asr": scores, "seconds": round(seconds, 2),
            "prepare_seconds": round(prepared - t0, 2),
            "audio_seconds": round(audio_s, 2), "rtf": seconds / max(audio_s, 1e-9),
            "stop": {"stopped": float(np.mean([r.finish_reason == "stop_token" for r in results])),
                     "frames_median": float(np.median([r.frames for r in results]))},
        }
        log(f"{name}: CER {scores.get('cer', scores['greedy_cer']):.3f}"
            + (f", DNSMOS P.808 {scores['dnsmos']['p808_mos']:.2f}" if "dnsmos" in scores else ""))
    for name, why in skipped.items():
        b, p = name.split("-", 1)
        variants[name] = {"backend": b, "precision": p, "skipped": why}
    reference = outputs["torch-fp32"]
    for name, results in outputs.items():
        if name == "torch-fp32":
            continue
        step(f"{name}: distortion against torch-fp32")
        variants[name]["vs_fp32"] = {
            "mel_snr_db": mel_snr_db([r.mel for r in reference], [r.mel for r in results]),
            "mcd_db": float(np.mean([m for m in (mcd_db(a.audio, b.audio, sr) for a, b in zip(reference, results))
                                     if m is not None] or [float("nan")])),
            "stop": stop_agreement([r.frames for r in reference], [r.frames for r in results]),
        }

    espeak = espeak_settings(ref)
    ceiling, tf, ref_frames = {}, None, None
    if cfg.ceiling or cfg.teacher_forced:
        step("espeak-ng reference audio")
        raw = [espeak_speech(t, voice=espeak["voice"], rate=espeak["rate"], pitch=espeak["pitch"],
                             sample_rate=16000) for t in texts]
        if cfg.ceiling:
            step("ceiling: espeak-ng audio")
            scores, _, _ = judges.score(texts, raw, 16000)
            ceiling["espeak_raw"] = {"what": "the espeak-ng audio itself", "asr": scores}
        frames = [reference_frames(model, a, 16000) for a in raw]
        if all(f is not None for f in frames):
            ref_frames = [f[: min(len(f), cfg.max_frames or c.max_frames)] for f in frames]
            if cfg.ceiling:
                step("ceiling: espeak-ng through the voice's analysis and vocoder")
                scores, _, _ = judges.score(texts, vocode(model, ref_frames, reference=True), sr)
                ceiling["espeak_vocoder"] = {"what": "espeak-ng audio → the voice's frames → its vocoder (torch "
                                                     "FP32; no postnet: it refines decoder output, not true frames)",
                                             "asr": scores}
            if cfg.teacher_forced:
                step("teacher-forced decoding")
                tf_frames = teacher_forced(model, texts, ref_frames, cfg.slots)
                scores, greedy, lm = judges.score(texts, vocode(model, tf_frames), sr)
                transcripts["teacher_forced"] = lm or greedy
                tf = {"what": "torch FP32, each step fed the true previous frame of the espeak-ng reference",
                      "asr": scores, "frames_median": float(np.median([len(f) for f in tf_frames]))}
                if getattr(c, "feedback", True) is False:
                    tf["what"] = ("torch FP32 decoded for the reference's number of steps: the voice does not read "
                                  "its previous frames, so feeding it the true ones changes nothing (no exposure "
                                  "bias); this row differs from free-running only in where decoding ends")
                    tf["feedback"] = False
        else:
            why = "the model does not say how its frames are computed from audio (no reference_frames)"
            ceiling["espeak_vocoder"] = {"skipped": why}
            tf = {"skipped": why}
    if ref_frames is not None:
        variants["torch-fp32"]["stop"]["vs_reference_length"] = stop_agreement(
            [len(f) for f in ref_frames], [r.frames for r in reference])

    fp32 = variants["torch-fp32"]["asr"]
    fp32_cer = fp32.get("cer", fp32["greedy_cer"])
    report = {
        "report": "tts_quality",
        **environment(cfg.device, cfg.threads),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "voice": {"name": ref.name, "source": ref.source, "stop_token": ref.stop_token, "sample_rate": sr,
                  "frames_per_second": sr / c.samples_per_frame, "note": note, "meta": _small(ref.meta)},
        "sentences": {"count": len(texts), "split": "test (never trained on)", "seed": cfg.seed,
                      "text_source": cfg.text_source or "fortunes-min"},
        "judge": {"asr": "checkpoints/asr-medium.pt (torch FP32)",
                  "decoders": (["lm: the evaluation's default n-gram beam search"] if cfg.lm else []) + ["greedy"],
                  "dnsmos": "speechmos' DNSMOS ONNX models (P.808; P.835 SIG/BAK/OVRL)" if cfg.dnsmos else None},
        "espeak_reference": espeak,
        "variants": variants,
        "free_running": {"what": "torch FP32 free-running to the stop token (= variants.torch-fp32)",
                         "asr": variants["torch-fp32"]["asr"]},
        "teacher_forced": tf,
        "ceiling": ceiling,
        "gates": gates(variants),
        "targets": {"intelligibility_cer": {
            "target": f"FP32 free-running CER ({'lm' if 'cer' in fp32 else 'greedy'}) <= "
                      f"{INTELLIGIBILITY_TARGET_CER:.0%}", "value": fp32_cer,
            "met": fp32_cer <= INTELLIGIBILITY_TARGET_CER,
            "missed_by_points": max(0.0, (fp32_cer - INTELLIGIBILITY_TARGET_CER) * 100)}},
        "per_sentence": [
            {"text": t, **{f"frames_{n}": int(r[i].frames) for n, r in outputs.items()},
             **({"reference_frames": int(len(ref_frames[i]))} if ref_frames is not None else {}),
             **{f"heard_{n}": h[i] for n, h in transcripts.items()}}
            for i, t in enumerate(texts)],
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    report["summary_lines"] = summary_lines(report)
    if cfg.write:
        out = Path(cfg.out_dir)
        write_json(out / "tts_quality.json", report)
        write_text(out / "tts_quality.md", markdown(report))
    return report


def _dnsmos(cfg: QualityConfig, log: Log):
    from speechtrt.tts.dnsmos import DNSMOS

    return DNSMOS(threads=cfg.threads or 1)


def _small(meta: dict) -> dict:
    """The checkpoint's meta without its bulky parts (training history, data listings)."""
    keep = ("train_minutes_total", "steps", "epochs", "best_free_greedy_cer", "dev")
    return {k: meta[k] for k in keep if k in (meta or {})}
