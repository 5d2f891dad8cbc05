"""ASR round-trip intelligibility: synthesized audio → the shipped asr-medium → WER/CER against the text.

The judge is the shipped ``checkpoints/asr-medium.pt`` (trained on espeak-ng speech of six English accents), run in
PyTorch FP32 on the 16 kHz log-mel evaluation uses. Two decoders: greedy best path (fast; what training monitors) and
the evaluation's default n-gram beam search (``speechtrt eval``'s weights). The language model is built from the
text source's training split **without** the sentences being judged (``exclude``), so a development sentence that
the voice never heard is not known to the decoder either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechtrt.asr.decode import greedy_batch
from speechtrt.asr.metrics import corpus_score, score_pair
from speechtrt.models.audio import FEATURES, log_mel, resample

DEFAULT_JUDGE = Path(__file__).resolve().parents[2] / "checkpoints" / "asr-medium.pt"


@dataclass
class RoundTrip:
    """Transcripts and corpus scores of one set of utterances."""

    references: list[str]
    greedy: list[str]
    lm: list[str] | None

    def scores(self) -> dict:
        g = corpus_score([score_pair(r, h) for r, h in zip(self.references, self.greedy)])
        out = {"greedy_cer": g.cer, "greedy_wer": g.wer}
        if self.lm is not None:
            s = corpus_score([score_pair(r, h) for r, h in zip(self.references, self.lm)])
            out.update({"cer": s.cer, "wer": s.wer})
        return out


class ASRJudge:
    """Transcribes audio with asr-medium; ``lm=True`` adds the default language-model decoder."""

    def __init__(self, checkpoint: str | Path = DEFAULT_JUDGE, lm: bool = True, exclude=(), text_source=None):
        from speechtrt.models.checkpoints import load_checkpoint

        self.model, _ = load_checkpoint(checkpoint)
        self.model = self.model.float().eval()
        self.decoder = None
        if lm:
            from speechtrt.asr.eval import EvalConfig
            from speechtrt.asr.lm import BeamConfig, training_lm

            defaults = EvalConfig(manifest="", checkpoints=(str(checkpoint),))
            self.beam = BeamConfig(alpha=defaults.lm_alpha, beta=defaults.lm_beta, beam=defaults.beam)
            self.decoder = training_lm(text_source, order=defaults.lm_order, exclude=exclude)

    def log_probs(self, audios: list[np.ndarray], sample_rate: int, batch: int = 16
                  ) -> list[np.ndarray]:
        """Per utterance [T', V] log-probabilities (trimmed to its length)."""
        feats = [log_mel(resample(np.asarray(a, dtype=np.float32), sample_rate, FEATURES.sample_rate))
                 for a in audios]
        out: list[np.ndarray] = [None] * len(feats)  # type: ignore[list-item]
        order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
        for j in range(0, len(order), batch):
            ids = order[j:j + batch]
            longest = max(max(feats[i].shape[0] for i in ids), 1)
            x = torch.zeros(len(ids), longest, FEATURES.n_mels)
            for r, i in enumerate(ids):
                x[r, : feats[i].shape[0]] = feats[i]
            lengths = torch.tensor([max(feats[i].shape[0], 1) for i in ids])
            with torch.inference_mode():
                lp, ol = self.model(x, lengths)
            for r, i in enumerate(ids):
                out[i] = lp[r, : int(ol[r])].float().numpy()
        return out

    def round_trip(self, references: list[str], audios: list[np.ndarray], sample_rate: int,
                   lm: bool | None = None) -> RoundTrip:
        lps = self.log_probs(audios, sample_rate)
        greedy = [greedy_batch(x[None], np.array([x.shape[0]]))[0] for x in lps]
        use_lm = self.decoder is not None if lm is None else (lm and self.decoder is not None)
        lm_hyps = None
        if use_lm:
            from speechtrt.asr.lm import ctc_beam_search

            lm_hyps = [ctc_beam_search(x, self.decoder, self.beam) for x in lps]
        return RoundTrip(list(references), greedy, lm_hyps)
