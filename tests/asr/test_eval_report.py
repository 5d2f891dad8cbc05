"""The report of `speechtrt eval` built from made-up scores: samples pair each reference with its own utterance's
transcripts, a single-speaker dialect has no interval (with the reason), and the selection rule."""

import numpy as np
import pytest
import torch

from speechtrt.asr.data import Utterance
from speechtrt.asr.eval import EvalConfig
from speechtrt.asr.eval.inputs import Prepared
from speechtrt.asr.eval.markdown import markdown
from speechtrt.asr.eval.report import build_report, samples, select
from speechtrt.asr.eval.run import VariantRun
from speechtrt.asr.eval.scoring import ONE_SPEAKER, Scored, summarize
from speechtrt.asr.metrics import score_pair

ENVIRONMENT = {"device": {"summary": "test CPU", "torch_threads": 1}, "versions": {}, "commit": {"sha": None}}


def _prepared(n: int, speakers_of=lambda i: f"s{i % 4}", dialect_of=lambda i: "en-us") -> list[Prepared]:
    return [Prepared(i, Utterance(f"{i}.wav", f"ref {i}", 1.0, dialect_of(i), speakers_of(i)), f"reference {i}",
                     torch.zeros(100, 80), 1.0 + i / 10) for i in range(n)]


def _scored(name: str, refs: list[str], hyps: list[str]) -> Scored:
    errors = [score_pair(r, h) for r, h in zip(refs, hyps)]
    run = VariantRun(hyps, None, [0.01] * len(hyps), compute_s=0.5, batches=1, peak_memory_mb=100.0)
    model, backend, precision = name.split("/")
    return Scored(name, model, f"{model}.pt", backend, precision, hyps, errors, errors, run)


def test_samples_pair_each_reference_with_its_own_utterances_transcripts():
    prepared = _prepared(48)  # 48 utterances, 12 samples: every 4th utterance
    variants = [_scored(f"m/{b}/fp32", [p.reference for p in prepared],
                        [f"{b} hypothesis {p.index}" for p in prepared]) for b in ("torch", "ort")]
    shown = samples(prepared, variants)
    assert len(shown) == 12
    for sample in shown:
        k = int(sample["reference"].split()[-1])
        assert sample["m/torch/fp32"] == f"torch hypothesis {k}" and sample["m/ort/fp32"] == f"ort hypothesis {k}"
    assert [int(s["reference"].split()[-1]) for s in shown] == list(range(0, 48, 4))


def test_one_speaker_has_no_interval_and_says_why():
    errors = [score_pair("a b c", "a x c"), score_pair("d e", "d e")]
    alone = summarize(errors, ["s1", "s1"], n_boot=50, seed=0)
    assert alone["ci95"] is None and alone["cer_ci95"] is None and alone["ci95_note"] == ONE_SPEAKER
    assert alone["wer"] == pytest.approx(0.2) and alone["speakers"] == 1
    two = summarize(errors, ["s1", "s2"], n_boot=50, seed=0)
    assert two["ci95"][0] <= two["wer"] <= two["ci95"][1] and "ci95_note" not in two


def test_report_of_a_single_speaker_dialect(tmp_path):
    prepared = _prepared(12, speakers_of=lambda i: "solo" if i < 4 else f"s{i % 3}",
                         dialect_of=lambda i: "en-gb-scotland" if i < 4 else "en-us")
    refs = [p.reference for p in prepared]
    variants = [_scored("m/torch/fp32", refs, [r if i % 3 else "reference" for i, r in enumerate(refs)]),
                _scored("m/torch/int8", refs, [r if i % 4 else "x" for i, r in enumerate(refs)])]
    cfg = EvalConfig(manifest="test.jsonl", checkpoints=("m.pt",), n_boot=50, out_dir=str(tmp_path))
    report = build_report(cfg, prepared, [], variants, [], None, None, ENVIRONMENT)
    solo = report["per_dialect"]["en-gb-scotland"]["m/torch/fp32"]
    assert solo["ci95"] is None and solo["ci95_note"] == ONE_SPEAKER and solo["speakers"] == 1
    assert report["per_dialect"]["en-us"]["m/torch/fp32"]["ci95"] is not None
    impact = report["precision_impact"]["m/torch/int8"]["per_dialect"]["en-gb-scotland"]
    assert impact["ci95"] is None and impact["ci95_note"] == ONE_SPEAKER
    assert report["dataset"]["dialects"]["en-gb-scotland"] == {"utterances": 4, "speakers": 1}
    report.update(decoder={"primary": "greedy"}, classifier={})
    md = markdown(report)
    assert "n/a (1 speaker)" in md and "Device: test CPU" in md and "Commit unknown" in md


def test_selection_takes_the_fastest_within_one_wer_point_of_the_best():
    def m(wer, rtfx, mem):
        return {"wer": wer, "rtfx": rtfx, "peak_memory_mb": mem}

    models = {"a": m(0.100, 10, 500), "b": m(0.109, 50, 400), "c": m(0.120, 90, 300), "d": m(0.109, 40, 450)}
    sel = select(models, {})["per_dialect"]["overall"]
    assert sel["recommended"] == "b" and sel["best_wer_variant"] == "a"
    assert sel["frontier"] == ["a", "b", "c"]  # d: b is as accurate, faster and smaller
    assert select({}, {})["per_dialect"] == {}


def test_config_checks_name_the_flag():
    from speechtrt.asr.eval import check_config
    from speechtrt.errors import InputError

    base = dict(manifest="m.jsonl", checkpoints=("a.pt",))
    cases = [({"backends": ("foo",)}, "--backends foo"), ({"precisions": ("fp64",)}, "--precisions fp64"),
             ({"backends": ()}, "--backends is empty"), ({"beam": 0}, "--beam 0"), ({"threads": -1}, "--threads -1"),
             ({"n_boot": -5}, "--n-boot -5"), ({"batch_frames": 0}, "--batch-frames 0"),
             ({"decoder": "best"}, "--decoder"), ({"lm_order": 0}, "--lm-order 0"),
             ({"checkpoints": ()}, "--checkpoints")]
    for change, message in cases:
        with pytest.raises(InputError, match=message.replace("-", r"\-")):
            check_config(EvalConfig(**{**base, **change}))
    assert check_config(EvalConfig(**base, batch_frames=None)).beam == 16
    assert np.isfinite(EvalConfig(**base).lm_alpha)
