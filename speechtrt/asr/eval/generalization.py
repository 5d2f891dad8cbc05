"""Generalization: the test set grouped by synthesizer, accent and voice, and what each model does on voices,
accents and synthesizers it never heard in training (``generalization`` in ``asr_eval.json``).

Every test utterance of a model falls in one group, by what the model was trained on:

* ``in_training`` — a synthesizer and voice (for espeak-ng: accent) the training set had; the speaker and the
  sentence are still unseen (``speechtrt data synth`` keeps them apart);
* ``held_out_voice`` — a synthesizer the training set had, in a voice or accent it did not
  (e.g. espeak-ng ``en-029``, festival ``ked_diphone``);
* ``held_out_synthesizer`` — a synthesizer the training set never had (leave-one-synthesizer-out).

What a model was trained on comes from, in order: ``--held-out`` (units named by hand: ``flite``,
``espeak-ng:en-029``, ``festival:ked_diphone``; everything else counts as in training), ``--trained-on`` (a
training manifest), or the checkpoint's sidecar (``data.composition``, written by ``speechtrt train asr``).
Utterances whose manifest row names no synthesizer are not grouped.

The ratio of a held-out group's WER to the in-training WER of the same model and run has a 95 % interval from
resampling each group's speakers independently (:func:`speechtrt.asr.stats.independent_ratio_bootstrap`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from speechtrt.asr import stats
from speechtrt.asr.eval.config import ACCENT_SYNTHESIZER, GENERALIZATION_TARGETS, EvalConfig
from speechtrt.asr.eval.scoring import ONE_SPEAKER, Scored, rates, summarize
from speechtrt.errors import InputError

GROUPS = ("in_training", "held_out_voice", "held_out_synthesizer")
HELD_OUT = ("held_out_voice", "held_out_synthesizer", "held_out")
METHOD = (
    "Groups per model: in_training = a synthesizer and voice (espeak-ng: accent) of its training set, spoken by "
    "unseen speakers reading unseen sentences; held_out_voice = a trained synthesizer in a voice or accent training "
    "never had; held_out_synthesizer = a synthesizer training never had; held_out = both. Ratio = held-out WER / "
    "in-training WER of the same model in the same run; 95 % interval: each group's speakers resampled "
    "independently. The in-training WER target is on trained accents: the in-training utterances of "
    f"{ACCENT_SYNTHESIZER} (all in-training voices for a model that had none)."
)


def voice_key(synthesizer: str, voice: str) -> str:
    return f"{synthesizer}:{voice}"


@dataclass(frozen=True)
class TrainedOn:
    """What one model heard in training: voices per synthesizer (``voices``), or, when ``voices`` is None,
    ``held_out`` units named by hand (``engine`` or ``engine:voice``). ``source`` says where it came from."""

    source: str
    voices: dict[str, frozenset[str]] | None = None
    held_out: tuple[str, ...] = ()

    def group(self, synthesizer: str, voice: str) -> str | None:
        """The group of an utterance spoken by ``synthesizer``'s ``voice``; None when the row names no engine."""
        if not synthesizer:
            return None
        if self.voices is None:
            if synthesizer in self.held_out:
                return "held_out_synthesizer"
            return "held_out_voice" if voice_key(synthesizer, voice) in self.held_out else "in_training"
        if synthesizer not in self.voices:
            return "held_out_synthesizer"
        return "in_training" if voice in self.voices[synthesizer] else "held_out_voice"

    def to_json(self) -> dict:
        out: dict = {"source": self.source}
        if self.voices is not None:
            out["voices"] = {e: sorted(v) for e, v in sorted(self.voices.items())}
        else:
            out["held_out"] = list(self.held_out)
        return out


def canonical_units(units: tuple[str, ...]) -> tuple[str, ...]:
    """``--held-out`` units with engine aliases resolved (``espeak:en-029`` -> ``espeak-ng:en-029``)."""
    from speechtrt.asr.synth import ALIASES

    out = []
    for unit in units:
        engine, sep, voice = unit.partition(":")
        engine = ALIASES.get(engine.strip(), engine.strip())
        out.append(voice_key(engine, voice.strip()) if sep else engine)
    return tuple(out)


def from_composition(comp: dict, source: str) -> TrainedOn | None:
    """A training composition (:func:`speechtrt.asr.data.composition`) as :class:`TrainedOn`; None when its rows
    named no synthesizer (nothing can be held out against it)."""
    from speechtrt.asr.data import UNKNOWN_SYNTHESIZER

    engines = comp.get("synthesizers") or {}
    if not engines or UNKNOWN_SYNTHESIZER in engines:
        return None
    return TrainedOn(source, {e: frozenset(v.get("voices", ())) for e, v in engines.items()})


def trained_on_for(checkpoint: str, cfg: EvalConfig) -> TrainedOn | None:
    """What ``checkpoint`` was trained on, from ``--held-out``, ``--trained-on`` or its sidecar (None: unknown)."""
    if cfg.held_out:
        return TrainedOn("--held-out " + ",".join(cfg.held_out), None, canonical_units(cfg.held_out))
    if cfg.trained_on:
        from speechtrt.asr.data import composition, read_manifest

        return from_composition(composition(read_manifest(cfg.trained_on)[0]), f"--trained-on {cfg.trained_on}")
    sidecar = Path(checkpoint).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    comp = (meta.get("data") or {}).get("composition") or meta.get("composition")
    return from_composition(comp, f"sidecar {sidecar}") if comp else None


def check_held_out(units: tuple[str, ...], rows) -> None:
    """Every ``--held-out`` unit names a synthesizer or ``synthesizer:voice`` of the test set, else InputError."""
    engines = {r.synthesizer for r in rows if r.synthesizer}
    voices = {voice_key(r.synthesizer, r.voice or r.dialect) for r in rows if r.synthesizer}
    for unit, canon in zip(units, canonical_units(units)):
        if canon not in engines and canon not in voices:
            raise InputError(f"--held-out {unit}: no test utterance is spoken by it; the test set has synthesizers "
                             f"{', '.join(sorted(engines)) or 'none (its manifest has no synthesizer field)'} and "
                             f"voices {', '.join(sorted(voices)) or 'none'}")


# ---------------------------------------------------------------- the block


def _subset_summary(v: Scored, idx: list[int], speakers: list[str], cfg: EvalConfig) -> dict:
    return {**summarize([v.errors[i] for i in idx], [speakers[i] for i in idx], cfg.n_boot, cfg.seed),
            "utterances": len(idx)}


def _grouped(variants: list[Scored], keys: list[str | None], speakers: list[str], cfg: EvalConfig) -> dict:
    out: dict[str, dict] = {}
    for key in sorted({k for k in keys if k is not None}):
        idx = [i for i, k in enumerate(keys) if k == key]
        out[key] = {v.name: _subset_summary(v, idx, speakers, cfg) for v in variants}
    return out


def _ratio(v: Scored, held: list[int], base: list[int], speakers: list[str], cfg: EvalConfig) -> dict | None:
    if not held or not base:
        return None
    e, w, *_ = rates(v.errors)
    ci = stats.independent_ratio_bootstrap(e[held], w[held], [speakers[i] for i in held], e[base], w[base],
                                           [speakers[i] for i in base], cfg.n_boot, cfg.seed)
    held_wer, base_wer = e[held].sum() / max(1, w[held].sum()), e[base].sum() / max(1, w[base].sum())
    ratio = float(held_wer / base_wer) if base_wer else None
    out = {"ratio": ratio, "ci95": ci.to_json() if ci else None}
    if ci is None:
        out["ci95_note"] = (ONE_SPEAKER if ratio is not None else "no ratio: the in-training WER is 0")
    return out


def _target(name: str, value: float | None, limit: float, unit: str, basis: str | None = None) -> dict:
    out = {"target": name, "limit": limit, "value": value, **({"basis": basis} if basis else {})}
    if value is None:
        return {**out, "met": None, "note": "not measurable in this run"}
    return {**out, "met": value <= limit, "missed_by": max(0.0, value - limit), "unit": unit}


def held_out_block(variants: list[Scored], trained: TrainedOn | None, synths: list[str], voices: list[str],
                   speakers: list[str], cfg: EvalConfig) -> dict:
    """``generalization.held_out.<model>``: its groups, WER per group and variant, ratios and targets."""
    if trained is None:
        return {"trained_on": None, "note": "training composition unknown (no data.composition in the checkpoint's "
                                            "sidecar): pass --trained-on <training manifest> or --held-out"}
    group_of = [trained.group(s, v) for s, v in zip(synths, voices)]
    members = {g: [i for i, x in enumerate(group_of) if x == g] for g in GROUPS}
    members["held_out"] = members["held_out_voice"] + members["held_out_synthesizer"]
    named = {g: sorted({synths[i] if g == "held_out_synthesizer" else voice_key(synths[i], voices[i])
                        for i in members[g]}) for g in GROUPS}
    out_variants = {}
    for v in variants:
        entry = {g: (_subset_summary(v, members[g], speakers, cfg) if members[g] else None)
                 for g in (*GROUPS, "held_out")}
        base = members["in_training"]
        entry["ratio"] = {g: _ratio(v, members[g], base, speakers, cfg) for g in HELD_OUT}
        accents = [i for i in base if synths[i] == ACCENT_SYNTHESIZER]
        entry["in_training_accents"] = _subset_summary(v, accents, speakers, cfg) if accents else None
        in_wer = (entry["in_training_accents"] or entry["in_training"] or {}).get("wer")
        basis = (f"trained {ACCENT_SYNTHESIZER} accents" if accents else "all in-training voices")
        voice_ratio = (entry["ratio"]["held_out_voice"] or {}).get("ratio")
        synth_wer = entry["held_out_synthesizer"]["wer"] if entry["held_out_synthesizer"] else None
        t = GENERALIZATION_TARGETS
        entry["targets"] = [_target("in_training_wer", in_wer, t["in_training_wer"], "WER", basis),
                            _target("held_out_voice_ratio", voice_ratio, t["held_out_voice_ratio"], "x"),
                            _target("held_out_synthesizer_wer", synth_wer, t["held_out_synthesizer_wer"], "WER")]
        out_variants[v.name] = entry
    return {"trained_on": trained.to_json(), "named": named,
            "ungrouped_utterances": sum(g is None for g in group_of), "variants": out_variants}


def generalization(variants: list[Scored], prepared, cfg: EvalConfig,
                   trained_on: dict[str, TrainedOn | None] | None = None) -> dict:
    """The ``generalization`` block: WER by synthesizer, accent and voice for every variant, and per model the
    held-out groups against the in-training one (``trained_on``: model name -> what it heard; missing: unknown)."""
    rows = [p.row for p in prepared]
    synths = [r.synthesizer for r in rows]
    voices = [r.voice or r.dialect for r in rows]
    speakers = [r.speaker for r in rows]
    by_voice = _grouped(variants, [voice_key(s, v) if s else None for s, v in zip(synths, voices)], speakers, cfg)
    accent_of = {voice_key(s, v): r.dialect for s, v, r in zip(synths, voices, rows) if s}
    models = list(dict.fromkeys(v.model for v in variants))
    trained_on = trained_on or {}
    return {
        "method": METHOD,
        "targets": dict(GENERALIZATION_TARGETS),
        "unknown_synthesizer_utterances": sum(not s for s in synths),
        "by_synthesizer": _grouped(variants, [s or None for s in synths], speakers, cfg),
        "by_accent": _grouped(variants, [r.dialect for r in rows], speakers, cfg),
        "by_voice": {k: {"accent": accent_of[k], "variants": entry} for k, entry in by_voice.items()},
        "held_out": {m: held_out_block([v for v in variants if v.model == m], trained_on.get(m), synths, voices,
                                       speakers, cfg) for m in models},
    }
