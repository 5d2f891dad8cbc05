"""The report: per-variant scores and speed, per-dialect scores, significance, precision impact, the selection rule,
and samples — one JSON-ready dict (``asr_eval.json``; :mod:`.markdown` renders it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from speechtrt.asr import stats
from speechtrt.asr.decode import Lexicon
from speechtrt.asr.eval.config import WER_TOLERANCE, EvalConfig
from speechtrt.asr.eval.generalization import TrainedOn, generalization
from speechtrt.asr.eval.inputs import InputProblem, Prepared
from speechtrt.asr.eval.scoring import ONE_SPEAKER, Scored, rates, summarize
from speechtrt.asr.metrics import (breakdown, corpus_score, espeak_ipa, frequency_bin, length_bin, phoneme_class,
                                   word_class)
from speechtrt.asr.normalize import normalize_text

FORMAT = "speechtrt-asr-eval/1"
SAMPLES = 12  # utterances shown with their transcripts
SAMPLE_VARIANTS = 4  # variants whose transcripts each sample shows


class Corpus:
    """The evaluated utterances' labels, computed once: speakers, dialects, durations, references."""

    def __init__(self, prepared: list[Prepared]):
        self.prepared = prepared
        self.speakers = [p.row.speaker for p in prepared]
        self.dialect_of = [p.row.dialect for p in prepared]
        self.dialects = sorted(set(self.dialect_of))
        self.durations = [p.seconds for p in prepared]
        self.refs = [p.reference for p in prepared]
        self.audio_s = sum(self.durations)

    def indices(self, dialect: str) -> list[int]:
        return [i for i, d in enumerate(self.dialect_of) if d == dialect]

    def speakers_at(self, idx: list[int]) -> list[str]:
        return [self.speakers[i] for i in idx]


def _ranks_for_frequency(lexicon: Lexicon | None, refs: list[str]) -> dict[str, int]:
    counts = lexicon.counts if lexicon else Counter(w for r in refs for w in r.split())
    return {w: i for i, (w, _) in enumerate(counts.most_common())}


def _breakdowns(v: Scored, ranks: dict[str, int], ipa: dict[str, str]) -> dict:
    out = {
        "word_class": breakdown(v.errors, word_class),
        "word_length": breakdown(v.errors, length_bin),
        "word_frequency": breakdown(v.errors, lambda w: frequency_bin(w, ranks)),
    }
    if ipa:
        out["initial_phoneme"] = breakdown(v.errors, lambda w: phoneme_class(ipa.get(w, "")))
    return out


def model_entry(v: Scored, corpus: Corpus, cfg: EvalConfig, ranks: dict[str, int], ipa: dict[str, str]) -> dict:
    """``models.<variant>``: scores with intervals, speed, latency, memory, error breakdowns, fidelity."""
    s = summarize(v.errors, corpus.speakers, cfg.n_boot, cfg.seed)
    g = corpus_score(v.greedy_errors)
    lat = [x * 1000 for x in v.run.latency_s]
    audio_s, compute_s = corpus.audio_s, v.run.compute_s
    return {
        "model": v.model, "checkpoint": v.checkpoint, "backend": v.backend, "precision": v.precision,
        **s, "greedy_wer": g.wer, "greedy_cer": g.cer,
        "rtf": compute_s / audio_s, "rtfx": audio_s / compute_s,
        "decode_seconds": v.decode_seconds, "rtfx_with_decoder": audio_s / (compute_s + v.decode_seconds),
        "compute_seconds": compute_s, "audio_seconds": audio_s, "batches": v.run.batches,
        "latency_ms": {"p50": stats.percentile(lat, 50), "p95": stats.percentile(lat, 95)},
        "peak_memory_mb": v.run.peak_memory_mb,
        "breakdown": _breakdowns(v, ranks, ipa),
        "wer_vs_duration": stats.spearman(corpus.durations, [e.wer for e in v.errors]),
        "fidelity": v.fidelity,
    }


def per_dialect(variants: list[Scored], corpus: Corpus, cfg: EvalConfig) -> dict[str, dict]:
    """``per_dialect.<dialect>.<variant>``: the same summary as the overall one, on that dialect's utterances."""
    out: dict[str, dict] = {d: {} for d in corpus.dialects}
    for d in corpus.dialects:
        idx = corpus.indices(d)
        for v in variants:
            out[d][v.name] = summarize([v.errors[i] for i in idx], corpus.speakers_at(idx), cfg.n_boot, cfg.seed)
    return out


def _comparison(c: stats.PairedComparison) -> dict:
    """A comparison as JSON; with fewer than two speakers its interval is not available (None + the reason)."""
    out = c.to_json()
    if c.speakers < 2:
        out.update(ci95=None, ci95_note=ONE_SPEAKER)
    return out


def _holm(rows: list[dict]) -> list[dict]:
    for row, adj in zip(rows, stats.holm([r["p_bootstrap"] for r in rows])):
        row["p_holm"] = adj
        row["significant"] = adj < 0.05
    return rows


def significance(variants: list[Scored], corpus: Corpus, cfg: EvalConfig) -> dict:
    """Paired model-vs-model tests among the torch FP32 variants, and dialect-vs-dialect tests per such variant,
    each family Holm-corrected."""
    refs = [v for v in variants if v.backend == "torch" and v.precision == "fp32"] or variants[:1]
    pairs = []
    for i, a in enumerate(refs):
        for b in refs[i + 1:]:
            ea, wa, *_ = rates(a.errors)
            eb, *_ = rates(b.errors)
            c = stats.paired_bootstrap(ea, eb, wa, corpus.speakers, n_boot=cfg.n_boot, seed=cfg.seed)
            pairs.append({"a": a.name, "b": b.name, **_comparison(c)})
    dialect_pairs = {}
    for v in refs:
        e, w, *_ = rates(v.errors)
        rows = []
        for i, da in enumerate(corpus.dialects):
            for db in corpus.dialects[i + 1:]:
                ia, ib = corpus.indices(da), corpus.indices(db)
                c = stats.independent_bootstrap(e[ia], w[ia], corpus.speakers_at(ia), e[ib], w[ib],
                                                corpus.speakers_at(ib), cfg.n_boot, cfg.seed)
                rows.append({"a": da, "b": db, **c.to_json()})
        dialect_pairs[v.name] = _holm(rows)
    return {"method": stats.METHOD, "model_vs_model": _holm(pairs), "dialect_vs_dialect": dialect_pairs}


def precision_impact(variants: list[Scored], models: dict, dialects: dict, corpus: Corpus, cfg: EvalConfig) -> dict:
    """Per reduced-precision variant: the paired WER difference against FP32 of the same model (same backend, else
    torch), overall and per dialect."""
    by_name = {v.name: v for v in variants}
    out = {}
    for v in variants:
        if v.precision == "fp32":
            continue
        base = by_name.get(f"{v.model}/{v.backend}/fp32") or by_name.get(f"{v.model}/torch/fp32")
        if base is None:
            continue
        e, w, *_ = rates(v.errors)
        eb, *_ = rates(base.errors)
        overall = stats.paired_bootstrap(e, eb, w, corpus.speakers, n_boot=cfg.n_boot, seed=cfg.seed)
        entry = {"baseline": base.name, "per_dialect": {},
                 "overall": {"wer": models[v.name]["wer"], "baseline_wer": models[base.name]["wer"],
                             **_comparison(overall)}}
        for d in corpus.dialects:
            idx = corpus.indices(d)
            c = stats.paired_bootstrap(e[idx], eb[idx], w[idx], corpus.speakers_at(idx), cfg.n_boot, cfg.seed)
            entry["per_dialect"][d] = {"wer": dialects[d][v.name]["wer"],
                                       "baseline_wer": dialects[d][base.name]["wer"], **_comparison(c)}
        out[v.name] = entry
    return out


SELECTION_RULE = (f"Per dialect: candidates are the variants whose WER is within {WER_TOLERANCE * 100:.0f} WER point "
                  "of that dialect's best; among them the highest RTFx wins, then the lower peak memory. Variants "
                  "off the accuracy/speed/memory Pareto frontier are never chosen.")


def frontier(wer_of: dict[str, float], models: dict) -> list[str]:
    """Variants no other variant beats or equals on WER, RTFx and peak memory at once (the Pareto frontier)."""
    def key(n):
        return wer_of[n], -models[n]["rtfx"], models[n]["peak_memory_mb"]

    def dominates(o, n):
        return all(a <= b for a, b in zip(key(o), key(n))) and key(o) != key(n)

    return [n for n in models if not any(dominates(o, n) for o in models)]


def select(models: dict, dialects: dict) -> dict:
    """The recommended variant per dialect and overall, by :data:`SELECTION_RULE`."""
    selection = {"rule": SELECTION_RULE, "per_dialect": {}}
    if not models:
        return selection
    for d in [*dialects, "overall"]:
        wer_of = {n: (dialects[d][n]["wer"] if d != "overall" else models[n]["wer"]) for n in models}
        best = min(wer_of.values())
        candidates = [n for n in models if wer_of[n] <= best + WER_TOLERANCE]
        pick = max(candidates, key=lambda n: (models[n]["rtfx"], -models[n]["peak_memory_mb"]))
        selection["per_dialect"][d] = {"recommended": pick, "wer": wer_of[pick], "rtfx": models[pick]["rtfx"],
                                       "best_wer_variant": min(wer_of, key=wer_of.get),
                                       "frontier": frontier(wer_of, models)}
    return selection


def samples(prepared: list[Prepared], variants: list[Scored], count: int = SAMPLES) -> list[dict]:
    """About ``count`` utterances spread over the set, each with its reference and *its own* transcripts from the
    first :data:`SAMPLE_VARIANTS` variants."""
    step = max(1, len(prepared) // count)
    return [{"dialect": prepared[i].row.dialect, "speaker": prepared[i].row.speaker,
             "reference": prepared[i].reference, **{v.name: v.hypotheses[i] for v in variants[:SAMPLE_VARIANTS]}}
            for i in range(0, len(prepared), step)]


def _dataset(cfg: EvalConfig, corpus: Corpus, problems: list[InputProblem]) -> dict:
    from speechtrt.asr.data import composition

    return {
        "manifest": cfg.manifest, "rows": len(corpus.prepared) + sum(p.action == "skipped" for p in problems),
        "evaluated": len(corpus.prepared), "audio_seconds": corpus.audio_s, "speakers": len(set(corpus.speakers)),
        "dialects": {d: {"utterances": corpus.dialect_of.count(d),
                         "speakers": len(set(corpus.speakers_at(corpus.indices(d))))} for d in corpus.dialects},
        "composition": composition(p.row for p in corpus.prepared),
    }


def _input_problems(problems: list[InputProblem]) -> dict:
    return {"counts": dict(Counter(p.problem for p in problems)),
            "skipped": sum(p.action == "skipped" for p in problems),
            "repaired": sum(p.action == "repaired" for p in problems),
            "items": [p.to_json() for p in problems]}


def build_report(cfg: EvalConfig, prepared: list[Prepared], problems: list[InputProblem], variants: list[Scored],
                 skipped: list[dict], seed_speed: dict | None, lexicon: Lexicon | None, environment: dict,
                 trained_on: dict[str, TrainedOn | None] | None = None) -> dict:
    """The whole report but the decoder, classifier and quantization blocks (the run adds those).
    ``environment``: :func:`speechtrt.reporting.environment` (``device``, ``versions``, ``commit``);
    ``trained_on``: what each model (by name) was trained on, for the held-out block of ``generalization``."""
    corpus = Corpus(prepared)
    ranks = _ranks_for_frequency(lexicon, corpus.refs)
    ipa = espeak_ipa({w for r in corpus.refs for w in r.split()})
    models = {v.name: model_entry(v, corpus, cfg, ranks, ipa) for v in variants}
    dialects = per_dialect(variants, corpus, cfg)
    return {
        "format": FORMAT,
        **environment,
        "config": asdict(cfg),
        "dataset": _dataset(cfg, corpus, problems),
        "input_problems": _input_problems(problems),
        "normalizer": "speechtrt.asr.normalize.normalize_text: " + normalize_text.__module__,
        "decoder": {},  # filled by the run (scoring.decoder_summary)
        "models": models,
        "skipped_variants": skipped,
        "per_dialect": dialects,
        "significance": significance(variants, corpus, cfg),
        "precision_impact": precision_impact(variants, models, dialects, corpus, cfg),
        "selection": select(models, dialects),
        "speed": {"seed_loop_vs_batched": seed_speed,
                  "timing": "compute = forward + greedy decode after one warm-up batch; latency = batch time"},
        "samples": samples(prepared, variants),
        "generalization": generalization(variants, prepared, cfg, trained_on),
    }
