"""Scoring: the primary decoder (the n-gram beam search, the lexicon pass or greedy), one alignment per utterance
(:mod:`speechtrt.asr.metrics`, jiwer) and corpus rates with speaker-bootstrap intervals (:mod:`speechtrt.asr.stats`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from speechtrt.asr import stats
from speechtrt.asr.decode import Lexicon
from speechtrt.asr.eval.config import EvalConfig
from speechtrt.asr.eval.inputs import Prepared
from speechtrt.asr.eval.run import VariantRun
from speechtrt.asr.metrics import UtteranceErrors, corpus_score, score_pair

ONE_SPEAKER = "n/a (1 speaker): a speaker bootstrap has nothing to resample"
"""Why an interval is not given for a set with a single speaker (instead of a zero-width ``[x, x]``)."""


@dataclass
class Scored:
    """One variant's run and its scores against the test references."""

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


def rates(errors: list[UtteranceErrors]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per utterance: word errors, reference words, character errors, reference characters."""
    return (np.array([e.word_errors for e in errors]), np.array([e.ref_words for e in errors]),
            np.array([e.char_errors for e in errors]), np.array([e.ref_chars for e in errors]))


def summarize(errors: list[UtteranceErrors], speakers: list[str], n_boot: int, seed: int) -> dict:
    """Corpus WER/CER, S/D/I, and speaker-bootstrap 95 % intervals for both rates. With one speaker there is
    nothing to resample: the intervals are None and ``ci95_note`` says why."""
    we, ww, ce, cw = rates(errors)
    score = corpus_score(errors).to_json()
    wci = stats.bootstrap_ratio_ci(we, ww, speakers, n_boot=n_boot, seed=seed)
    if wci.clusters < 2:
        return {**score, "ci95": None, "cer_ci95": None, "ci95_note": ONE_SPEAKER, "speakers": wci.clusters}
    cci = stats.bootstrap_ratio_ci(ce, cw, speakers, n_boot=n_boot, seed=seed)
    return {**score, "ci95": wci.to_json(), "cer_ci95": cci.to_json(), "speakers": wci.clusters}


def score_variant(name: str, checkpoint: str, run: VariantRun, refs: list[str],
                  decode: Callable[[VariantRun], list[str]] | None) -> Scored:
    """Score ``run``'s greedy transcripts and, when ``decode`` is given, its primary decoder's transcripts."""
    model, backend, precision = name.split("/")
    t_score = time.perf_counter()
    greedy_errors = [score_pair(r, h) for r, h in zip(refs, run.hypotheses)]
    score_s = time.perf_counter() - t_score
    if decode is None:
        return Scored(name, model, checkpoint, backend, precision, run.hypotheses, greedy_errors, greedy_errors, run,
                      score_s, 0.0)
    t_dec = time.perf_counter()
    primary = decode(run)
    dec_s = time.perf_counter() - t_dec
    errors = [score_pair(r, h) for r, h in zip(refs, primary)]
    return Scored(name, model, checkpoint, backend, precision, primary, errors, greedy_errors, run, score_s, dec_s)


@dataclass
class LMDecoder:
    """The n-gram beam search with its language model and weights (tuned on a development set when asked)."""

    lm: "NGramLM"  # noqa: F821 (speechtrt.asr.lm, imported lazily)
    beam: "BeamConfig"  # noqa: F821
    tuning: dict | None

    @classmethod
    def prepare(cls, cfg: EvalConfig, test_refs: list[str], dev_logprobs: Callable[[], list[np.ndarray]] | None,
                dev: list[Prepared] | None, log: Callable[[str], None] = print) -> "LMDecoder":
        """The decoder for ``cfg``; with ``dev`` (the ``tune_on`` utterances) its weights are grid-searched there on
        the log-probabilities ``dev_logprobs()`` returns (the first checkpoint's torch FP32 run)."""
        from speechtrt.asr.lm import BeamConfig, training_lm, tune_weights

        lm = training_lm(cfg.text_source, order=cfg.lm_order)
        overlap = sum(r in lm.training_sentences for r in set(test_refs))
        if overlap:
            log(f"warning: {overlap} test reference(s) are sentences of the language model's text; the test set "
                "should come from the held-out split (speechtrt data synth --split test)")
        beam = BeamConfig(alpha=cfg.lm_alpha, beta=cfg.lm_beta, beam=cfg.beam)
        if not dev or dev_logprobs is None:
            return cls(lm, beam, None)
        dev_refs = [p.reference for p in dev]
        log_probs = dev_logprobs()
        tune_lm = training_lm(cfg.text_source, order=cfg.lm_order, exclude=dev_refs)
        log(f"tuning the decoder's weights on {len(dev)} development utterances ({cfg.tune_on}) with "
            f"{cfg.checkpoints[0]}; language model without their sentences:")
        result = tune_weights(log_probs, dev_refs, tune_lm, beam=max(4, cfg.beam // 2), log=log)
        beam = BeamConfig(alpha=result["alpha"], beta=result["beta"], beam=cfg.beam)
        tuning = {"manifest": cfg.tune_on, "utterances": len(dev), "checkpoint": cfg.checkpoints[0], **result}
        log(f"decoder weights: alpha {beam.alpha}, beta {beam.beta} (dev WER {result['wer']:.4f})")
        return cls(lm, beam, tuning)

    def decode(self, log_probs: list[np.ndarray]) -> list[str]:
        from speechtrt.asr.lm import ctc_beam_search

        return [ctc_beam_search(x, self.lm, self.beam) for x in log_probs]


def primary_decoder(cfg: EvalConfig, decoder: LMDecoder | None, lexicon: Lexicon | None
                    ) -> Callable[[VariantRun], list[str]] | None:
    """The primary transcript of a run (None: greedy is primary)."""
    if decoder is not None:
        return lambda run: decoder.decode(run.log_probs)
    if lexicon is not None and cfg.decoder == "lexicon":
        return lambda run: [lexicon.correct(h) for h in run.hypotheses]
    return None


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
