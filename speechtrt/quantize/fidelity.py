"""Fidelity of the FP16 and INT8 graphs against the FP32 graph of the same component, on held-out real inputs.

Per graph: relative L2 error and SNR (dB) of every float output over the held-out set, equality of integer outputs.
ASR log-probabilities are compared over valid output frames only and centred per frame (log-probabilities are
logits up to a per-frame constant, and the ``-log V`` of a flat distribution would otherwise swamp the error), plus
the agreement of the per-frame top-1 token. End to end:

- TTS: encoder -> KV-cached decoder loop (``FrameRule`` frames) -> vocoder, every graph at the precision under test
  against all-FP32: mel SNR, audio SNR, agreement of the stop frame (first frame with stop probability > 0.5) and
  of the per-frame stop decisions.
- ASR: greedy-CTC transcripts of held-out espeak-ng speech; CER of the precision's transcript against the FP32
  graph's (edits / FP32 characters). The streaming step is run chunk by chunk with its carried state.

Backends. Every graph runs in ONNX Runtime on the CPU when it can. ONNX Runtime's CPU provider crashes (SIGSEGV)
on some FP16 graphs (seen: the streaming ASR step's FP16 LSTM); each reduced-precision graph is therefore first
probed in a child process, and a graph that crashes there is executed by ``onnx.reference.ReferenceEvaluator``
instead: the same graph, node by node in NumPy at the graph's own FP16 types. The report names the backend used.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from speechtrt.config import FrameRule
from speechtrt.export.components import Component, component, per_layer_feeds
from speechtrt.quantize.calib import load_set, minibatches

EVAL_BATCH = 8
REPORT_FORMAT = "speechtrt-fidelity/1"


@dataclass(frozen=True)
class Bounds:
    """What a reduced-precision graph must meet against FP32 (per graph and, where it applies, end to end)."""

    min_snr_db: float  # every float output, over the whole held-out set
    max_rel_l2: float
    min_top1_agreement: float | None = None  # ASR: per-frame argmax equal to FP32's
    max_cer: float | None = None  # ASR: greedy transcripts vs FP32; enforced for confident models only (below)
    min_mel_snr_db: float | None = None  # TTS end to end
    min_stop_agreement: float | None = None  # TTS end to end: per-frame stop decisions


CER_MIN_MARGIN_NATS = 0.5
"""CER against FP32 is enforced only when the FP32 model is confident: median top-1 minus top-2 log-probability of
at least this many nats. A randomly initialised ASR model has a median margin near 0.006 nats, so any rounding flips
argmaxes between near-equal tokens and its transcript CER measures the model's indecision, not the precision."""

# Why these numbers (measured values in the README): FP16 keeps an 11-bit mantissa, so a graph computed in FP16
# stays within ~0.1 % (> 50 dB) of FP32; ASR log-probabilities are the exception, because FP16 resolves values near
# -log(1000) = -6.9 only to 2^-8 = 0.004 nats while a random-init model's centred log-probs span a few 0.01 nats.
# INT8 quantizes activations per tensor and weights per channel to 8 bits: 1-4 % relative error (28-42 dB) per graph.
BOUNDS: dict[str, dict[str, Bounds]] = {
    "fp16": {
        "graph": Bounds(min_snr_db=40.0, max_rel_l2=0.01),
        "asr": Bounds(min_snr_db=25.0, max_rel_l2=0.06, min_top1_agreement=0.95, max_cer=0.01),
        "tts_e2e": Bounds(min_snr_db=40.0, max_rel_l2=0.01, min_mel_snr_db=40.0, min_stop_agreement=0.99),
    },
    "int8": {
        "graph": Bounds(min_snr_db=20.0, max_rel_l2=0.1),
        "asr": Bounds(min_snr_db=20.0, max_rel_l2=0.1, min_top1_agreement=0.90, max_cer=0.05),
        "tts_e2e": Bounds(min_snr_db=20.0, max_rel_l2=0.1, min_mel_snr_db=20.0, min_stop_agreement=0.95),
    },
}


def bounds_for(comp_name: str, precision: str, kind: str = "graph") -> Bounds:
    table = BOUNDS[precision]
    if kind == "graph" and comp_name.startswith("asr_"):
        return table["asr"]
    return table[kind]


# ---------------------------------------------------------------- measures


def snr_db(actual: np.ndarray, expected: np.ndarray) -> float:
    """``10 log10(sum(expected^2) / sum((actual - expected)^2))``; ``inf`` when they are equal."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    noise = float(np.sum((a - e) ** 2))
    signal = float(np.sum(e ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def cer(hypotheses: list[str], references: list[str]) -> float:
    """Corpus CER (jiwer: total character edits over total reference characters). Empty references are scored
    by their hypotheses' length (every character an insertion); all-empty on both sides is 0."""
    import jiwer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r]
    inserted = sum(len(h) for r, h in zip(references, hypotheses) if not r)
    chars = sum(len(r) for r, _ in pairs)
    if not chars:
        return float(inserted > 0)
    out = jiwer.process_characters([r for r, _ in pairs], [h for _, h in pairs])
    return (out.substitutions + out.deletions + out.insertions + inserted) / chars


class _Accumulator:
    """Signal and error energy of one output over many batches (relative L2 and SNR of the whole set)."""

    def __init__(self):
        self.signal = 0.0
        self.noise = 0.0
        self.max_abs = 0.0

    def add(self, actual: np.ndarray, expected: np.ndarray) -> None:
        a = np.asarray(actual, dtype=np.float64)
        e = np.asarray(expected, dtype=np.float64)
        self.signal += float(np.sum(e ** 2))
        self.noise += float(np.sum((a - e) ** 2))
        if a.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(a - e))))

    def result(self) -> dict:
        rel = math.sqrt(self.noise / self.signal) if self.signal > 0 else math.sqrt(self.noise)
        snr = math.inf if self.noise == 0 else (10 * math.log10(self.signal / self.noise) if self.signal else -math.inf)
        return {"rel_l2": rel, "snr_db": snr, "max_abs": self.max_abs}


# ---------------------------------------------------------------- graph execution

GraphOpener = Callable[[str, str, "dict[str, np.ndarray] | None"], object]
"""``open_graph(component, precision, probe_feed) -> Runner``: how fidelity gets a graph to run. The caller passes
:func:`speechtrt.runtime.open.graph_opener` (ONNX Runtime, or ONNX's reference evaluator for a graph ORT's CPU
kernels crash on, probed on ``probe_feed`` in a child process); this module only compares what runners return."""


def run_graph(runner, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One call of a Runner on NumPy feeds; NumPy outputs (floats as float32 or wider, integers as given)."""
    import torch

    out = runner.infer({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()})
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def _valid_frames_mask(out: dict[str, np.ndarray]) -> np.ndarray | None:
    if "output_lengths" not in out or "log_probs" not in out:
        return None
    t = out["log_probs"].shape[1]
    return np.arange(t)[None, :] < out["output_lengths"][:, None]  # [B, T']


def graph_fidelity(comp: Component, ref, test, feeds: list[dict[str, np.ndarray]]) -> dict:
    """Compare every output of ``test`` with ``ref`` over ``feeds``; returns per-output measures."""
    acc: dict[str, _Accumulator] = {}
    int_equal: dict[str, list[bool]] = {}
    top1: list[tuple[int, int]] = []
    margins: list[np.ndarray] = []  # FP32 top-1 minus top-2 log-probability per frame (nats)
    for feed in feeds:
        expected = run_graph(ref, feed)
        actual = run_graph(test, feed)
        mask = _valid_frames_mask(expected)
        for spec in comp.outputs:
            e, a = expected[spec.name], actual[spec.name]
            if spec.dtype == "int64":
                int_equal.setdefault(spec.name, []).append(bool(np.array_equal(a, e)))
                continue
            if spec.name == "log_probs":
                # [.., V] log-probabilities: compare up to each frame's constant (a near-uniform distribution's
                # -log V would otherwise dominate the signal energy); count top-1 agreement
                if mask is not None:
                    e, a = e[mask], a[mask]
                e = e - e.mean(axis=-1, keepdims=True)
                a = a.astype(np.float64) - a.mean(axis=-1, keepdims=True)
                top1.append((int(np.sum(e.argmax(-1) == a.argmax(-1))), int(np.prod(e.shape[:-1]))))
                top2 = np.sort(e, axis=-1)[..., -2:]
                margins.append((top2[..., 1] - top2[..., 0]).reshape(-1))
            acc.setdefault(spec.name, _Accumulator()).add(a.astype(np.float32), e)
    outputs = {name: a.result() for name, a in acc.items()}
    for name, eq in int_equal.items():
        outputs[name] = {"equal": all(eq)}
    extra = {}
    if top1:
        extra = {"top1_agreement": sum(t[0] for t in top1) / max(1, sum(t[1] for t in top1)),
                 "fp32_top1_margin_median": float(np.median(np.concatenate(margins)))}
    return {
        "outputs": outputs,
        **extra,
        "min_snr_db": min(o["snr_db"] for o in outputs.values() if "snr_db" in o),
        "max_rel_l2": max(o["rel_l2"] for o in outputs.values() if "rel_l2" in o),
        "int_outputs_equal": all(all(v) for v in int_equal.values()),
        "batches": len(feeds),
    }


# ---------------------------------------------------------------- end to end


def tts_end_to_end(runners: dict, tokens: np.ndarray, text_lengths: np.ndarray,
                   rule: FrameRule = FrameRule(), mel_dim: int = 80) -> dict[str, np.ndarray]:
    """Encoder -> KV-cached decoder loop -> vocoder for a batch of texts, each to its ``FrameRule`` length.

    Returns ``mel`` [B, T, M], ``stop`` [B, T] and ``audio`` [B, T * samples_per_frame]; ``frames`` [B] says what
    is valid per text.
    """
    enc = run_graph(runners["tts_encoder"], {"tokens": tokens, "text_lengths": text_lengths})
    cross_k, cross_v = enc["cross_k"].astype(np.float32), enc["cross_v"].astype(np.float32)
    layers, b, heads, _, head_dim = cross_k.shape
    frames = np.array([rule.frames_for_text(int(n)) for n in text_lengths])
    n = int(frames.max())
    cache_k = np.zeros((layers, b, heads, n, head_dim), np.float32)
    cache_v = np.zeros_like(cache_k)
    frame = np.zeros((b, mel_dim), np.float32)
    mel = np.zeros((b, n, mel_dim), np.float32)
    stop = np.zeros((b, n), np.float32)
    for t in range(n):
        past = max(t, 1)
        out = run_graph(runners["tts_decoder_step"], per_layer_feeds({
            "prev_frame": frame, "past_len": np.full((b,), t, np.int64), "text_lengths": text_lengths,
            "past_k": np.ascontiguousarray(cache_k[:, :, :, :past]),
            "past_v": np.ascontiguousarray(cache_v[:, :, :, :past]),
            "cross_k": cross_k, "cross_v": cross_v,
        }, layers))
        cache_k[:, :, :, t] = out["new_k"][:, :, :, 0]
        cache_v[:, :, :, t] = out["new_v"][:, :, :, 0]
        frame = out["frame"].astype(np.float32)
        mel[:, t] = frame
        stop[:, t] = out["stop_prob"]
    audio = run_graph(runners["tts_vocoder"], {"mel": mel})["audio"]
    return {"mel": mel, "stop": stop, "audio": np.asarray(audio, np.float32), "frames": frames}


def tts_e2e_fidelity(ref: dict[str, np.ndarray], test: dict[str, np.ndarray], samples_per_frame: int = 8) -> dict:
    mel_acc, audio_acc = _Accumulator(), _Accumulator()
    stop_frame_equal, stop_decisions, stop_total = 0, 0, 0
    for i, n in enumerate(ref["frames"]):
        mel_acc.add(test["mel"][i, :n], ref["mel"][i, :n])
        audio_acc.add(test["audio"][i, : n * samples_per_frame], ref["audio"][i, : n * samples_per_frame])
        r, t = ref["stop"][i, :n] > 0.5, test["stop"][i, :n] > 0.5
        first = lambda s: int(np.argmax(s)) if s.any() else int(n)  # noqa: E731
        stop_frame_equal += first(r) == first(t)
        stop_decisions += int(np.sum(r == t))
        stop_total += int(n)
    mel, audio = mel_acc.result(), audio_acc.result()
    return {
        "texts": int(len(ref["frames"])), "frames": int(stop_total),
        "mel_snr_db": mel["snr_db"], "mel_rel_l2": mel["rel_l2"], "mel_max_abs": mel["max_abs"],
        "audio_snr_db": audio["snr_db"], "audio_rel_l2": audio["rel_l2"],
        "stop_frame_agreement": stop_frame_equal / len(ref["frames"]),
        "stop_decision_agreement": stop_decisions / stop_total,
    }


def greedy_transcripts(log_probs: np.ndarray, lengths: np.ndarray) -> list[str]:
    from speechtrt.models.text import asr_decode, ctc_greedy

    ids = np.argmax(log_probs, axis=-1)
    return [asr_decode(ctc_greedy(ids[i, : int(n)])) for i, n in enumerate(lengths)]


def asr_transcripts(runner, feeds: list[dict[str, np.ndarray]]) -> list[str]:
    out: list[str] = []
    for feed in feeds:
        res = run_graph(runner, feed)
        out += greedy_transcripts(res["log_probs"], res["output_lengths"])
    return out


def stream_transcripts(runner, features: np.ndarray, lengths: np.ndarray, chunk: int) -> list[str]:
    """Stream padded utterances [B, T, F] chunk by chunk; each keeps the outputs of its own full chunks."""
    from speechtrt.models.asr import StreamingASRModel
    from speechtrt.config import asr_config

    c = asr_config("stream")
    b = features.shape[0]
    ctx = StreamingASRModel.CONTEXT
    state = {
        "ctx1": np.zeros((b, ctx, c.input_dim), np.float32),
        "ctx2": np.zeros((b, 64, ctx, (c.input_dim + 1) // 2), np.float32),
        "h": np.zeros((c.num_layers, b, c.hidden_dim), np.float32),
        "c": np.zeros((c.num_layers, b, c.hidden_dim), np.float32),
    }
    n_chunks = lengths // chunk
    outs = []
    for j in range(int(n_chunks.max())):
        res = run_graph(runner, {"features": np.ascontiguousarray(features[:, j * chunk: (j + 1) * chunk]), **state})
        state = {k: np.asarray(res[f"{k}_out"], np.float32) for k in state}
        outs.append(np.asarray(res["log_probs"], np.float32))
    log_probs = np.concatenate(outs, axis=1)  # [B, chunks * chunk/4, V]
    per_chunk = log_probs.shape[1] // len(outs)
    return greedy_transcripts(log_probs, n_chunks * per_chunk)


# ---------------------------------------------------------------- the report


@dataclass
class FidelityReport:
    created: str
    onnx_dir: str
    calib_dir: str
    rows: list[dict] = field(default_factory=list)
    bounds: dict = field(default_factory=lambda: {p: {k: asdict(b) for k, b in t.items()} for p, t in BOUNDS.items()})

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.rows)

    def to_json(self) -> dict:
        return {"format": REPORT_FORMAT, "created": self.created, "onnx_dir": self.onnx_dir,
                "calib_dir": self.calib_dir, "ok": self.ok, "bounds": self.bounds, "results": self.rows}


def _judge_graph(row: dict, b: Bounds) -> list[str]:
    fails = []
    if row["min_snr_db"] < b.min_snr_db:
        fails.append(f"SNR {row['min_snr_db']:.1f} dB < {b.min_snr_db} dB")
    if row["max_rel_l2"] > b.max_rel_l2:
        fails.append(f"rel L2 {row['max_rel_l2']:.3g} > {b.max_rel_l2}")
    if not row["int_outputs_equal"]:
        fails.append("integer outputs differ")
    if b.min_top1_agreement is not None and row.get("top1_agreement", 1.0) < b.min_top1_agreement:
        fails.append(f"top-1 agreement {row['top1_agreement']:.3f} < {b.min_top1_agreement}")
    if b.max_cer is not None and row.get("cer_vs_fp32") is not None:
        row["cer_enforced"] = row.get("fp32_top1_margin_median", 0.0) >= CER_MIN_MARGIN_NATS
        if row["cer_enforced"] and row["cer_vs_fp32"] > b.max_cer:
            fails.append(f"CER {row['cer_vs_fp32']:.3f} > {b.max_cer}")
    return fails


def evaluate_component(name: str, precision: str, calib_dir: str | Path, open_graph: GraphOpener,
                       max_batches: int | None = None, comp: Component | None = None) -> dict:
    """One row of the report: a component's graph at ``precision`` against its FP32 graph on held-out inputs
    (``comp``: the component when it is not a registry one, e.g. a user's model's)."""
    comp = comp or component(name)
    t0 = time.perf_counter()
    feeds = minibatches(comp, load_set(calib_dir, name, heldout=True), EVAL_BATCH)[:max_batches]
    ref = open_graph(name, "fp32", None)
    test = open_graph(name, precision, feeds[0])
    row = {"component": name, "precision": precision, "backend": test.backend,
           **graph_fidelity(comp, ref, test, feeds)}
    if name in ("asr_small", "asr_medium", "asr_large"):
        hyp_ref, hyp = asr_transcripts(ref, feeds), asr_transcripts(test, feeds)
        row["cer_vs_fp32"] = cer(hyp, hyp_ref)
        row["utterances"] = len(hyp_ref)
    if name == "asr_stream_step":
        from speechtrt.config import asr_config

        asr = load_set(calib_dir, "asr_utterances", heldout=True)  # whole utterances, streamed chunk by chunk
        chunk = asr_config("stream").chunk_frames
        hyp_ref = stream_transcripts(ref, asr["features"], asr["feature_lengths"], chunk)
        hyp = stream_transcripts(test, asr["features"], asr["feature_lengths"], chunk)
        row["cer_vs_fp32"] = cer(hyp, hyp_ref)
        row["utterances"] = len(hyp_ref)
    b = bounds_for(name, precision)
    row["bounds"] = asdict(b)
    row["failures"] = _judge_graph(row, b)
    row["ok"] = not row["failures"]
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def evaluate_tts_e2e(precision: str, calib_dir: str | Path, open_graph: GraphOpener, texts: int = 4,
                     comps: dict[str, Component] | None = None) -> dict:
    """The TTS chain at ``precision`` against the all-FP32 chain, on held-out texts (``comps``: the three
    components by name when they are not the registry's, e.g. a user's model's)."""
    t0 = time.perf_counter()
    enc = load_set(calib_dir, "tts_encoder", heldout=True)
    # held-out texts spread across lengths (the set is sorted by length)
    pick = np.unique(np.linspace(0, len(enc["text_lengths"]) - 1, texts).round().astype(int))
    lengths = enc["text_lengths"][pick]
    tokens = np.ascontiguousarray(enc["tokens"][pick][:, : int(lengths.max())])
    names = ("tts_encoder", "tts_decoder_step", "tts_vocoder")
    comps = comps or {n: component(n) for n in names}
    mel_dim = next(s.shape[1] for s in comps["tts_decoder_step"].inputs if s.name == "prev_frame")
    ref = {n: open_graph(n, "fp32", None) for n in names}
    probe = {n: minibatches(comps[n], load_set(calib_dir, n, heldout=True), 2)[0] for n in names}
    test = {n: open_graph(n, precision, probe[n]) for n in names}
    ref_out = tts_end_to_end(ref, tokens, lengths, mel_dim=mel_dim)
    spf = ref_out["audio"].shape[1] // max(1, ref_out["mel"].shape[1])
    row = {"component": "tts_end_to_end", "precision": precision,
           "backend": ",".join(sorted({r.backend for r in test.values()})),
           **tts_e2e_fidelity(ref_out, tts_end_to_end(test, tokens, lengths, mel_dim=mel_dim), spf)}
    b = bounds_for("tts", precision, "tts_e2e")
    fails = []
    if row["audio_snr_db"] < b.min_snr_db:
        fails.append(f"audio SNR {row['audio_snr_db']:.1f} dB < {b.min_snr_db} dB")
    if row["mel_snr_db"] < b.min_mel_snr_db:
        fails.append(f"mel SNR {row['mel_snr_db']:.1f} dB < {b.min_mel_snr_db} dB")
    if row["stop_decision_agreement"] < b.min_stop_agreement:
        fails.append(f"stop agreement {row['stop_decision_agreement']:.3f} < {b.min_stop_agreement}")
    row.update({"bounds": asdict(b), "failures": fails, "ok": not fails,
                "seconds": round(time.perf_counter() - t0, 2)})
    return row


def _fmt(value, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return format(value, spec)


def markdown_table(report: FidelityReport) -> str:
    lines = [
        "| component | precision | backend | min SNR (dB) | max rel L2 | top-1 agreement | CER vs FP32 | mel SNR (dB) "
        "| stop agreement | ok |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report.rows:
        lines.append(
            f"| {r['component']} | {r['precision']} | {r['backend']} | {_fmt(r.get('min_snr_db'), '.1f')} "
            f"| {_fmt(r.get('max_rel_l2'), '.2e')} | {_fmt(r.get('top1_agreement'), '.3f')} "
            f"| {_fmt(r.get('cer_vs_fp32'), '.3f')}{'' if r.get('cer_enforced', True) else ' (not enforced)'} "
            f"| {_fmt(r.get('mel_snr_db'), '.1f')} | {_fmt(r.get('stop_decision_agreement'), '.3f')} "
            f"| {'yes' if r['ok'] else 'NO: ' + '; '.join(r['failures'])} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: FidelityReport, reports_dir: str | Path) -> tuple[Path, Path]:
    """``fidelity.json`` and ``fidelity.md`` under ``reports_dir``, with the device, versions and commit of the run."""
    from speechtrt.reporting import check_writable, commit_label, environment, write_json

    out = check_writable(reports_dir, "--reports")
    env = environment()
    json_path, md_path = out / "fidelity.json", out / "fidelity.md"
    write_json(json_path, {**report.to_json(), **env})
    md_path.write_text(
        "# Fidelity of reduced-precision graphs against FP32\n\n"
        f"Held-out inputs from `{report.calib_dir}`; graphs from `{report.onnx_dir}`; {report.created}. "
        f"{env['device']['summary']}; commit {commit_label(env['commit'])}; "
        f"onnxruntime {env['versions'].get('onnxruntime', '–')}, "
        f"nvidia-modelopt {env['versions'].get('nvidia-modelopt', '–')}.\n\n"
        + markdown_table(report)
    )
    return json_path, md_path
