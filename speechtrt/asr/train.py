"""CTC training of the reference ASR architectures on synthesized (or any manifest's) speech.

The loop is bounded by wall-clock time, not epochs, because the reference checkpoints are trained on shared CPUs:
``TrainConfig.minutes`` is the budget and the learning rate follows it (linear warm-up, then cosine decay to 5 %
of the peak at the deadline). The model sees the exact features evaluation uses (:func:`log_mel`), computed per
batch from the waveform so augmentation can act on audio (:mod:`speechtrt.asr.augment`, seeded, on the fly):

* speed perturbation (0.9 / 1.0 / 1.1), synthetic-room reverberation (RT60 0.2–0.8 s), additive white, pink or
  babble noise (other training utterances) at 5–30 dB SNR, a telephone channel (8 kHz, μ-law), gain;
* SpecAugment on the log-mel: two frequency masks (≤ 12 bins) and two time masks (≤ 4 % of the frames each).

The first ``curriculum_epochs`` epochs visit batches shortest first (SortaGrad): on long utterances a fresh CTC
model sits on its all-blank, input-independent plateau for hundreds of updates, while short ones align at once.
Augmentation is applied to a growing share of utterances (0 at the start, all after ``augment_ramp`` of the
budget): clean data first lets CTC leave its all-blank plateau sooner. Batches are small (``batch_frames`` 3000
padded frames) because on a CPU the convolution front end runs faster per frame on cache-sized batches, and more
updates per hour help more than bigger ones.

Initialisation adapts the seeded model to the features without changing the feature pipeline: the first
convolution is rescaled so that it sees log-mel standardised by the training set's global mean and standard
deviation (``W' = W / σ``, ``b' = b − μ · ΣW'``), classes outside the normaliser's alphabet start with a bias
of −5 (they are never targets), and the LSTM forget gates start open (bias 1).

A larger size can start from a trained smaller one's convolutions (``frontend_from``: the front ends are the same
shape at every offline size), so its LSTM learns on features that already separate speech sounds.

Targets are the normalised reference (:func:`~speechtrt.asr.normalize.normalize_text`) in the seed's character
table, so training and scoring see the same text.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from speechtrt.asr.augment import AUGMENTATIONS, AugmentConfig, BabblePool, augment_waveform, spec_augment
from speechtrt.asr.data import composition, read_manifest
from speechtrt.asr.normalize import normalize_text
from speechtrt.errors import InputError
from speechtrt.models.audio import FEATURES, log_mel, read_wav, resample
from speechtrt.models.text import BLANK, asr_encode


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``batch_frames`` bounds the padded feature frames per batch (memory and step time)."""

    size: str = "small"
    train_manifest: str = "data/asr/train.jsonl"
    out: str = "checkpoints/asr-small.pt"
    minutes: float = 30.0
    max_epochs: int = 1000
    batch_frames: int = 3000
    peak_lr: float = 2e-3
    warmup_steps: int = 100
    augment_ramp: float = 0.3
    curriculum_epochs: int = 2
    frontend_lr_scale: float = 0.1
    weight_decay: float = 1e-5
    clip_norm: float = 5.0
    augment: bool = True
    augmentations: tuple[str, ...] = AUGMENTATIONS  # waveform steps when augmenting (SpecAugment always)
    seed: int = 0
    threads: int = 1
    log_every: int = 25
    save_every_minutes: float = 5.0
    dev_manifest: str | None = None  # a development set whose clean CTC loss is logged (DevProbe)
    dev_every: int = 200  # steps between dev-loss measurements
    dev_utterances: int = 120
    init_from: str | None = None  # warm start: continue from this checkpoint's weights (no init adaptation)
    frontend_from: str | None = None  # warm start the convolutions only, from a checkpoint of any size


@dataclass
class TrainedUtterance:
    samples: np.ndarray  # [N] int16 at 16 kHz
    target: list[int]


def load_training_set(manifest: str | Path) -> list[TrainedUtterance]:
    """Waveforms (int16, 16 kHz mono) and CTC targets of every usable row; unusable rows raise with the reason."""
    rows, problems = read_manifest(manifest)
    if problems:
        raise InputError(f"training manifest {manifest} has {len(problems)} bad line(s), first: line "
                         f"{problems[0].line}: {problems[0].reason}")
    root = Path(manifest).parent
    out = []
    for row in rows:
        samples, rate = read_wav(row.path(root))
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        samples = resample(samples, rate, FEATURES.sample_rate)
        text = normalize_text(row.text)
        if not text:
            continue
        out.append(TrainedUtterance((np.clip(samples, -1, 1) * 32767).astype(np.int16), asr_encode(text)))
    if not out:
        raise InputError(f"training manifest {manifest} has no usable utterances")
    return out


def make_batches(lengths: list[int], batch_frames: int, rng: random.Random, shortest_first: bool = False
                 ) -> list[list[int]]:
    """Length-bucketed batches: sort by length, cut so ``longest × count ≤ batch_frames``; batch order shuffled, or
    shortest first (the curriculum epochs)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, cur, longest = [], [], 0
    for i in order:
        longest_if = max(longest, lengths[i])
        if cur and longest_if * (len(cur) + 1) > batch_frames:
            batches.append(cur)
            cur, longest_if = [], lengths[i]
        cur.append(i)
        longest = longest_if
    if cur:
        batches.append(cur)
    if not shortest_first:
        rng.shuffle(batches)
    return batches


def collate(mels: list[torch.Tensor], targets: list[list[int]]):
    lengths = torch.tensor([m.shape[0] for m in mels], dtype=torch.long)
    batch = torch.zeros(len(mels), int(lengths.max()), mels[0].shape[1])
    for i, m in enumerate(mels):
        batch[i, : m.shape[0]] = m
    flat = torch.tensor([c for t in targets for c in t], dtype=torch.long)
    target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return batch, lengths, flat, target_lengths


def adapt_initialisation(model: torch.nn.Module, data: list[TrainedUtterance], sample: int = 200) -> dict:
    """Fold global feature standardisation into the first convolution and damp never-used output classes."""
    from speechtrt.asr.normalize import ALPHABET

    feats = torch.cat([log_mel(u.samples[: FEATURES.sample_rate * 4].astype(np.float32) / 32767.0)
                       for u in data[:: max(1, len(data) // sample)]])
    mean, std = float(feats.mean()), float(feats.std())
    conv = model.feature_extractor[0] if hasattr(model, "feature_extractor") else model.conv1
    with torch.no_grad():
        conv.weight /= std
        conv.bias -= mean * conv.weight.sum(dim=(1, 2, 3))
        used = torch.zeros(model.classifier.out_features, dtype=torch.bool)
        used[[BLANK, *asr_encode(ALPHABET)]] = True
        model.classifier.bias[~used] = -5.0
        for name, param in model.encoder.named_parameters():
            if name.startswith("bias_ih"):  # gate order i, f, g, o: forget gate starts open
                h = param.shape[0] // 4
                param[h:2 * h] = 1.0
    return {"feature_mean": mean, "feature_std": std}


def copy_frontend(model: torch.nn.Module, checkpoint: str) -> list[str]:
    """Copy the convolution front end of ``checkpoint`` into ``model`` (sizes share it: the convolutions do not
    depend on the hidden width). The projection into the LSTM and everything after it keep their initialisation.
    Returns the names of the copied tensors; raises :class:`InputError` when the front ends differ."""
    from speechtrt.models.checkpoints import load_checkpoint

    source, _ = load_checkpoint(checkpoint)
    src = {k: v for k, v in source.state_dict().items() if k.startswith("feature_extractor.")}
    dst = model.state_dict()
    if not src or any(k not in dst or dst[k].shape != v.shape for k, v in src.items()):
        raise InputError(f"--frontend-from {checkpoint}: its convolution front end does not match a "
                         f"{model.config.size} model's; use a checkpoint of an offline size (small/medium/large)")
    with torch.no_grad():
        for k, v in src.items():
            dst[k].copy_(v.float())
    return sorted(src)


def parameter_groups(model: torch.nn.Module, frontend_scale: float) -> list[dict]:
    """The convolutions and the projection into the LSTM learn at ``frontend_scale`` × the peak rate.

    There is no normalisation between the front end and the LSTM; with Adam every weight of the 2560-wide
    projection moves by about the learning rate per step in a correlated direction, so its output grows by
    hundreds within a few hundred steps, saturates the LSTM gates and leaves the model on its input-independent
    (all-blank) plateau. Scaling those layers' rate by their fan-in ratio keeps the LSTM input in range.
    """
    front = [p for n, p in model.named_parameters() if n.startswith(("feature_extractor", "conv", "projection"))]
    ids = {id(p) for p in front}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": front, "scale": frontend_scale}, {"params": rest, "scale": 1.0}]


def learning_rate(cfg: TrainConfig, step: int, elapsed_fraction: float) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps)
    decay = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed_fraction)))
    return cfg.peak_lr * warm * decay


class DevProbe:
    """Clean CTC loss on a fixed, evenly spread sample of a development manifest, overall and per synthesizer.

    The training-batch loss is a poor progress signal: the curriculum orders batches by length and augmentation
    ramps in, so it can rise while the model improves. This curve moves only with the model.
    """

    def __init__(self, manifest: str | Path, max_utterances: int = 120, batch_frames: int = 3000):
        rows, _ = read_manifest(manifest)
        root = Path(manifest).parent
        picks = sorted({int(i) for i in np.linspace(0, len(rows) - 1, min(max_utterances, len(rows))).round()})
        self.groups, self.mels, self.targets = [], [], []
        for row in (rows[i] for i in picks):
            text = normalize_text(row.text)
            if not text:
                continue
            samples, rate = read_wav(row.path(root))
            samples = resample(samples.mean(axis=1) if samples.ndim == 2 else samples, rate, FEATURES.sample_rate)
            self.groups.append(row.synthesizer or "unknown")
            self.mels.append(log_mel(samples))
            self.targets.append(asr_encode(text))
        if not self.mels:
            raise InputError(f"--dev-manifest {manifest} has no usable utterance")
        self.batches = make_batches([m.shape[0] for m in self.mels], batch_frames, random.Random(0), True)

    def measure(self, model: torch.nn.Module) -> dict:
        """``{"loss": mean per-utterance CTC loss / target length, "by_synthesizer": {...}}`` (no augmentation)."""
        was_training = model.training
        model.eval()
        per_utt = np.zeros(len(self.mels))
        with torch.no_grad():
            for ids in self.batches:
                x, x_len, y, y_len = collate([self.mels[i] for i in ids], [self.targets[i] for i in ids])
                log_probs, out_len = model(x, x_len)
                loss = F.ctc_loss(log_probs.transpose(0, 1), y, out_len, y_len, blank=BLANK, reduction="none",
                                  zero_infinity=True) / y_len.clamp(min=1)
                per_utt[ids] = loss.numpy()
        model.train(was_training)
        groups = np.array(self.groups)
        return {"loss": float(per_utt.mean()),
                "by_synthesizer": {g: float(per_utt[groups == g].mean()) for g in sorted(set(self.groups))}}


def train(cfg: TrainConfig, log=print) -> dict:
    """Train ``cfg.size`` from its seeded initialisation on ``cfg.train_manifest`` for ``cfg.minutes``; save to
    ``cfg.out`` (and every ``save_every_minutes``). Returns a summary: steps, epochs, seconds, final loss, hours."""
    from speechtrt.asr.checkpoint_io import save_compact
    from speechtrt.models import build_asr

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    data = load_training_set(cfg.train_manifest)
    trained_on = composition(read_manifest(cfg.train_manifest)[0])
    augmentation = AugmentConfig(kinds=cfg.augmentations)
    babble = BabblePool([u.samples for u in data])
    hours = sum(len(u.samples) for u in data) / FEATURES.sample_rate / 3600
    log(f"training {cfg.size} on {len(data)} utterances ({hours:.2f} h) for {cfg.minutes} min")
    if cfg.init_from:
        from speechtrt.models.checkpoints import load_checkpoint

        model, prior = load_checkpoint(cfg.init_from)
        if model.config.size != cfg.size:
            raise InputError(f"--init-from {cfg.init_from} holds a {model.config.size} model, not {cfg.size}")
        model = model.float().train()
        feature_stats = {"init_from": cfg.init_from, "prior_steps": prior.get("steps"),
                         "prior_train_seconds": prior.get("train_seconds")}
    else:
        model = build_asr(cfg.size, seed=cfg.seed).train()
        feature_stats = adapt_initialisation(model, data)
        if cfg.frontend_from:
            feature_stats["frontend_from"] = copy_frontend(model, cfg.frontend_from)
    opt = torch.optim.AdamW(parameter_groups(model, cfg.frontend_lr_scale), lr=cfg.peak_lr,
                            weight_decay=cfg.weight_decay)
    lengths = [FEATURES.frames_for(len(u.samples)) for u in data]
    probe = DevProbe(cfg.dev_manifest, cfg.dev_utterances, cfg.batch_frames) if cfg.dev_manifest else None
    dev_curve: list[dict] = []

    def measure_dev(step: int, elapsed: float) -> None:
        point = {"step": step, "minutes": round(elapsed / 60, 2), **probe.measure(model)}
        dev_curve.append(point)
        parts = ", ".join(f"{g} {v:.3f}" for g, v in point["by_synthesizer"].items())
        log(f"dev loss {point['loss']:.3f} ({parts}) at step {step}")

    start = time.monotonic()
    if probe:
        measure_dev(0, 0.0)
    budget = cfg.minutes * 60
    step, epoch, last_save, losses = 0, 0, start, []
    summary = {}
    done = False
    while not done and epoch < cfg.max_epochs:
        epoch += 1
        for batch_ids in make_batches(lengths, cfg.batch_frames, rng, shortest_first=epoch <= cfg.curriculum_epochs):
            elapsed = time.monotonic() - start
            if elapsed >= budget:
                done = True
                break
            mels, targets = [], []
            for i in batch_ids:
                u = data[i]
                if cfg.augment and rng.random() < min(1.0, elapsed / budget / cfg.augment_ramp):
                    mel = spec_augment(log_mel(augment_waveform(u.samples, rng, augmentation, babble, i)), rng)
                else:
                    mel = log_mel(u.samples.astype(np.float32) / 32767.0)
                mels.append(mel)
                targets.append(u.target)
            x, x_len, y, y_len = collate(mels, targets)
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step, elapsed / budget) * group["scale"]
            log_probs, out_len = model(x, x_len)
            loss = F.ctc_loss(log_probs.transpose(0, 1), y, out_len, y_len, blank=BLANK, reduction="mean",
                              zero_infinity=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            losses.append(loss.item())
            step += 1
            if step % cfg.log_every == 0:
                log(f"epoch {epoch} step {step} loss {np.mean(losses[-cfg.log_every:]):.3f} "
                    f"lr {opt.param_groups[0]['lr']:.2e} elapsed {elapsed / 60:.1f} min")
            if probe and step % cfg.dev_every == 0:
                measure_dev(step, time.monotonic() - start)
            if time.monotonic() - last_save > cfg.save_every_minutes * 60:
                save_compact(model.eval(), cfg.out, {"partial": True, "step": step, "epoch": epoch})
                model.train()
                last_save = time.monotonic()
    seconds = time.monotonic() - start
    if probe and (not dev_curve or dev_curve[-1]["step"] != step):
        measure_dev(step, seconds)
    summary = {
        "steps": step, "epochs": epoch, "train_seconds": round(seconds, 1),
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "train_hours_audio": round(hours, 3), "init": feature_stats, "train_utterances": len(data),
        "config": asdict(cfg), "composition": trained_on,
        "augmentation": asdict(augmentation) if cfg.augment else None, "dev_loss": dev_curve or None,
    }
    save_compact(model.eval(), cfg.out, {"partial": False, **summary})
    log(f"saved {cfg.out} after {step} steps, {epoch} epochs, {seconds / 60:.1f} min")
    return summary
