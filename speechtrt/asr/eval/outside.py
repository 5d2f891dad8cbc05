"""An ASR model of your own (:class:`speechtrt.models.protocol.OfflineASRModel`) exported and scored on a few
spoken held-out sentences, on each backend: the check that its graph transcribes as its module does.

``speechtrt eval`` runs the reference checkpoints with everything around them (dialect statistics, the seed loop,
classifier trimming); this is the small path a new model takes first: export with parity → the same greedy CTC
decode and the same corpus WER/CER (:mod:`speechtrt.asr.metrics`) on espeak-ng audio of test-split sentences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from speechtrt.asr.decode import greedy_batch
from speechtrt.asr.metrics import corpus_score, score_pair
from speechtrt.errors import InputError


def spoken_sentences(count: int, seed: int = 0, voice: str = "en-us", text_source=None) -> tuple[list[str], list]:
    """``count`` test-split sentences and their 80-bin log-mel features, spoken by espeak-ng."""
    import random

    from speechtrt.asr.data import load_sentences, sentence_split
    from speechtrt.models.audio import espeak_speech, log_mel

    pool = [s for s in load_sentences(text_source) if sentence_split(s) == "test"]
    random.Random(seed).shuffle(pool)
    texts = pool[:count]
    return texts, [log_mel(espeak_speech(t, voice=voice)) for t in texts]


def evaluate_outside(ref, onnx_dir: str | Path, sentences: int = 8, backends: tuple[str, ...] = ("torch", "ort"),
                     precision: str = "fp32", seed: int = 0, text_source=None) -> dict:
    """Export ``ref.model`` (a :class:`~speechtrt.models.loading.ModelRef` of an offline ASR model) into
    ``onnx_dir`` with the parity check, then transcribe ``sentences`` spoken sentences on every backend; returns
    ``{"utterances", "variants": {"<backend>-<precision>": {"wer", "cer", "hypotheses"}}}``."""
    from speechtrt.export.components import components_of
    from speechtrt.pipeline import ensure_artifact, export_component
    from speechtrt.runtime.open import Artifacts, open_runner

    if ref.kind != "asr":
        raise InputError(f"{ref.name}: an offline ASR model is needed here (this one is {ref.kind})")
    comp = components_of(ref.model, ref.name)[0]
    onnx_dir = Path(onnx_dir)
    if not (onnx_dir / f"{comp.name}.onnx").is_file():
        export_component(comp, ref.model, onnx_dir, source=ref.source)
    artifacts = Artifacts(onnx_dir=onnx_dir, engine_dir=onnx_dir / "engines", model=ref.model, model_name=ref.name)
    texts, feats = spoken_sentences(sentences, seed, text_source=text_source)
    lengths = np.array([f.shape[0] for f in feats], dtype=np.int64)
    padded = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        padded[i, : f.shape[0]] = f
    out: dict = {"model": ref.name, "component": comp.name, "utterances": len(texts), "variants": {}}
    for backend in backends:
        ensure_artifact(comp, precision, backend, artifacts)
        runner = open_runner(comp, backend, precision, "cpu", artifacts, threads=1)
        try:
            res = runner.infer({"features": padded, "feature_lengths": torch.from_numpy(lengths)})
        finally:
            runner.close()
        hyps = greedy_batch(res["log_probs"].float().numpy(), res["output_lengths"].numpy())
        score = corpus_score([score_pair(r, h) for r, h in zip(texts, hyps)])
        out["variants"][f"{backend}-{precision}"] = {"wer": score.wer, "cer": score.cer, "hypotheses": hyps}
    out["references"] = texts
    return out
