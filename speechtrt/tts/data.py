"""Training data of a voice: one espeak-ng voice reading training-split sentences, cached as phoneme ids + log-mel.

Reproducible from ``(text source, seed)``: the training split of the sentences (:func:`sentence_split`, the same
hash split the ASR data uses, so no test sentence is ever spoken here) is shuffled with ``seed``; the first
``train_sentences`` are the training set, the next ``dev_sentences`` the development set (training-split sentences
the voice never trains on; checkpoints are chosen on them). espeak-ng is deterministic, so the audio follows.

Written to ``out``: ``train.pt`` and ``dev.pt`` (lists of ``{"text", "tokens" int16, "mel" float16 [T, n_mels]}``:
the raw natural-log mel magnitude of :func:`~speechtrt.models.vocoder.log_mel_magnitude`), ``stats.pt`` (per-bin
mean and standard deviation of the training log-mel) and ``data.json`` (settings, counts, hours).
"""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from speechtrt.errors import InputError
from speechtrt.models.vocoder import MelConfig, log_mel_magnitude


@dataclass(frozen=True)
class VoiceDataConfig:
    out: str = "data/voice"
    voice: str = "en-us"
    rate: int = 175
    pitch: int = 50
    train_sentences: int = 6000
    dev_sentences: int = 100
    seed: int = 0
    text_source: str | None = None
    workers: int = 2


def select_sentences(cfg: VoiceDataConfig) -> tuple[list[str], list[str]]:
    """(training sentences, development sentences): disjoint, both from the training split of the text source."""
    from speechtrt.asr.data import load_sentences, sentence_split

    pool = [s for s in load_sentences(cfg.text_source) if sentence_split(s) == "train" and _readable(s)]
    random.Random(cfg.seed).shuffle(pool)
    need = cfg.train_sentences + cfg.dev_sentences
    if need > len(pool):
        raise InputError(f"{need} sentences asked for ({cfg.train_sentences} train + {cfg.dev_sentences} dev); the "
                         f"text source's training split has {len(pool)}")
    return pool[: cfg.train_sentences], pool[cfg.train_sentences: need]


def _readable(sentence: str) -> bool:
    """False for a sentence the phoneme front end refuses (mis-encoded characters in the source text)."""
    from speechtrt.models.phonemes import normalize_voice_text

    try:
        normalize_voice_text(sentence)
    except InputError:
        return False
    return True


def utterance(text: str, cfg: VoiceDataConfig, mel_cfg: MelConfig = MelConfig()) -> dict:
    """One sentence spoken and analysed: ``{"text", "tokens" int16 [S], "mel" float16 [T, n_mels]}``."""
    from speechtrt.models.audio import espeak_speech
    from speechtrt.models.phonemes import normalize_voice_text, phoneme_ids

    norm = normalize_voice_text(text)
    tokens = phoneme_ids(norm, cfg.voice)
    audio = espeak_speech(norm, voice=cfg.voice, rate=cfg.rate, pitch=cfg.pitch, sample_rate=mel_cfg.sample_rate)
    mel = log_mel_magnitude(audio, mel_cfg)
    return {"text": norm, "tokens": torch.tensor(tokens, dtype=torch.int16), "mel": mel.to(torch.float16)}


def prepare_voice_data(cfg: VoiceDataConfig, log=print) -> dict:
    """Synthesize and analyse the training and development sets into ``cfg.out``; returns the ``data.json``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    mel_cfg = MelConfig()
    train, dev = select_sentences(cfg)
    t0 = time.time()
    summary: dict = {"config": asdict(cfg), "mel": asdict(mel_cfg)}
    for name, texts in (("dev", dev), ("train", train)):
        with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
            items = []
            for i, item in enumerate(pool.map(lambda s: utterance(s, cfg, mel_cfg), texts), start=1):
                items.append(item)
                if i % 500 == 0:
                    log(f"{name}: {i}/{len(texts)} sentences ({time.time() - t0:.0f} s)")
        torch.save(items, out / f"{name}.pt")
        frames = sum(int(x["mel"].shape[0]) for x in items)
        summary[name] = {"sentences": len(items), "frames": frames,
                         "hours": round(frames * mel_cfg.hop / mel_cfg.sample_rate / 3600, 3),
                         "tokens": sum(int(x["tokens"].shape[0]) for x in items)}
        if name == "train":
            mels = torch.cat([x["mel"].float() for x in items])
            stats = {"mean": mels.mean(0), "std": mels.std(0).clamp(min=1e-3)}
            torch.save(stats, out / "stats.pt")
    summary["seconds"] = round(time.time() - t0, 1)
    (out / "data.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"wrote {out}: {summary['train']['sentences']} train ({summary['train']['hours']} h), "
        f"{summary['dev']['sentences']} dev sentences in {summary['seconds']} s")
    return summary


def load_voice_data(folder: str | Path) -> tuple[list[dict], list[dict], dict, dict]:
    """(train items, dev items, stats {"mean", "std"}, data.json) of a prepared folder."""
    folder = Path(folder)
    if not (folder / "train.pt").is_file():
        raise InputError(f"{folder} has no prepared voice data (train.pt): run `speechtrt train tts --prepare` or "
                         "point --data at a folder it wrote")
    train = torch.load(folder / "train.pt", weights_only=False)
    dev = torch.load(folder / "dev.pt", weights_only=False)
    stats = torch.load(folder / "stats.pt", weights_only=True)
    meta = json.loads((folder / "data.json").read_text())
    return train, dev, stats, meta


def load_dev_items(folder: str | Path) -> list[dict]:
    """The development items of a prepared folder (without loading the training set)."""
    path = Path(folder) / "dev.pt"
    if not path.is_file():
        raise InputError(f"{folder} has no prepared voice data (dev.pt): run `speechtrt train tts` with --data there")
    return torch.load(path, weights_only=False)


def mel_stats_of(items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    mels = torch.cat([x["mel"].float() for x in items])
    return mels.mean(0).numpy(), mels.std(0).numpy()
