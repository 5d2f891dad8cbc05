"""Batched ASR evaluation: checkpoints × backends × precisions on a manifest, scored per dialect with honest
statistics, timed after warm-up, written as JSON + Markdown + PNG.

Flow: read the manifest and load every usable utterance once (bad inputs are counted, listed and skipped or
repaired, never fatal) → 80-bin log-mel with the shared front end → for each variant, length-bucketed padded
batches through the backend → greedy CTC, and the primary decoder: the n-gram beam search of
:mod:`speechtrt.asr.lm` (default) or the lexicon pass of :mod:`speechtrt.asr.decode` → one alignment per
utterance (:mod:`speechtrt.asr.metrics`) → corpus WER/CER with speaker-bootstrap intervals, paired model tests,
dialect tests with Holm correction (:mod:`speechtrt.asr.stats`).

Timing: compute = backend forward + greedy decode, summed over batches after one untimed warm-up batch; RTF =
compute / audio, RTFx = audio / compute. The beam search's time is reported on its own (``decode_seconds``,
``rtfx_with_decoder``): it is single-threaded Python and the same for every backend. An utterance's latency is the
time of the batch that carried it (what a caller waiting for that transcript sees in offline batch mode). Memory:
peak resident set size sampled during the variant's run (CPU), or peak CUDA allocation on a GPU.

The seed's per-utterance loop (batch 1, per-token ``.item()`` CTC decode) runs on the same utterances in the same
process with the same thread count, so the batched speed-up is measured, not assumed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import platform
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from speechtrt.asr import stats
from speechtrt.asr.data import Utterance, read_manifest
from speechtrt.asr.decode import Lexicon, greedy_batch, training_lexicon
from speechtrt.asr.lm import SEARCH_COLUMNS
from speechtrt.asr.metrics import (UtteranceErrors, breakdown, corpus_score, espeak_ipa, frequency_bin, length_bin,
                                   phoneme_class, score_pair, word_class)
from speechtrt.asr.normalize import normalize_text
from speechtrt.errors import InputError
from speechtrt.models.audio import FEATURES, log_mel, read_wav, resample

BACKENDS = ("torch", "ort", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
SILENCE_PEAK = 1e-3  # peak |sample| below this (−60 dBFS) counts as silence
WER_TOLERANCE = 0.01  # selection rule: variants within 1 WER point of the best count as equally accurate


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run. ``decoder`` picks the primary transcript (``lm``, ``lexicon`` or ``greedy``); greedy is
    always scored too. ``lm_alpha``/``lm_beta`` weigh the language model when ``tune_on`` (a development manifest,
    never the test set) is not given; with it they are chosen there by grid search."""

    manifest: str
    checkpoints: tuple[str, ...]
    backends: tuple[str, ...] = ("torch", "ort")
    precisions: tuple[str, ...] = ("fp32", "int8")
    decoder: str = "lm"
    lm_order: int = 3
    lm_alpha: float = 0.8
    lm_beta: float = 3.0
    beam: int = 16
    tune_on: str | None = None
    calib_manifest: str | None = None  # static INT8 activation ranges (default: tune_on); none: dynamic INT8
    batch_frames: int | None = None  # None: 2000 on a CPU, 64000 on a GPU (see auto_batch_frames)
    n_boot: int = 1000
    seed: int = 0
    out_dir: str = "reports"
    seed_loop: bool = True
    threads: int = 1
    text_source: str | None = None
    plots: bool = True
    trim_classifier: bool = True  # ORT/TRT compute only the decoders' classes when the dev set shows it is safe


TRIM_TOLERANCE_NATS = 1e-3
"""Largest dropped log-mass (nats) on the development set for which ORT/TRT graphs compute only the classes the
decoders read: every kept log-probability then moves by at most this much (0.1 % in probability)."""


# ---------------------------------------------------------------- inputs


@dataclass
class Prepared:
    """An utterance ready for every model: normalised reference, features and the repairs applied."""

    index: int
    row: Utterance
    reference: str
    features: torch.Tensor  # [T, 80]
    seconds: float
    repairs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InputProblem:
    """One manifest line or utterance that was refused (``action='skipped'``) or repaired (``'repaired'``)."""

    index: int
    audio_filepath: str
    problem: str
    action: str
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def prepare_inputs(manifest: str | Path, workers: int = 1) -> tuple[list[Prepared], list[InputProblem]]:
    """Load every utterance of ``manifest``; return the usable ones (in manifest order) and every problem met.

    Refused (skipped, listed): bad manifest line, missing file, unreadable file, empty reference, silence, audio
    shorter than one 25 ms window. Repaired (kept, listed): stereo (averaged to mono), a sample rate other than
    16 kHz (polyphase-resampled to 16 kHz). Features run with one torch thread whatever the run's thread count (one
    utterance is too small to split: intra-op threads made the 480-utterance test set take 0.8 s instead of 0.3 s
    on 2 threads), in ``workers`` threads over utterances (measured on 2 cores: 0.23 s against 0.25 s serial; small,
    because these short torch calls mostly run one at a time).
    """
    rows, line_problems = read_manifest(manifest)
    root = Path(manifest).parent
    problems = [InputProblem(p.line, "", "bad_manifest_line", "skipped", p.reason) for p in line_problems]
    intra_op = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers > 1 and len(rows) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda ir: _prepare_one(ir[0], ir[1], root), enumerate(rows)))
        else:
            results = [_prepare_one(i, row, root) for i, row in enumerate(rows)]
    finally:
        torch.set_num_threads(intra_op)
    prepared = []
    for item, found in results:
        problems.extend(found)
        if item is not None:
            prepared.append(item)
    return prepared, problems


def _prepare_one(i: int, row: Utterance, root: Path) -> tuple[Prepared | None, list[InputProblem]]:
    """One manifest row: its :class:`Prepared` utterance (``None`` when refused) and the problems met."""
    path = row.path(root)

    def refuse(kind: str, detail: str) -> tuple[None, list[InputProblem]]:
        return None, [*found, InputProblem(i, row.audio_filepath, kind, "skipped", detail)]

    found: list[InputProblem] = []
    if not path.is_file():
        return refuse("missing_audio", f"{path} does not exist")
    try:
        samples, rate = read_wav(path)
    except InputError as exc:
        return refuse("unreadable_audio", str(exc))
    repairs = []
    if samples.ndim == 2:
        found.append(InputProblem(i, row.audio_filepath, "stereo", "repaired",
                                  f"{samples.shape[1]} channels averaged to mono"))
        repairs.append("downmixed")
        samples = samples.mean(axis=1)
    if rate != FEATURES.sample_rate:
        found.append(InputProblem(i, row.audio_filepath, "wrong_sample_rate", "repaired",
                                  f"{rate} Hz resampled to {FEATURES.sample_rate} Hz"))
        repairs.append("resampled")
        samples = resample(samples, rate, FEATURES.sample_rate)
    reference = normalize_text(row.text)
    if not reference:
        return refuse("empty_reference", f"reference {row.text!r} is empty after normalisation")
    if samples.size < FEATURES.n_fft:
        return refuse("too_short", f"{samples.size} samples, fewer than one {FEATURES.n_fft}-sample window")
    peak = float(np.max(np.abs(samples)))
    if peak < SILENCE_PEAK:
        return refuse("silence", f"peak {peak:.1e} below {SILENCE_PEAK:g} (−60 dBFS)")
    return Prepared(i, row, reference, log_mel(samples), samples.size / FEATURES.sample_rate, repairs), found


def length_buckets(lengths: list[int], batch_frames: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches with ``longest × count ≤ batch_frames`` (at least one each)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur = [], []
    for i in order:
        if cur and lengths[i] * (len(cur) + 1) > batch_frames:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def auto_batch_frames() -> int:
    """Padded frames per batch. On a CPU the convolution front end is fastest on cache-sized batches (measured on
    the small model, 1 thread: 2000 frames 3.3 s, 16000 frames 6.2 s for the same 72 utterances); a GPU wants
    large batches."""
    return 64000 if torch.cuda.is_available() else 2000


def pad_batch(feats: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([f.shape[0] for f in feats], dtype=np.int64)
    x = np.zeros((len(feats), int(lengths.max()), feats[0].shape[1]), dtype=np.float32)
    for i, f in enumerate(feats):
        x[i, : f.shape[0]] = f.numpy()
    return x, lengths


# ---------------------------------------------------------------- backends


class BackendUnavailable(Exception):
    """A backend/precision pair that cannot run here; the message says why (it goes into the report)."""


Runner = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def make_runner(model: torch.nn.Module, backend: str, precision: str, workdir: Path, threads: int = 1,
                calibration: list[np.ndarray] | None = None, max_shape: tuple[int, int] | None = None,
                columns: np.ndarray | None = None) -> Runner:
    """A function ``(features [B,T,80] float32, lengths [B] int64) -> (log_probs [B,T',V], out_lengths [B])``.

    torch: FP32; INT8 = dynamic quantization of LSTM and Linear weights (``torch.ao``); FP16 on CUDA only.
    ort: the model's exported graph (``export_component``); INT8 = static QDQ quantization
    (:func:`quantize_int8_static`) calibrated on ``calibration`` (padded feature batches, never the test set), or
    ONNX Runtime's dynamic quantization when no calibration is given;
    FP16 = the graph converted to FP16 with FP32 inputs/outputs. The streaming model runs its step graph once over
    the whole utterance from zero state, which equals its offline pass. trt: a plan of this checkpoint compiled in
    the run for the GPU present (:func:`build_trt_plan`, profile up to ``max_shape`` = (rows, frames) of the
    largest batch), run by :class:`~speechtrt.runtime.trt.TrtRunner`; needs a CUDA GPU.

    ``columns`` (ort and trt): compute only these token ids (:func:`~speechtrt.models.asr.trim_classifier`); the
    runner's log-probabilities then have one column per id and the runner carries ``columns`` to map them back.
    Raises :class:`BackendUnavailable` with the reason when the pair cannot run here.
    """
    streaming = model.config.size == "stream"
    if backend == "torch":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if precision == "fp32":
            import copy

            net = (model if device == "cpu" else copy.deepcopy(model).to(device)).float().eval()
        elif precision == "int8":
            if device != "cpu":
                raise BackendUnavailable("torch dynamic INT8 quantization runs on the CPU only")
            import copy

            import warnings

            with warnings.catch_warnings():  # torch's deprecation notice for quantized tensor creation
                warnings.simplefilter("ignore")
                net = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(),
                                                             {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
        elif precision == "fp16":
            if device == "cpu":
                raise BackendUnavailable("torch FP16 needs a CUDA GPU (CPU LSTM kernels have no fast FP16 path)")
            import copy

            net = copy.deepcopy(model).half().to(device).eval()
        else:
            raise BackendUnavailable(f"unknown precision {precision}")
        dtype = torch.float16 if precision == "fp16" else torch.float32

        def run_torch(x, lengths):
            with torch.inference_mode():
                lp, ol = net(torch.from_numpy(x).to(device, dtype), torch.from_numpy(lengths).to(device))
                if device == "cuda":
                    torch.cuda.synchronize()
                return lp.float().cpu().numpy(), ol.cpu().numpy()

        return run_torch
    if backend not in ("ort", "trt"):
        raise BackendUnavailable(f"unknown backend {backend}")
    if columns is not None:
        from speechtrt.models.asr import trim_classifier

        model = trim_classifier(model, columns)
    if backend == "ort":
        run = _ort_runner(model, precision, workdir, threads, streaming, calibration)
    else:
        run = _trt_runner(model, precision, workdir / "trt", streaming, calibration, max_shape)
    run.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
    return run


def graph_component(model):
    """The exported graph of ``model``: its size's component, with the classifier's width as the model has it
    (narrower after :func:`~speechtrt.models.asr.trim_classifier`)."""
    import dataclasses

    from speechtrt.export.components import component

    comp = component("asr_stream_step" if model.config.size == "stream" else f"asr_{model.config.size}")
    width = model.classifier.out_features
    outputs = tuple(dataclasses.replace(o, shape=(*o.shape[:-1], width)) if o.name == "log_probs" else o
                    for o in comp.outputs)
    return dataclasses.replace(comp, outputs=outputs)


def _calibration_feeds(model, calibration: list[np.ndarray], streaming: bool) -> list[dict[str, np.ndarray]]:
    """The graph's input feeds for each padded calibration batch (every row full length)."""
    feeds = []
    for x in calibration:
        lengths = np.full((x.shape[0],), x.shape[1], np.int64)
        feeds.append(_stream_feeds(model, x) if streaming else {"features": x, "feature_lengths": lengths})
    return feeds


def build_trt_plan(model, precision: str, out_dir: Path, calibration: list[np.ndarray] | None,
                   max_shape: tuple[int, int], gpu, backend=None) -> Path:
    """Compile ``model`` (a loaded checkpoint) into a TensorRT plan for ``gpu`` (a :class:`GpuArch`) under
    ``out_dir``: the same steps as ``speechtrt export`` → ``calibrate`` → ``build``, on this checkpoint's weights.

    FP32 builds the exported graph; FP16 and INT8 build the ModelOpt graphs ``speechtrt calibrate`` makes (AutoCast
    FP16, INT8 Q/DQ), calibrated on ``calibration`` (never the test set). The profile covers 1 … ``max_shape``
    (rows, frames), the largest batch the run will send. ``backend`` defaults to the installed TensorRT flavour that
    can target ``gpu`` (TensorRT-RTX compiles on a CPU too). Raises :class:`BackendUnavailable` with the reason.
    """
    from speechtrt.engines.builder import BuildSettings, EngineBuilder
    from speechtrt.errors import SpeechTRTError
    from speechtrt.export.components import DimRange
    from speechtrt.export.onnx import export_component
    from speechtrt.quantize.precision import make_fp16, make_int8

    streaming = model.config.size == "stream"
    comp = graph_component(model)
    rows, frames = max(1, max_shape[0]), max(4, max_shape[1])
    time_dim = "chunk" if streaming else "frames"
    shapes = (DimRange("batch", 1, rows, rows), DimRange(time_dim, 1, max(1, frames // 2), frames))
    try:
        if not (out_dir / f"{comp.name}.onnx").exists():
            export_component(comp, model, out_dir, check=False)
        if precision in ("fp16", "int8"):
            if not calibration:
                raise BackendUnavailable(f"a TensorRT {precision.upper()} plan is built from a calibrated graph: "
                                         "give a development set (--tune-on or --calib-manifest)")
            feeds = _calibration_feeds(model, calibration, streaming)
            if precision == "fp16":
                make_fp16(comp, out_dir, feeds)
            else:
                make_int8(comp, out_dir, feeds)
        builder = EngineBuilder(BuildSettings(gpu, engines_dir=out_dir / "engines", shapes=shapes), backend=backend)
        return builder.build(comp.name, precision, out_dir).plan
    except SpeechTRTError as exc:
        raise BackendUnavailable(f"cannot build the TensorRT {precision} plan: {str(exc).splitlines()[0][:300]}")


def _trt_runner(model, precision: str, out_dir: Path, streaming: bool, calibration: list[np.ndarray] | None,
                max_shape: tuple[int, int] | None) -> Runner:
    from speechtrt.engines.arch import arch_for_capability, current_device
    from speechtrt.errors import SpeechTRTError
    from speechtrt.runtime.trt import TrtRunner

    gpu = current_device() if torch.cuda.is_available() else None
    if gpu is None:
        raise BackendUnavailable("TensorRT plans run on a CUDA GPU and none is present here (`speechtrt build` "
                                 "still compiles them on a CPU with TensorRT-RTX)")
    arch = arch_for_capability(gpu.major, gpu.minor)
    if arch is None:
        raise BackendUnavailable(f"no TensorRT target is listed for {gpu.name} ({gpu.sm})")
    plan = build_trt_plan(model, precision, out_dir, calibration, max_shape or (64, 3000), arch)
    try:
        trt = TrtRunner(plan, "cuda")
    except SpeechTRTError as exc:
        raise BackendUnavailable(f"cannot load the TensorRT plan {plan.name}: {str(exc).splitlines()[0][:300]}")

    def run(x, lengths):
        if streaming:
            feeds = {k: torch.from_numpy(v).cuda() for k, v in _stream_feeds(model, x).items()}
            lp = trt.infer(feeds)["log_probs"]
            half = (lengths + 1) // 2
            out_lengths = (half + 1) // 2
        else:
            outs = trt.infer({"features": torch.from_numpy(x).cuda(),
                              "feature_lengths": torch.from_numpy(lengths).cuda()})
            lp, out_lengths = outs["log_probs"], outs["output_lengths"].cpu().numpy()
        log_probs = lp.float().cpu().numpy()  # copies out of the context's buffers before the next call
        return log_probs, np.asarray(out_lengths, dtype=np.int64)

    return run


def _stream_feeds(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Streaming-step feeds for whole utterances: features plus the zero start state for every row."""
    state = {k: v.numpy() for k, v in model.initial_state(1).items()}
    b = x.shape[0]
    return {"features": x, **{k: np.repeat(v, b, axis=1 if k in ("h", "c") else 0) for k, v in state.items()}}


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizer logs advice on the root logger for every graph; keep the console for results."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


STATIC_INT8_OPS = ["Conv", "MatMul", "Gemm", "Relu", "Mul"]
"""Operator types :func:`quantize_int8_static` quantizes statically (the LSTMs are quantized dynamically)."""


def quantize_int8_static(fp32: Path, out: Path, calibration: list[dict[str, np.ndarray]]) -> Path:
    """ONNX Runtime INT8: static QDQ for Conv/MatMul/Gemm (per-channel symmetric INT8 weights, asymmetric UINT8
    activations whose ranges (min/max) come from ``calibration`` feeds) and for the ReLUs and padding-mask
    multiplies between them, so the front end stays in INT8 from the first convolution to the projection (ReLU
    fused into QLinearConv, the mask a QLinearMul: 14 % less CPU time for the small model than Conv/MatMul/Gemm
    alone, measured on one thread); then the LSTMs' weights dynamically quantized (``DynamicQuantizeLSTM``: INT8
    weights, activations quantized per call), which halves their CPU time. The graph is pre-processed (shape
    inference, fusions) first when ONNX Runtime's pre-processor accepts it."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration)

        def get_next(self):
            return next(self._it, None)

    with _quiet_root_logger():
        source = fp32
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = out.with_suffix(".pre.onnx")
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception:  # pre-processing is an optimisation; quantize the plain graph when it refuses
            source = fp32
        static = out.with_suffix(".static.onnx")
        quantize_static(str(source), str(static), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=STATIC_INT8_OPS)
        if any(n.op_type == "LSTM" for n in onnx.load(str(static), load_external_data=False).graph.node):
            quantize_dynamic(str(static), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
        else:
            static.replace(out)
    return out


def _ort_runner(model, precision: str, workdir: Path, threads: int, streaming: bool,
                calibration: list[np.ndarray] | None = None) -> Runner:
    from speechtrt.export.onnx import export_component
    from speechtrt.export.parity import ort_session

    comp = graph_component(model)
    fp32 = workdir / f"{comp.name}.onnx"
    if not fp32.exists():
        export_component(comp, model, workdir, check=False)
    path = fp32
    if precision == "int8" and calibration:
        path = workdir / f"{comp.name}.int8-static.onnx"
        if not path.exists():
            quantize_int8_static(fp32, path, _calibration_feeds(model, calibration, streaming))
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = workdir / f"{comp.name}.int8-dynamic.onnx"
        if not path.exists():
            with _quiet_root_logger():
                quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    elif precision == "fp16":
        try:
            import onnx
            from onnxconverter_common import float16
        except ImportError:
            raise BackendUnavailable("ORT FP16 needs onnxconverter-common (pip install onnxconverter-common)")
        path = workdir / f"{comp.name}.fp16.onnx"
        if not path.exists():
            onnx.save(float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(path))
    try:
        sess = ort_session(path, threads=threads)
    except Exception as exc:  # e.g. no FP16 LSTM kernel on the CPU provider
        raise BackendUnavailable(f"ONNX Runtime cannot load the {precision} graph: {str(exc).splitlines()[0][:200]}")

    if streaming:
        def run_stream(x, lengths):
            lp = sess.run(["log_probs"], _stream_feeds(model, x))[0]
            half = (lengths + 1) // 2
            return lp, (half + 1) // 2

        run = run_stream
    else:
        def run(x, lengths):
            lp, ol = sess.run(["log_probs", "output_lengths"], {"features": x, "feature_lengths": lengths})
            return lp, ol

    try:
        run(np.zeros((1, 64, FEATURES.n_mels), np.float32), np.array([64], np.int64))
    except Exception as exc:
        raise BackendUnavailable(f"ONNX Runtime cannot run the {precision} graph: {str(exc).splitlines()[0][:200]}")
    return run


# ---------------------------------------------------------------- running


class PeakRSS:
    """Samples this process's resident set size every 5 ms while active; ``peak_mb`` after exit."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _loop(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


@dataclass
class VariantRun:
    hypotheses: list[str]  # greedy, per prepared utterance
    log_probs: list[np.ndarray] | None  # per utterance [T', 1 + alphabet] (the columns the beam search reads)
    latency_s: list[float]  # per prepared utterance: its batch's compute time
    compute_s: float
    batches: int
    peak_memory_mb: float


def run_batched(runner: Runner, prepared: list[Prepared], batch_frames: int, keep_log_probs: bool = False
                ) -> VariantRun:
    """Length-bucketed batches through ``runner`` with one untimed warm-up batch; greedy transcripts per utterance
    (and, with ``keep_log_probs``, each utterance's log-probabilities for a later beam search, kept untimed)."""
    batches = length_buckets([p.features.shape[0] for p in prepared], batch_frames)
    columns = getattr(runner, "columns", None)
    # the columns the beam search reads, as positions in this runner's output
    search = SEARCH_COLUMNS if columns is None else np.array([list(columns).index(c) for c in SEARCH_COLUMNS])
    hyps = [""] * len(prepared)
    kept: list[np.ndarray] | None = [None] * len(prepared) if keep_log_probs else None
    latency = [0.0] * len(prepared)
    x, n = pad_batch([prepared[i].features for i in batches[len(batches) // 2]])
    runner(x, n)  # warm-up
    total = 0.0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as mem:
        for ids in batches:
            x, n = pad_batch([prepared[i].features for i in ids])
            t0 = time.perf_counter()
            log_probs, out_lengths = runner(x, n)
            texts = greedy_batch(log_probs, out_lengths, columns)
            dt = time.perf_counter() - t0
            total += dt
            for i, t in zip(ids, texts):
                hyps[i], latency[i] = t, dt
            if kept is not None:
                for row, (i, n) in enumerate(zip(ids, out_lengths)):
                    kept[i] = np.ascontiguousarray(log_probs[row, : int(n)][:, search], dtype=np.float32)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else mem.peak_mb
    return VariantRun(hyps, kept, latency, total, len(batches), peak)


def seed_loop(model: torch.nn.Module, prepared: list[Prepared], manifest_root: Path) -> dict:
    """The seed's evaluation loop on the same utterances: one at a time, features computed inside the loop,
    batch-1 forward, per-token ``.item()`` CTC decoding, per-utterance scoring.

    Returns transcripts, ``compute_seconds`` (forward + decode, after one warm-up utterance), ``end_to_end_seconds``
    (read + features + forward + decode + score) and per-utterance batch-1 latencies in ms.
    """
    from speechtrt.models.text import asr_decode

    def decode(log_probs, lengths):
        out = []
        for i in range(log_probs.size(0)):
            seq = log_probs[i, : lengths[i].item()].argmax(dim=-1)
            decoded, prev = [], -1
            for token in seq:
                token = token.item()
                if token != prev and token != 0:
                    decoded.append(token)
                prev = token
            out.append(asr_decode(decoded))
        return out

    model = model.float().eval()
    with torch.no_grad():
        f = prepared[0].features
        model(f[None], torch.tensor([f.shape[0]]))
    texts, compute, latency = [], 0.0, []
    t_start = time.perf_counter()
    for p in prepared:
        samples, rate = read_wav(p.row.path(manifest_root))
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        x = log_mel(resample(samples, rate, FEATURES.sample_rate))[None]
        t0 = time.perf_counter()
        with torch.no_grad():
            lp, ol = model(x, torch.tensor([x.shape[1]]))
            texts.append(decode(lp, ol)[0])
        dt = time.perf_counter() - t0
        compute += dt
        latency.append(dt * 1000)
        score_pair(p.reference, texts[-1])
    return {"texts": texts, "compute_seconds": compute, "end_to_end_seconds": time.perf_counter() - t_start,
            "latency_ms": latency}


# ---------------------------------------------------------------- scoring


@dataclass
class Scored:
    name: str
    model: str
    checkpoint: str
    backend: str
    precision: str
    hypotheses: list[str]  # primary decoder
    errors: list[UtteranceErrors]  # primary decoder
    greedy_errors: list[UtteranceErrors]
    run: VariantRun
    score_seconds: float = 0.0
    decode_seconds: float = 0.0
    fidelity: dict | None = None  # against the same model's torch FP32 run


def _rate(errors: list[UtteranceErrors]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([e.word_errors for e in errors]), np.array([e.ref_words for e in errors]),
            np.array([e.char_errors for e in errors]), np.array([e.ref_chars for e in errors]))


def summarize(errors: list[UtteranceErrors], speakers: list[str], n_boot: int, seed: int) -> dict:
    """Corpus WER/CER, S/D/I, and speaker-bootstrap 95 % intervals for both rates."""
    we, ww, ce, cw = _rate(errors)
    score = corpus_score(errors).to_json()
    wci = stats.bootstrap_ratio_ci(we, ww, speakers, n_boot=n_boot, seed=seed)
    cci = stats.bootstrap_ratio_ci(ce, cw, speakers, n_boot=n_boot, seed=seed)
    return {**score, "ci95": wci.to_json(), "cer_ci95": cci.to_json(), "speakers": wci.clusters}


def evaluate(cfg: EvalConfig, log=print) -> dict:
    """Run the whole evaluation; write ``asr_eval.json``, ``asr_eval.md`` and plots under ``cfg.out_dir``.

    Returns the report dict. Bad inputs never stop the run; a manifest with no usable utterance raises
    :class:`InputError` (there is nothing to score).
    """
    from speechtrt.models.checkpoints import load_checkpoint

    torch.set_num_threads(cfg.threads)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_prep = time.perf_counter()
    prepared, problems = prepare_inputs(cfg.manifest, workers=cfg.threads)
    prep_s = time.perf_counter() - t_prep
    for p in problems:
        log(f"input {p.action}: #{p.index} {p.audio_filepath or '(manifest)'}: {p.problem} ({p.detail})")
    if not prepared:
        raise InputError(f"manifest {cfg.manifest} has no usable utterance ({len(problems)} problems); see above")
    speakers = [p.row.speaker for p in prepared]
    dialects = sorted({p.row.dialect for p in prepared})
    refs = [p.reference for p in prepared]
    audio_s = sum(p.seconds for p in prepared)
    log(f"{len(prepared)} utterances, {audio_s / 60:.1f} min audio, {len(dialects)} dialects, "
        f"{len(set(speakers))} speakers; {len(problems)} input problem(s)")

    lexicon = training_lexicon(cfg.text_source) if cfg.decoder in ("lexicon", "lm") else None
    dev = load_dev_set(cfg.tune_on, refs, "development") if cfg.tune_on else None
    decoder = None
    if cfg.decoder == "lm":
        decoder = LMDecoder.prepare(cfg, refs, dev, log)
    if cfg.calib_manifest and cfg.calib_manifest != cfg.tune_on:
        calib, calib_source = load_dev_set(cfg.calib_manifest, refs, "calibration"), cfg.calib_manifest
    else:
        calib, calib_source = dev, cfg.tune_on
    calibration = calibration_batches(calib, calib_source, log) if calib else None

    # the language models and lexicon are large and live to the end: keep the cyclic collector from walking them
    # again and again inside timed sections (one full pass over them took ~0.15 s)
    gc.collect()
    gc.freeze()
    batch_frames = cfg.batch_frames or auto_batch_frames()
    largest = max(length_buckets([p.features.shape[0] for p in prepared], batch_frames), key=len)
    max_shape = (len(largest), max(p.features.shape[0] for p in prepared))  # TensorRT profile: rows, frames
    variants: list[Scored] = []
    skipped = []
    classifiers: dict[str, dict] = {}
    seed_speed = None
    with tempfile.TemporaryDirectory(prefix="speechtrt-eval-") as tmp:
        for ckpt in cfg.checkpoints:
            model, meta = load_checkpoint(ckpt)
            model_name = f"asr-{model.config.size}" if Path(ckpt).stem == f"asr-{model.config.size}" else Path(ckpt).stem
            workdir = Path(tmp) / model_name
            workdir.mkdir(parents=True, exist_ok=True)
            trimmable = cfg.trim_classifier and any(b in ("ort", "trt") for b in cfg.backends)
            classifiers[model_name] = classifier_trim(model, calib, calib_source, trimmable, batch_frames)
            columns = SEARCH_COLUMNS if classifiers[model_name]["trimmed"] else None
            log(f"{model_name} classifier: {classifiers[model_name]['note']}")
            reference = None  # this model's torch FP32 run: the fidelity reference of its other variants
            for backend in cfg.backends:
                for precision in cfg.precisions:
                    name = f"{model_name}/{backend}/{precision}"
                    try:
                        runner = make_runner(model, backend, precision, workdir, cfg.threads, calibration, max_shape,
                                             columns if backend in ("ort", "trt") else None)
                    except BackendUnavailable as exc:
                        skipped.append({"variant": name, "reason": str(exc)})
                        log(f"skip {name}: {exc}")
                        continue
                    run = run_batched(runner, prepared, batch_frames, keep_log_probs=True)
                    fidelity = None
                    if backend == "torch" and precision == "fp32":
                        reference = run
                    elif reference is not None:
                        fidelity = compare_runs(run, reference)
                    greedy = run.hypotheses
                    t_score = time.perf_counter()
                    gerrs = [score_pair(r, h) for r, h in zip(refs, greedy)]
                    score_s = time.perf_counter() - t_score
                    t_dec = time.perf_counter()
                    if decoder is not None:
                        primary = decoder.decode(run.log_probs)
                    elif lexicon is not None:
                        primary = [lexicon.correct(h) for h in greedy]
                    else:
                        primary = greedy
                    dec_s = time.perf_counter() - t_dec
                    errs = [score_pair(r, h) for r, h in zip(refs, primary)] if primary is not greedy else gerrs
                    if run is not reference:
                        run.log_probs = None
                    variants.append(Scored(name, model_name, str(ckpt), backend, precision, primary, errs, gerrs, run,
                                           score_s, dec_s, fidelity))
                    log(f"{name}: WER {corpus_score(errs).wer:.3f} (greedy {corpus_score(gerrs).wer:.3f}) "
                        f"RTFx {audio_s / run.compute_s:.1f}")
            if cfg.seed_loop and seed_speed is None:
                batched = next((v for v in variants if v.model == model_name and v.backend == "torch"
                                and v.precision == "fp32"), None)
                if batched is not None:
                    loop = seed_loop(model, prepared, Path(cfg.manifest).parent)
                    ours_e2e = prep_s + batched.run.compute_s + batched.score_seconds
                    seed_speed = {
                        "model": model_name, "utterances": len(prepared), "audio_seconds": audio_s,
                        "threads": cfg.threads,
                        "seed_loop_seconds": loop["compute_seconds"], "batched_seconds": batched.run.compute_s,
                        "speedup": loop["compute_seconds"] / batched.run.compute_s,
                        "seed_loop_end_to_end_seconds": loop["end_to_end_seconds"],
                        "batched_end_to_end_seconds": ours_e2e,
                        "end_to_end_speedup": loop["end_to_end_seconds"] / ours_e2e,
                        "batch1_latency_ms": {"p50": stats.percentile(loop["latency_ms"], 50),
                                              "p95": stats.percentile(loop["latency_ms"], 95)},
                        "identical_transcripts": float(np.mean([a == b for a, b in
                                                                zip(loop["texts"], batched.run.hypotheses)])),
                        "note": ("compute = forward + greedy decode; end to end = reading audio + features + "
                                 "forward + decode + scoring. Both use the same log-mel code: the seed loop inside "
                                 "its loop at the run's torch threads, the batched pipeline once per utterance at "
                                 "one torch thread in --threads worker threads (shared by all variants)"),
                        "batched_features_seconds": prep_s,
                    }
                    fastest = min((v for v in variants if v.model == model_name), key=lambda v: v.run.compute_s)
                    seed_speed["fastest_variant"] = {
                        "variant": fastest.name, "batched_seconds": fastest.run.compute_s,
                        "speedup": loop["compute_seconds"] / fastest.run.compute_s,
                        "end_to_end_speedup": loop["end_to_end_seconds"]
                        / (prep_s + fastest.run.compute_s + fastest.score_seconds),
                        "score_seconds": fastest.score_seconds,
                        "wer": corpus_score(fastest.errors).wer, "fp32_wer": corpus_score(batched.errors).wer,
                        "greedy_transcripts_identical_to_fp32": float(np.mean(
                            [a == b for a, b in zip(fastest.run.hypotheses, batched.run.hypotheses)])),
                    }
                    log(f"seed per-utterance loop {loop['compute_seconds']:.2f} s vs batched "
                        f"{batched.run.compute_s:.2f} s compute ({seed_speed['speedup']:.1f}x); end to end "
                        f"{loop['end_to_end_seconds']:.2f} s vs {ours_e2e:.2f} s "
                        f"({seed_speed['end_to_end_speedup']:.1f}x); "
                        f"fastest variant {fastest.name} {fastest.run.compute_s:.2f} s "
                        f"({seed_speed['fastest_variant']['speedup']:.1f}x)")

    report = build_report(cfg, prepared, problems, variants, skipped, seed_speed, lexicon, audio_s, log)
    report["decoder"] = decoder_summary(cfg, lexicon, decoder, refs)
    report["classifier"] = classifiers
    report["quantization"] = {
        "ort_int8": (f"static QDQ ({'/'.join(STATIC_INT8_OPS)}, per-channel INT8 weights, UINT8 activations) "
                     f"calibrated on {len(calibration)} batches of {cfg.calib_manifest or cfg.tune_on}, LSTM weights dynamic INT8"
                     if calibration else "ONNX Runtime dynamic INT8 (no calibration manifest given)"),
        "torch_int8": "torch.ao dynamic INT8 of LSTM and Linear weights",
    }
    gc.unfreeze()
    write_outputs(report, out_dir, cfg.plots)
    return report


def classifier_trim(model, dev: list[Prepared] | None, source: str | None, enabled: bool,
                    batch_frames: int) -> dict:
    """Whether ORT/TRT variants of ``model`` compute only the decoders' classes (blank + alphabet), decided on the
    development set: allowed when the torch model puts at most :data:`TRIM_TOLERANCE_NATS` of log-mass outside them
    on every dev frame (then no kept log-probability moves by more). Never decided on the test set."""
    from speechtrt.models.asr import dropped_log_mass

    width = model.classifier.out_features
    entry = {"classes": width, "kept": len(SEARCH_COLUMNS), "tolerance_nats": TRIM_TOLERANCE_NATS, "trimmed": False}
    if not enabled:
        return {**entry, "note": f"all {width} classes computed (--full-classifier, or no ORT/TRT variant)"}
    if not dev:
        return {**entry, "note": f"all {width} classes computed: trimming is decided on a development set "
                                 "(--tune-on or --calib-manifest) and none was given"}
    batches = []
    for ids in length_buckets([p.features.shape[0] for p in dev], batch_frames):
        batches.append(pad_batch([dev[i].features for i in ids]))
    mass = dropped_log_mass(model, batches, SEARCH_COLUMNS)
    trimmed = mass <= TRIM_TOLERANCE_NATS
    verdict = (f"ORT/TRT compute {len(SEARCH_COLUMNS)} of {width} classes" if trimmed
               else f"all {width} classes computed")
    return {**entry, "trimmed": trimmed, "dropped_log_mass_nats": mass, "measured_on": source,
            "note": f"{verdict} (largest log-mass outside the decoders' classes on {source}: {mass:.2g} nats; "
                    f"tolerance {TRIM_TOLERANCE_NATS:g})"}


def compare_runs(run: "VariantRun", reference: "VariantRun") -> dict:
    """How far a variant's outputs are from its model's torch FP32 run on the same utterances: the largest and the
    mean absolute difference of the log-probabilities the decoders read, and the share of identical greedy
    transcripts."""
    worst, total, count = 0.0, 0.0, 0
    for a, b in zip(run.log_probs, reference.log_probs):
        n = min(len(a), len(b))
        d = np.abs(a[:n] - b[:n])
        if d.size:
            worst = max(worst, float(d.max()))
            total += float(d.sum())
            count += d.size
    same = float(np.mean([a == b for a, b in zip(run.hypotheses, reference.hypotheses)]))
    return {"reference": "torch/fp32", "max_abs_logprob_diff": worst, "mean_abs_logprob_diff": total / max(count, 1),
            "greedy_identical": same}


def load_dev_set(manifest: str, test_refs: list[str], role: str) -> list[Prepared]:
    """The usable utterances of a ``role`` (development / calibration) manifest. Refused when it has none or shares
    a sentence with the test set: tuning and calibration must not see the test data."""
    prepared, _ = prepare_inputs(manifest)
    if not prepared:
        raise InputError(f"{role} manifest {manifest} has no usable utterance")
    shared = {p.reference for p in prepared} & set(test_refs)
    if shared:
        raise InputError(f"{role} manifest {manifest} shares {len(shared)} sentence(s) with the test manifest: use a "
                         "set made with `speechtrt data synth --split dev --exclude <training manifest>`")
    return prepared


def calibration_batches(prepared: list[Prepared], source: str, log=print, max_batches: int = 16,
                        batch_frames: int = 2000) -> list[np.ndarray]:
    """Up to ``max_batches`` padded feature batches of ``prepared`` (from ``source``) for static INT8 calibration,
    spread over the length buckets."""
    batches = length_buckets([p.features.shape[0] for p in prepared], batch_frames)
    step = max(1, len(batches) // max_batches)
    out = [pad_batch([prepared[i].features for i in ids])[0] for ids in batches[::step][:max_batches]]
    log(f"static INT8 calibration: {len(out)} batches from {source}")
    return out


@dataclass
class LMDecoder:
    """The n-gram beam search with its language model and weights (tuned on a development set when asked)."""

    lm: "NGramLM"
    beam: "BeamConfig"
    tuning: dict | None

    @classmethod
    def prepare(cls, cfg: EvalConfig, test_refs: list[str], dev: list[Prepared] | None, log=print) -> "LMDecoder":
        """The decoder for ``cfg``; with ``dev`` (the ``tune_on`` utterances) its weights are grid-searched there."""
        from speechtrt.asr.lm import BeamConfig, training_lm, tune_weights
        from speechtrt.models.checkpoints import load_checkpoint

        lm = training_lm(cfg.text_source, order=cfg.lm_order)
        overlap = sum(r in lm.training_sentences for r in set(test_refs))
        if overlap:
            log(f"warning: {overlap} test reference(s) are sentences of the language model's text; the test set "
                "should come from the held-out split (speechtrt data synth --split test)")
        beam = BeamConfig(alpha=cfg.lm_alpha, beta=cfg.lm_beta, beam=cfg.beam)
        tuning = None
        if dev:
            dev_refs = [p.reference for p in dev]
            model, _ = load_checkpoint(cfg.checkpoints[0])
            with tempfile.TemporaryDirectory(prefix="speechtrt-tune-") as tmp:
                run = run_batched(make_runner(model, "torch", "fp32", Path(tmp), cfg.threads), dev,
                                  cfg.batch_frames or auto_batch_frames(), keep_log_probs=True)
            tune_lm = training_lm(cfg.text_source, order=cfg.lm_order, exclude=dev_refs)
            log(f"tuning the decoder's weights on {len(dev)} development utterances ({cfg.tune_on}) with "
                f"{cfg.checkpoints[0]}; language model without their sentences:")
            result = tune_weights(run.log_probs, dev_refs, tune_lm, beam=max(4, cfg.beam // 2), log=log)
            beam = BeamConfig(alpha=result["alpha"], beta=result["beta"], beam=cfg.beam)
            tuning = {"manifest": cfg.tune_on, "utterances": len(dev),
                      "checkpoint": cfg.checkpoints[0], **result}
            log(f"decoder weights: alpha {beam.alpha}, beta {beam.beta} (dev WER {result['wer']:.4f})")
        return cls(lm, beam, tuning)

    def decode(self, log_probs: list[np.ndarray]) -> list[str]:
        from speechtrt.asr.lm import ctc_beam_search

        return [ctc_beam_search(x, self.lm, self.beam) for x in log_probs]


def decoder_summary(cfg: EvalConfig, lexicon: Lexicon | None, decoder: LMDecoder | None, refs: list[str]) -> dict:
    """What the report says about the primary decoder: its rule, resources and (for the LM) weights and tuning."""
    import speechtrt.asr.decode as lexicon_module
    import speechtrt.asr.lm as lm_module

    out = {"primary": cfg.decoder, "lexicon_words": len(lexicon) if lexicon else None,
           "lexicon_source": lexicon.source if lexicon else None,
           "test_oov_rate": lexicon.oov_rate(refs) if lexicon else None}
    if decoder is not None:
        lm = decoder.lm
        out.update(rule=" ".join((lm_module.__doc__ or "").strip().split("\n\n")[1:3]).replace("\n", " "),
                   lm={"order": lm.order, "vocabulary": len(lm.vocab), "sentences": lm.sentences,
                       "source": lm.source, "test_perplexity": lm.perplexity(refs)},
                   alpha=decoder.beam.alpha, beta=decoder.beam.beta, beam=decoder.beam.beam,
                   tuning=decoder.tuning or {"note": "weights given, not tuned in this run"})
    elif lexicon is not None:
        out["rule"] = (lexicon_module.__doc__ or "").strip().split("\n\n")[1].replace("\n", " ")
    else:
        out["rule"] = "greedy best path"
    return out


def _ranks_for_frequency(lexicon: Lexicon | None, refs: list[str]) -> dict[str, int]:
    counts = lexicon.counts if lexicon else Counter(w for r in refs for w in r.split())
    return {w: i for i, (w, _) in enumerate(counts.most_common())}


def build_report(cfg, prepared, problems, variants, skipped, seed_speed, lexicon, audio_s, log=print) -> dict:
    speakers = [p.row.speaker for p in prepared]
    dialect_of = [p.row.dialect for p in prepared]
    dialects = sorted(set(dialect_of))
    durations = [p.seconds for p in prepared]
    refs = [p.reference for p in prepared]
    ranks = _ranks_for_frequency(lexicon, refs)
    ipa = espeak_ipa({w for r in refs for w in r.split()})

    models: dict[str, dict] = {}
    per_dialect: dict[str, dict] = {d: {} for d in dialects}
    for v in variants:
        s = summarize(v.errors, speakers, cfg.n_boot, cfg.seed)
        g = corpus_score(v.greedy_errors)
        lat = [x * 1000 for x in v.run.latency_s]
        per_utt_wer = [e.wer for e in v.errors]
        models[v.name] = {
            "model": v.model, "checkpoint": v.checkpoint, "backend": v.backend, "precision": v.precision,
            **s, "greedy_wer": g.wer, "greedy_cer": g.cer,
            "rtf": v.run.compute_s / audio_s, "rtfx": audio_s / v.run.compute_s,
            "decode_seconds": v.decode_seconds, "rtfx_with_decoder": audio_s / (v.run.compute_s + v.decode_seconds),
            "compute_seconds": v.run.compute_s, "audio_seconds": audio_s, "batches": v.run.batches,
            "latency_ms": {"p50": stats.percentile(lat, 50), "p95": stats.percentile(lat, 95)},
            "peak_memory_mb": v.run.peak_memory_mb,
            "breakdown": {
                "word_class": breakdown(v.errors, word_class),
                "word_length": breakdown(v.errors, length_bin),
                "word_frequency": breakdown(v.errors, lambda w: frequency_bin(w, ranks)),
                **({"initial_phoneme": breakdown(v.errors, lambda w: phoneme_class(ipa.get(w, "")))} if ipa else {}),
            },
            "wer_vs_duration": stats.spearman(durations, per_utt_wer),
            "fidelity": v.fidelity,
        }
        for d in dialects:
            idx = [i for i, x in enumerate(dialect_of) if x == d]
            per_dialect[d][v.name] = summarize([v.errors[i] for i in idx], [speakers[i] for i in idx],
                                               cfg.n_boot, cfg.seed)

    significance = {"method": stats.METHOD,
                    "model_vs_model": [], "dialect_vs_dialect": {}}
    by_name = {v.name: v for v in variants}
    ref_variants = [v for v in variants if v.backend == "torch" and v.precision == "fp32"] or variants[:1]
    pairs = []
    for i, a in enumerate(ref_variants):
        for b in ref_variants[i + 1:]:
            ea, wa, *_ = _rate(a.errors)
            eb, *_ = _rate(b.errors)
            c = stats.paired_bootstrap(ea, eb, wa, speakers, n_boot=cfg.n_boot, seed=cfg.seed)
            pairs.append({"a": a.name, "b": b.name, **c.to_json()})
    for row, adj in zip(pairs, stats.holm([p["p_bootstrap"] for p in pairs])):
        row["p_holm"] = adj
        row["significant"] = adj < 0.05
    significance["model_vs_model"] = pairs
    for v in ref_variants:
        rows = []
        for i, da in enumerate(dialects):
            for db in dialects[i + 1:]:
                ia = [k for k, x in enumerate(dialect_of) if x == da]
                ib = [k for k, x in enumerate(dialect_of) if x == db]
                e, w, *_ = _rate(v.errors)
                c = stats.independent_bootstrap(e[ia], w[ia], [speakers[k] for k in ia],
                                                e[ib], w[ib], [speakers[k] for k in ib], cfg.n_boot, cfg.seed)
                rows.append({"a": da, "b": db, **c.to_json()})
        for row, adj in zip(rows, stats.holm([r["p_bootstrap"] for r in rows])):
            row["p_holm"] = adj
            row["significant"] = adj < 0.05
        significance["dialect_vs_dialect"][v.name] = rows

    precision_impact = {}
    for v in variants:
        if v.precision == "fp32":
            continue
        base = by_name.get(f"{v.model}/{v.backend}/fp32") or by_name.get(f"{v.model}/torch/fp32")
        if base is None:
            continue
        entry = {"baseline": base.name, "per_dialect": {}}
        e, w, *_ = _rate(v.errors)
        eb, *_ = _rate(base.errors)
        overall = stats.paired_bootstrap(e, eb, w, speakers, n_boot=cfg.n_boot, seed=cfg.seed)
        entry["overall"] = {"wer": models[v.name]["wer"], "baseline_wer": models[base.name]["wer"], **overall.to_json()}
        for d in dialects:
            idx = [i for i, x in enumerate(dialect_of) if x == d]
            c = stats.paired_bootstrap(e[idx], eb[idx], w[idx], [speakers[i] for i in idx], cfg.n_boot, cfg.seed)
            entry["per_dialect"][d] = {"wer": per_dialect[d][v.name]["wer"],
                                       "baseline_wer": per_dialect[d][base.name]["wer"], **c.to_json()}
        precision_impact[v.name] = entry

    selection = {"rule": (f"Per dialect: candidates are the variants whose WER is within {WER_TOLERANCE * 100:.0f} "
                          "WER point of that dialect's best; among them the highest RTFx wins, then the lower peak "
                          "memory. Variants off the accuracy/speed/memory Pareto frontier are never chosen."),
                 "per_dialect": {}}
    for d in dialects + ["overall"]:
        if not models:
            break
        wer_of = {n: (per_dialect[d][n]["wer"] if d != "overall" else models[n]["wer"]) for n in models}
        best = min(wer_of.values())
        cands = [n for n in models if wer_of[n] <= best + WER_TOLERANCE]
        pick = max(cands, key=lambda n: (models[n]["rtfx"], -models[n]["peak_memory_mb"]))
        frontier = [n for n in models if not any(
            wer_of[o] <= wer_of[n] and models[o]["rtfx"] >= models[n]["rtfx"]
            and models[o]["peak_memory_mb"] <= models[n]["peak_memory_mb"]
            and (wer_of[o], -models[o]["rtfx"], models[o]["peak_memory_mb"]) != (wer_of[n], -models[n]["rtfx"],
                                                                                 models[n]["peak_memory_mb"])
            for o in models)]
        selection["per_dialect"][d] = {"recommended": pick, "wer": wer_of[pick], "rtfx": models[pick]["rtfx"],
                                       "best_wer_variant": min(wer_of, key=wer_of.get), "frontier": frontier}

    counts = Counter(p.problem for p in problems)
    report = {
        "format": "speechtrt-asr-eval/1",
        "device": device_info(cfg.threads), "versions": versions(), "commit": git_commit(),
        "config": asdict(cfg),
        "dataset": {
            "manifest": cfg.manifest, "rows": len(prepared) + sum(p.action == "skipped" for p in problems),
            "evaluated": len(prepared), "audio_seconds": audio_s, "speakers": len(set(speakers)),
            "dialects": {d: {"utterances": dialect_of.count(d),
                             "speakers": len({s for s, x in zip(speakers, dialect_of) if x == d})} for d in dialects},
        },
        "input_problems": {"counts": dict(counts), "skipped": sum(p.action == "skipped" for p in problems),
                           "repaired": sum(p.action == "repaired" for p in problems),
                           "items": [p.to_json() for p in problems]},
        "normalizer": "speechtrt.asr.normalize.normalize_text: " + normalize_text.__module__,
        "decoder": {},  # filled by decoder_summary
        "models": models,
        "skipped_variants": skipped,
        "per_dialect": per_dialect,
        "significance": significance,
        "precision_impact": precision_impact,
        "selection": selection,
        "speed": {"seed_loop_vs_batched": seed_speed,
                  "timing": "compute = forward + greedy decode after one warm-up batch; latency = batch time"},
        "samples": [{"dialect": p.row.dialect, "speaker": p.row.speaker, "reference": p.reference,
                     **{v.name: v.hypotheses[i] for v in variants[:4]}} for i, p in enumerate(prepared[:: max(1, len(prepared) // 12)])],
    }
    return report


# ---------------------------------------------------------------- environment


def device_info(threads: int) -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": threads,
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def versions() -> dict:
    import jiwer
    import scipy

    from speechtrt import __version__

    out = {"speechtrt": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "scipy": scipy.__version__,
           "jiwer": getattr(jiwer, "__version__", None) or _dist_version("jiwer")}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        out["espeak-ng"] = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True,
                                          timeout=10).stdout.split(":")[1].split()[0]
    except Exception:
        pass
    return out


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------- outputs


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _p(x) -> str:
    return "–" if x is None else f"{x:.3g}"


def markdown(report: dict) -> str:
    """The report as Markdown: the seed's model × dialect matrix (WER % with 95 % interval), then the details."""
    models, per_d = report["models"], report["per_dialect"]
    dialects = list(per_d)
    L = ["# ASR evaluation across dialects", ""]
    ds = report["dataset"]
    L += [f"Manifest `{ds['manifest']}`: {ds['evaluated']} utterances evaluated of {ds['rows']} "
          f"({ds['audio_seconds'] / 60:.1f} min audio, {ds['speakers']} speakers, {len(dialects)} dialects). "
          f"Device: {report['device']['cpu']}{' + ' + report['device']['gpu'] if report['device'].get('gpu') else ''}, "
          f"{report['device']['threads']} thread(s). Commit {report['commit']}.", ""]
    dec = report["decoder"]
    if dec.get("lm"):
        tuning = dec["tuning"]
        tuned = (f"tuned on `{tuning['manifest']}` ({tuning['utterances']} development utterances, dev WER "
                 f"{_pct(tuning['wer'])} %)" if "manifest" in tuning else tuning.get("note", ""))
        L += [f"Decoder: **CTC beam search with a {dec['lm']['order']}-gram word model** ({dec['lm']['vocabulary']} "
              f"words, {dec['lm']['sentences']} sentences of {dec['lm']['source']}; test perplexity "
              f"{dec['lm']['test_perplexity']:.0f}, test OOV rate {_pct(dec['test_oov_rate'])} %), beam {dec['beam']}, "
              f"α = {dec['alpha']}, β = {dec['beta']} — {tuned}. Greedy best-path WER is shown beside it.", ""]
    else:
        L += [f"Decoder: **{dec['primary']}**" + (f" (lexicon of {dec['lexicon_words']} words from "
              f"{dec['lexicon_source']}; test OOV rate {_pct(dec['test_oov_rate'])} %)" if dec.get("lexicon_words")
              else "") + ".", ""]
    L += ["WER/CER are corpus rates after one normaliser on both sides; intervals are 95 % speaker-bootstrap.", ""]
    L += ["## WER (%) by dialect", "",
          "| Model / backend / precision | " + " | ".join(dialects) + " | Overall | CER | greedy WER | RTFx | decoder s | p95 ms | peak MB |",
          "|---" * (len(dialects) + 8) + "|"]
    for name, m in models.items():
        cells = [f"{_pct(per_d[d][name]['wer'])} [{_pct(per_d[d][name]['ci95'][0])}, {_pct(per_d[d][name]['ci95'][1])}]"
                 for d in dialects]
        L.append(f"| {name} | " + " | ".join(cells) + f" | **{_pct(m['wer'])}** [{_pct(m['ci95'][0])}, {_pct(m['ci95'][1])}]"
                 f" | {_pct(m['cer'])} | {_pct(m['greedy_wer'])} | {m['rtfx']:.1f} | {m.get('decode_seconds', 0):.1f} | "
                 f"{m['latency_ms']['p95']:.1f} | "
                 f"{m['peak_memory_mb']:.0f} |")
    if report["skipped_variants"]:
        L += ["", "Not run here: " + "; ".join(f"`{s['variant']}` ({s['reason']})" for s in report["skipped_variants"])]
    L += ["", "## Errors", "", "| Variant | S | D | I | ref words | WER vs duration (Spearman ρ, p) |", "|---|---|---|---|---|---|"]
    for name, m in models.items():
        sp = m["wer_vs_duration"]
        rho = "–" if sp["rho"] is None else f"{sp['rho']:+.2f}, p={sp['p_value']:.3g}"
        L.append(f"| {name} | {m['substitutions']} | {m['deletions']} | {m['insertions']} | {m['ref_words']} | {rho} |")
    first = next(iter(models.values()), None)
    if first:
        L += ["", f"### Error rate ((S+D)/words, %) by word type — {next(iter(models))}", ""]
        for kind, table in first["breakdown"].items():
            L.append(f"- **{kind}**: " + ", ".join(f"{k} {_pct(v['error_rate'])} (n={v['words']})" for k, v in table.items()))
    sig = report["significance"]
    L += ["", "## Significance", "", sig["method"], "", "### Model vs model (paired, same utterances)", "",
          "| A | B | ΔWER (A−B) | 95 % CI | p (bootstrap) | p (Holm) | p (Wilcoxon) |", "|---|---|---|---|---|---|---|"]
    for r in sig["model_vs_model"]:
        L.append(f"| {r['a']} | {r['b']} | {_pct(r['wer_difference'])} | [{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}] | "
                 f"{r['p_bootstrap']:.3g} | {r['p_holm']:.3g} | {_p(r['p_wilcoxon'])} |")
    for name, rows in sig["dialect_vs_dialect"].items():
        L += ["", f"### Dialect vs dialect — {name} (speakers resampled per dialect, Holm-corrected)", "",
              "| A | B | ΔWER | 95 % CI | p (Holm) | significant |", "|---|---|---|---|---|---|"]
        for r in rows:
            L.append(f"| {r['a']} | {r['b']} | {_pct(r['wer_difference'])} | [{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}] "
                     f"| {r['p_holm']:.3g} | {'yes' if r['significant'] else 'no'} |")
    if report["precision_impact"]:
        L += ["", "## Precision impact (ΔWER vs FP32 of the same model, paired)", "",
              "| Variant | baseline | " + " | ".join(dialects) + " | overall |", "|---" * (len(dialects) + 3) + "|"]
        for name, e in report["precision_impact"].items():
            L.append(f"| {name} | {e['baseline']} | " + " | ".join(
                f"{_pct(e['per_dialect'][d]['wer_difference'])}" for d in dialects)
                + f" | {_pct(e['overall']['wer_difference'])} [{_pct(e['overall']['ci95'][0])}, {_pct(e['overall']['ci95'][1])}] |")
    fid = {name: m["fidelity"] for name, m in models.items() if m.get("fidelity")}
    if fid or report.get("classifier"):
        L += ["", "## Fidelity against torch FP32 of the same model", ""]
        for name, c in report.get("classifier", {}).items():
            L.append(f"- {name} classifier: {c['note']}.")
        if fid:
            L += ["", "| Variant | max abs Δ log p | mean abs Δ log p | greedy transcripts identical |",
                  "|---|---|---|---|"]
            for name, f in fid.items():
                L.append(f"| {name} | {f['max_abs_logprob_diff']:.2g} | {f['mean_abs_logprob_diff']:.2g} | "
                         f"{100 * f['greedy_identical']:.0f} % |")
            L += ["", "Δ log p over the columns the decoders read (blank + alphabet), every frame of every utterance."]
    sel = report["selection"]
    if sel["per_dialect"]:
        L += ["", "## Model selection", "", sel["rule"], "", "| Dialect | recommended | WER % | RTFx | most accurate |",
              "|---|---|---|---|---|"]
        for d, s in sel["per_dialect"].items():
            L.append(f"| {d} | {s['recommended']} | {_pct(s['wer'])} | {s['rtfx']:.1f} | {s['best_wer_variant']} |")
    sp = report["speed"]["seed_loop_vs_batched"]
    if sp:
        L += ["", "## Batched vs the seed's per-utterance loop", "",
              f"{sp['model']} torch FP32 on the same {sp['utterances']} utterances, same run, {sp['threads']} thread(s): "
              f"model compute (forward + greedy decode): seed loop {sp['seed_loop_seconds']:.2f} s, batched "
              f"{sp['batched_seconds']:.2f} s → **{sp['speedup']:.1f}×**; end to end (audio reading, features, "
              f"compute, scoring): {sp['seed_loop_end_to_end_seconds']:.2f} s vs {sp['batched_end_to_end_seconds']:.2f} s "
              f"→ **{sp['end_to_end_speedup']:.1f}×**"
              + (f" (reading and featurizing every utterance once: {sp['batched_features_seconds']:.2f} s)"
                 if "batched_features_seconds" in sp else "")
              + f". Identical transcripts: {100 * sp['identical_transcripts']:.0f} %. "
              f"Batch-1 latency p50/p95: {sp['batch1_latency_ms']['p50']:.1f}/{sp['batch1_latency_ms']['p95']:.1f} ms."]
        fv = sp.get("fastest_variant")
        if fv:
            L += ["", f"Fastest batched variant of {sp['model']}: `{fv['variant']}`, {fv['batched_seconds']:.2f} s → "
                  f"**{fv['speedup']:.1f}×** the seed loop's compute (end to end **{fv['end_to_end_speedup']:.1f}×**), "
                  f"WER {_pct(fv['wer'])} % vs FP32 {_pct(fv['fp32_wer'])} %; greedy transcripts identical to FP32 for "
                  f"{100 * fv['greedy_transcripts_identical_to_fp32']:.0f} % of utterances."]
    ip = report["input_problems"]
    L += ["", "## Input problems", "", f"{ip['skipped']} skipped, {ip['repaired']} repaired: "
          + (", ".join(f"{k} {v}" for k, v in ip["counts"].items()) or "none") + "."]
    for item in ip["items"][:50]:
        L.append(f"- #{item['index']} `{item['audio_filepath'] or '(manifest line)'}`: {item['problem']} → {item['action']} ({item['detail']})")
    if report.get("plots"):
        L += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(L) + "\n"


def plot(report: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, per_d = report["models"], report["per_dialect"]
    names, dialects = list(models), list(per_d)
    if not names:
        return []
    files = []
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(dialects) + 2), 4))
    width = 0.8 / len(names)
    for k, n in enumerate(names):
        wer = [100 * per_d[d][n]["wer"] for d in dialects]
        lo = [100 * (per_d[d][n]["wer"] - per_d[d][n]["ci95"][0]) for d in dialects]
        hi = [100 * (per_d[d][n]["ci95"][1] - per_d[d][n]["wer"]) for d in dialects]
        ax.bar(np.arange(len(dialects)) + k * width, wer, width, yerr=[lo, hi], capsize=2, label=n)
    ax.set_xticks(np.arange(len(dialects)) + 0.4 - width / 2, dialects, rotation=20)
    ax.set_ylabel("WER % (95 % speaker bootstrap)")
    ax.set_title("WER by dialect")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "asr_wer_by_dialect.png", dpi=110)
    plt.close(fig)
    files.append("asr_wer_by_dialect.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        m = models[n]
        ax.errorbar(m["rtfx"], 100 * m["wer"], yerr=[[100 * (m["wer"] - m["ci95"][0])], [100 * (m["ci95"][1] - m["wer"])]],
                    fmt="o", capsize=3, label=n)
    front = report["selection"]["per_dialect"].get("overall", {}).get("frontier", [])
    pts = sorted((models[n]["rtfx"], 100 * models[n]["wer"]) for n in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts), "k--", lw=0.8, label="frontier")
    ax.set_xscale("log")
    ax.set_xlabel("RTFx (audio seconds per compute second)")
    ax.set_ylabel("WER %")
    ax.set_title("Accuracy vs speed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "asr_wer_vs_rtfx.png", dpi=110)
    plt.close(fig)
    files.append("asr_wer_vs_rtfx.png")
    return files


def write_outputs(report: dict, out_dir: Path, plots: bool = True) -> None:
    if plots:
        report["plots"] = plot(report, out_dir)
    (out_dir / "asr_eval.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "asr_eval.md").write_text(markdown(report))


# ---------------------------------------------------------------- one-checkpoint score (training sidecars)


def quick_score(checkpoint: str | Path, manifest: str | Path, text_source=None) -> dict:
    """Torch FP32 WER/CER of one checkpoint on a manifest (for sidecars): the default lm decoder (weights of
    :class:`EvalConfig`), the lexicon pass and greedy best path."""
    from speechtrt.asr.lm import BeamConfig, ctc_beam_search, training_lm
    from speechtrt.models.checkpoints import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    prepared, problems = prepare_inputs(manifest)
    run = run_batched(make_runner(model, "torch", "fp32", Path(tempfile.gettempdir())), prepared, auto_batch_frames(),
                      keep_log_probs=True)
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
