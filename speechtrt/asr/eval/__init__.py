"""Batched ASR evaluation: checkpoints × backends × precisions on a manifest, scored per dialect with honest
statistics, timed after warm-up, written as JSON + Markdown + PNG.

Flow (:mod:`.evaluation`): read the manifest and load every usable utterance once (:mod:`.inputs`; bad inputs are
counted, listed and skipped or repaired, never fatal) → 80-bin log-mel with the shared front end → for each variant
(:mod:`.variants`: the artifact made by :func:`speechtrt.pipeline.ensure_artifact`, the runner opened by
:func:`speechtrt.runtime.open.open_runner`), length-bucketed padded batches (:mod:`.run`) → greedy CTC, and the
primary decoder (:mod:`.scoring`): the n-gram beam search of :mod:`speechtrt.asr.lm` (default) or the lexicon pass
of :mod:`speechtrt.asr.decode` → one alignment per utterance (:mod:`speechtrt.asr.metrics`, jiwer) → corpus WER/CER
with speaker-bootstrap intervals, paired model tests, dialect tests with Holm correction (:mod:`.report`,
:mod:`speechtrt.asr.stats`) → ``asr_eval.json``, ``asr_eval.md`` (:mod:`.markdown`) and PNGs (:mod:`.plots`).

Timing: compute = backend forward + greedy decode, summed over batches after one untimed warm-up batch; RTF =
compute / audio, RTFx = audio / compute. The beam search's time is reported on its own (``decode_seconds``,
``rtfx_with_decoder``): it is single-threaded Python and the same for every backend. The seed's per-utterance loop
(batch 1, per-token ``.item()`` CTC decode) runs on the same utterances in the same process with the same thread
count, so the batched speed-up is measured, not assumed.
"""

import importlib

_EXPORTS = {
    "config": ("DECODERS", "EvalConfig", "check_config"),
    "evaluation": ("evaluate", "quick_score", "write_outputs"),
    "inputs": ("InputProblem", "Prepared", "auto_batch_frames", "length_buckets", "pad_batch", "prepare_inputs"),
    "report": ("build_report",),
    "run": ("VariantRun", "run_batched", "seed_loop"),
    "variants": ("BackendUnavailable", "CTCForward", "EvaluatedModel", "VariantOptions", "make_artifact",
                 "model_component", "open_variant"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Names are imported on first use, so the command checks its flags (``config``) without loading torch."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return value
