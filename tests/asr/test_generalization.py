"""The generalization block of `speechtrt eval` from made-up scores: grouping by synthesizer, accent and voice, the
held-out groups of each model from its sidecar, --trained-on or --held-out, ratios with intervals, targets."""

import json

import numpy as np
import pytest
import torch

from speechtrt.asr import stats
from speechtrt.asr.data import Utterance, write_manifest
from speechtrt.asr.eval import EvalConfig, check_config
from speechtrt.asr.eval.generalization import TrainedOn, check_held_out, generalization, trained_on_for
from speechtrt.asr.eval.inputs import Prepared
from speechtrt.asr.eval.markdown import markdown
from speechtrt.asr.eval.report import build_report
from speechtrt.asr.eval.run import VariantRun
from speechtrt.asr.eval.scoring import Scored
from speechtrt.asr.metrics import score_pair
from speechtrt.errors import InputError

ENVIRONMENT = {"device": {"summary": "test CPU", "torch_threads": 1}, "versions": {}, "commit": {"sha": None}}
# (synthesizer, voice, accent): 3 speakers each, 4 utterances per speaker
VOICES = [("espeak-ng", "en-us", "en-us"), ("espeak-ng", "en-029", "en-029"),
          ("festival", "kal_diphone", "en-us"), ("flite", "awb", "en-gb-scotland")]
REF = "one two three four five six seven eight nine ten"


def _prepared() -> list[Prepared]:
    out = []
    for synth, voice, accent in VOICES:
        for s in range(3):
            for _ in range(4):
                row = Utterance(f"{len(out)}.wav", REF, 1.0, accent, f"{synth}:{voice}/{s}", synth, voice)
                out.append(Prepared(len(out), row, REF, torch.zeros(10, 80), 1.0))
    return out


def _hyp(row: Utterance, index: int) -> str:
    """Errors by design: 1 word in 10 on espeak en-us, 2 on en-029, 3 on festival, 6 on flite (speaker-varying)."""
    bad = {"en-us": 1, "en-029": 2, "kal_diphone": 3, "awb": 6}[row.voice] + (index % 2 if row.voice != "en-us" else 0)
    words = REF.split()
    return " ".join(["x"] * bad + words[bad:])


def _scored(name: str, prepared: list[Prepared]) -> Scored:
    hyps = [_hyp(p.row, p.index) for p in prepared]
    errors = [score_pair(p.reference, h) for p, h in zip(prepared, hyps)]
    run = VariantRun(hyps, None, [0.01] * len(hyps), compute_s=0.5, batches=1, peak_memory_mb=100.0)
    model, backend, precision = name.split("/")
    return Scored(name, model, f"{model}.pt", backend, precision, hyps, errors, errors, run)


ESPEAK_AND_FESTIVAL = TrainedOn("test", {"espeak-ng": frozenset({"en-us"}), "festival": frozenset({"kal_diphone"})})


def test_groups_ratios_and_targets_of_a_model_trained_on_espeak_en_us_and_festival():
    prepared = _prepared()
    cfg = EvalConfig(manifest="t.jsonl", checkpoints=("m.pt",), n_boot=200)
    gen = generalization([_scored("m/torch/fp32", prepared)], prepared, cfg, {"m": ESPEAK_AND_FESTIVAL})
    assert list(gen["by_synthesizer"]) == ["espeak-ng", "festival", "flite"]
    assert gen["by_synthesizer"]["flite"]["m/torch/fp32"]["utterances"] == 12
    assert gen["by_accent"]["en-us"]["m/torch/fp32"]["utterances"] == 24  # espeak en-us + festival kal
    assert gen["by_voice"]["flite:awb"]["accent"] == "en-gb-scotland"
    block = gen["held_out"]["m"]
    assert block["named"] == {"in_training": ["espeak-ng:en-us", "festival:kal_diphone"],
                              "held_out_voice": ["espeak-ng:en-029"], "held_out_synthesizer": ["flite"]}
    v = block["variants"]["m/torch/fp32"]
    assert v["in_training"]["wer"] == pytest.approx((12 * 1 + 12 * 3.5) / 240)
    assert v["held_out_voice"]["wer"] == pytest.approx(2.5 / 10)
    assert v["held_out_synthesizer"]["wer"] == pytest.approx(6.5 / 10)
    assert v["held_out"]["utterances"] == 24
    ratio = v["ratio"]["held_out_voice"]
    assert ratio["ratio"] == pytest.approx(0.25 / (54 / 240))
    assert ratio["ci95"][0] - 1e-9 <= ratio["ratio"] <= ratio["ci95"][1] + 1e-9
    assert v["in_training_accents"]["wer"] == pytest.approx(1 / 10)  # espeak-ng en-us only
    targets = {t["target"]: t for t in v["targets"]}
    assert targets["in_training_wer"]["basis"] == "trained espeak-ng accents"
    assert targets["in_training_wer"]["value"] == pytest.approx(0.1) and targets["in_training_wer"]["met"] is True
    assert targets["held_out_voice_ratio"]["met"] is True
    assert targets["held_out_synthesizer_wer"]["missed_by"] == pytest.approx(0.65 - 0.40)


def test_without_espeak_in_training_the_accent_target_falls_back_to_every_trained_voice():
    prepared = _prepared()
    cfg = EvalConfig(manifest="t.jsonl", checkpoints=("m.pt",), n_boot=100)
    festival_only = TrainedOn("test", {"festival": frozenset({"kal_diphone"})})
    gen = generalization([_scored("m/torch/fp32", prepared)], prepared, cfg, {"m": festival_only})
    v = gen["held_out"]["m"]["variants"]["m/torch/fp32"]
    assert v["in_training_accents"] is None and v["in_training"]["wer"] == pytest.approx(3.5 / 10)
    target = next(t for t in v["targets"] if t["target"] == "in_training_wer")
    assert target["basis"] == "all in-training voices" and target["missed_by"] == pytest.approx(0.35 - 0.15)


def test_the_report_keeps_its_keys_adds_the_block_and_renders_it(tmp_path):
    prepared = _prepared()
    cfg = EvalConfig(manifest="t.jsonl", checkpoints=("m.pt", "k.pt"), n_boot=100, out_dir=str(tmp_path))
    variants = [_scored("m/torch/fp32", prepared), _scored("m/ort/int8", prepared), _scored("k/torch/fp32", prepared)]
    report = build_report(cfg, prepared, [], variants, [], None, None, ENVIRONMENT, {"m": ESPEAK_AND_FESTIVAL})
    for key in ("models", "per_dialect", "significance", "precision_impact", "selection", "samples", "dataset"):
        assert key in report
    assert report["dataset"]["composition"]["synthesizers"]["flite"]["voices"] == ["awb"]
    assert report["generalization"]["held_out"]["k"]["trained_on"] is None  # no sidecar: said, not guessed
    report.update(decoder={"primary": "greedy"}, classifier={})
    md = markdown(report)
    assert "## Generalization: synthesizers, accents and voices never heard in training" in md
    assert "### Held out from training — m" in md and "Held out here: synthesizers flite" in md
    assert "held_out_synthesizer_wer 65.0 % > 40.0 %, missed by 25.0 points" in md
    assert "in_training_wer (trained espeak-ng accents) 10.0 % ≤ 15.0 % ✓" in md
    assert "pass --trained-on <training manifest> or --held-out" in md


def test_what_a_model_heard_comes_from_held_out_trained_on_or_its_sidecar(tmp_path):
    ckpt = tmp_path / "asr-x.pt"
    cfg = EvalConfig(manifest="t.jsonl", checkpoints=(str(ckpt),))
    assert trained_on_for(str(ckpt), cfg) is None  # no sidecar
    ckpt.with_suffix(".json").write_text(json.dumps({"data": {"composition": {"synthesizers": {
        "espeak-ng": {"voices": ["en-us"]}, "festival": {"voices": ["kal_diphone"]}}}}}))
    from_sidecar = trained_on_for(str(ckpt), cfg)
    assert from_sidecar.group("festival", "ked_diphone") == "held_out_voice"
    assert from_sidecar.group("flite", "awb") == "held_out_synthesizer"
    assert from_sidecar.group("espeak-ng", "en-us") == "in_training" and from_sidecar.group("", "x") is None
    manifest = write_manifest(tmp_path / "train.jsonl", [Utterance("a.wav", "a b", 1.0, "en-029", "s", "espeak-ng",
                                                                   "en-029")])
    listed = trained_on_for(str(ckpt), EvalConfig(manifest="t.jsonl", checkpoints=(str(ckpt),),
                                                  trained_on=str(manifest)))
    assert listed.group("espeak-ng", "en-us") == "held_out_voice" and "--trained-on" in listed.source
    named = trained_on_for(str(ckpt), EvalConfig(manifest="t.jsonl", checkpoints=(str(ckpt),),
                                                 held_out=("flite", "espeak:en-029")))
    assert named.group("espeak-ng", "en-029") == "held_out_voice" and named.group("flite", "slt") == \
        "held_out_synthesizer" and named.group("festival", "kal_diphone") == "in_training"
    # a training manifest that does not name its synthesizers cannot say what is held out
    old = write_manifest(tmp_path / "old.jsonl", [Utterance("a.wav", "a b", 1.0, "en-us", "s")])
    assert trained_on_for(str(ckpt), EvalConfig(manifest="t.jsonl", checkpoints=(str(ckpt),),
                                                trained_on=str(old))) is None


def test_held_out_units_must_name_something_in_the_test_set():
    rows = [p.row for p in _prepared()]
    check_held_out(("flite", "espeak:en-029", "festival:kal_diphone"), rows)
    with pytest.raises(InputError, match="--held-out festival:ked_diphone: no test utterance is spoken by it"):
        check_held_out(("festival:ked_diphone",), rows)
    with pytest.raises(InputError, match="--held-out festival:: give synthesizers"):
        check_config(EvalConfig(manifest="t", checkpoints=("m.pt",), held_out=("festival:",)))
    with pytest.raises(InputError, match="give one"):
        check_config(EvalConfig(manifest="t", checkpoints=("m.pt",), held_out=("flite",), trained_on="x.jsonl"))


def test_ratio_interval_resamples_each_groups_speakers():
    rng = np.random.default_rng(0)
    words = np.full(40, 10)
    held = rng.binomial(10, 0.3, 40)
    base = rng.binomial(10, 0.15, 40)
    groups = np.repeat(np.arange(8), 5)
    ci = stats.independent_ratio_bootstrap(held, words, groups, base, words, groups, n_boot=500, seed=1)
    assert ci.estimate == pytest.approx(held.sum() / base.sum())
    assert ci.low < ci.estimate < ci.high and ci.clusters == 16
    assert stats.independent_ratio_bootstrap(held, words, groups, base * 0, words, groups) is None
    assert stats.independent_ratio_bootstrap(held, words, np.zeros(40), base, words, groups) is None
