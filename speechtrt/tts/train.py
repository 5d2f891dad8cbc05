"""Training a voice (:class:`~speechtrt.models.voice.VoiceTTS`) on prepared espeak-ng speech, bounded by time.

Loss per batch: L1 of the decoder's frames and of the postnet's mel against the target (normalised log-mel), the
stop token's binary cross-entropy (positive at each text's last decoder frame, weighted by ``stop_pos_weight``)
and guided attention (Tachibana et al., 2017) on **every cross-attention head**: attention mass far from the text's
diagonal, ``1 − exp(−(s/S − t/T)² / 2g²)``, is penalised, so every head aligns monotonically.

**Exposure bias.** A decoder trained only on true previous frames meets its own, imperfect frames at inference and
drifts. Two levers act on the inputs the decoder sees in training:

* *Parallel scheduled sampling* (Duckworth et al., 2019): a no-gradient pass over the true inputs predicts every
  frame; the pass that learns then reads, at each position independently with probability ``rate``, the
  prediction instead of the truth. With ``ss_passes`` > 2 the mixing is repeated on the newest predictions, so
  inputs are several generations deep in the model's own output, as in free running. ``rate`` is 0 for
  ``ss_start`` minutes (the alignment forms on true inputs), then rises linearly to ``ss_rate`` over ``ss_ramp``.
* Gaussian noise of standard deviation ``input_noise`` on the true inputs.

**Aligned voices** remove its cause instead (``durations_from``; :mod:`speechtrt.tts.align`): the voice predicts
phoneme durations and is trained with the true ones in place (``espeak``: espeak-ng's own timing; or a path: an
attention voice's attention), its cross-attention prior is a Gaussian of ``aligned_sigma`` steps around each
phoneme's true centre instead of the diagonal, and the duration loss is the squared error of ``log(1 + d)``. With
``feedback=False`` the decoder never reads its frames, so there is nothing to sample and nothing to drift.

**Monitoring and selection.** Every ``eval_every`` minutes of training the model decodes the first ``monitor``
development sentences free-running with the cached step to its stop token (the runtime's path), the audio goes
through Griffin-Lim (the FFT twin of the exported one) and asr-medium (greedy), and the same for teacher-forced
frames; stop-length agreement against the reference. A row per evaluation goes to ``<out>.csv``. The checkpoint with
the lowest free-running CER is written to ``out`` (FP16 weights); ``<out>.last.pt`` holds the latest FP32 weights
and optimizer state (``init_from`` takes either). Development sentences are training-split sentences never
trained on; test sentences are never seen here.

The learning rate warms up over ``warmup_steps`` and follows a cosine to ``final_lr_fraction`` of the peak at the
end of the budget; a later sitting resumes from a checkpoint with its own budget and peak.
"""

from __future__ import annotations

import csv
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from speechtrt.errors import InputError
from speechtrt.models.voice import VoiceConfig, VoiceTTS, align_voice, build_voice, regroup_voice


@dataclass(frozen=True)
class VoiceTrainConfig:
    data: str = "data/voice"
    out: str = "checkpoints/voice-en.pt"
    minutes: float = 60.0
    seed: int = 0
    threads: int = 1
    init_from: str | None = None
    batch_frames: int = 6000  # padded mel frames per batch
    peak_lr: float = 1e-3
    warmup_steps: int = 300
    final_lr_fraction: float = 0.1
    weight_decay: float = 1e-6
    clip_norm: float = 1.0
    stop_pos_weight: float = 5.0
    guided_weight: float = 2.0
    guided_sigma: float = 0.2
    ss_rate: float = 0.5
    ss_passes: int = 2
    ss_start: float = 10.0  # minutes of this sitting on true inputs before sampling starts
    ss_ramp: float = 20.0  # minutes over which the rate rises to ss_rate
    input_noise: float = 0.0
    eval_every: float = 12.0  # minutes of training between development evaluations
    monitor: int = 30
    log_every: int = 50
    reduction: int | None = None  # None: the checkpoint's (new models: 4); another value regroups a checkpoint
    prenet_dim: int = 128
    feedback: bool | None = None  # None: the checkpoint's (new models: True); False: decoder ignores its frames
    durations_from: str | None = None  # an attention voice whose attention gives the durations of an aligned voice
    duration_weight: float = 1.0
    aligned_sigma: float = 1.0  # decoder steps: width of an aligned voice's attention prior around each phoneme
    dropout: float | None = None  # None: the checkpoint's (new models: 0.1); encoder, decoder and convs (not the prenet)

    def check(self) -> None:
        """Raise InputError naming the first bad setting."""
        def bad(flag: str, value, need: str):
            raise InputError(f"--{flag.replace('_', '-')} {value!r}: {need}")

        if self.minutes <= 0:
            bad("minutes", self.minutes, "the training budget must be positive")
        if self.reduction is not None and not 1 <= self.reduction <= 8:
            bad("reduction", self.reduction, "frames per decoder step must be 1..8")
        if not 0.0 <= self.ss_rate <= 1.0:
            bad("ss_rate", self.ss_rate, "a sampling rate is a probability in [0, 1]")
        if self.ss_passes < 1:
            bad("ss_passes", self.ss_passes, "at least 1 pass (1 = teacher forcing only)")
        if self.batch_frames < 500:
            bad("batch_frames", self.batch_frames, "at least 500 mel frames per batch")
        if self.peak_lr <= 0 or self.peak_lr > 0.1:
            bad("lr", self.peak_lr, "a learning rate in (0, 0.1]")
        if self.eval_every <= 0:
            bad("eval_every", self.eval_every, "minutes between evaluations must be positive")
        if self.monitor < 1:
            bad("monitor", self.monitor, "at least one development sentence")
        if self.ss_start < 0 or self.ss_ramp < 0 or self.input_noise < 0:
            bad("ss_start/ss_ramp/input_noise", (self.ss_start, self.ss_ramp, self.input_noise), "must be >= 0")
        if self.init_from and not Path(self.init_from).is_file():
            bad("init_from", self.init_from, "no such file")
        if self.durations_from and self.durations_from != "espeak" and not Path(self.durations_from).is_file():
            bad("durations_from", self.durations_from, "neither `espeak` nor a file")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            bad("dropout", self.dropout, "a dropout probability in [0, 1)")
        if self.aligned_sigma <= 0 or self.duration_weight < 0:
            bad("aligned_sigma/duration_weight", (self.aligned_sigma, self.duration_weight), "sigma > 0, weight >= 0")


# ---------------------------------------------------------------- batches


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, S] int64, 0-padded
    text_lengths: torch.Tensor  # [B]
    targets: torch.Tensor  # [B, T, r·n_mels] normalised log-mel, silence-padded
    groups: torch.Tensor  # [B] decoder frames per utterance
    texts: list[str]
    durations: torch.Tensor | None = None  # [B, S] decoder steps per phoneme (an aligned voice's targets)

    @property
    def inputs(self) -> torch.Tensor:
        """The true previous decoder frame of every position (zeros at position 0)."""
        return F.pad(self.targets[:, :-1], (0, 0, 1, 0))


def make_batch(items: list[dict], mean: torch.Tensor, std: torch.Tensor, reduction: int, silence: torch.Tensor
               ) -> Batch:
    n_mels = mean.shape[0]
    groups = torch.tensor([math.ceil(x["mel"].shape[0] / reduction) for x in items])
    t = int(groups.max())
    targets = silence.repeat(len(items), t * reduction, 1)  # [B, T·r, n_mels]
    for i, x in enumerate(items):
        targets[i, : x["mel"].shape[0]] = (x["mel"].float() - mean) / std
    s = max(int(x["tokens"].shape[0]) for x in items)
    tokens = torch.zeros(len(items), s, dtype=torch.int64)
    for i, x in enumerate(items):
        tokens[i, : x["tokens"].shape[0]] = x["tokens"].long()
    lengths = torch.tensor([int(x["tokens"].shape[0]) for x in items])
    durations = None
    if all("durations" in x for x in items):
        durations = torch.zeros(len(items), s)
        for i, x in enumerate(items):
            durations[i, : x["durations"].shape[0]] = x["durations"].float()
    return Batch(tokens, lengths, targets.reshape(len(items), t, reduction * n_mels), groups,
                 [x["text"] for x in items], durations)


def length_batches(lengths: list[int], batch_frames: int, rng: random.Random) -> list[list[int]]:
    """Indices bucketed by length (``longest × count ≤ batch_frames``), batch order shuffled."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    out, cur, longest = [], [], 0
    for i in order:
        if cur and max(longest, lengths[i]) * (len(cur) + 1) > batch_frames:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, lengths[i])
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------- losses


def guided_attention_loss(weights: torch.Tensor, text_lengths: torch.Tensor, groups: torch.Tensor, sigma: float
                          ) -> torch.Tensor:
    """Mean off-diagonal attention mass. weights [L, B, H, T, S]; text_lengths, groups [B]."""
    _, _, _, t, s = weights.shape
    tt = torch.arange(t)[None, :, None] / groups[:, None, None].float()  # [B, T, 1]
    ss = torch.arange(s)[None, None, :] / text_lengths[:, None, None].float()  # [B, 1, S]
    penalty = 1.0 - torch.exp(-((ss - tt) ** 2) / (2 * sigma * sigma))
    valid = (torch.arange(t)[None, :, None] < groups[:, None, None]) & (torch.arange(s)[None, None, :]
                                                                         < text_lengths[:, None, None])
    penalty = penalty * valid  # [B, T, S]
    per = (weights * penalty[None, :, None]).sum(dim=(-1, -2))  # [L, B, H]
    return (per / groups[None, :, None].float()).mean()


def aligned_attention_loss(weights: torch.Tensor, durations: torch.Tensor, text_lengths: torch.Tensor,
                           groups: torch.Tensor, sigma: float) -> torch.Tensor:
    """Mean attention mass away from the phonemes a step speaks. weights [L, B, H, T, S]; durations [B, S] decoder
    steps per phoneme; the prior of step t is a Gaussian (``sigma`` steps) around each phoneme's centre."""
    _, _, _, t, s = weights.shape
    centres = durations.cumsum(-1) - 0.5 * durations  # [B, S]
    steps = torch.arange(t)[None, :, None] + 0.5  # [1, T, 1]
    penalty = 1.0 - torch.exp(-((steps - centres[:, None, :]) ** 2) / (2 * sigma * sigma))
    valid = (torch.arange(t)[None, :, None] < groups[:, None, None]) & (torch.arange(s)[None, None, :]
                                                                         < text_lengths[:, None, None])
    per = (weights * (penalty * valid)[None, :, None]).sum(dim=(-1, -2))  # [L, B, H]
    return (per / groups[None, :, None].float()).mean()


def aligned_memory(model: VoiceTTS, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(memory with the true durations in place, predicted log durations) of an aligned voice; (None, None) else."""
    if not model.config.aligned:
        return None, None
    if batch.durations is None:
        raise InputError("an aligned voice trains on durations: pass --durations-from (`espeak`, or an attention "
                         "voice)")
    return model.encode_timed(batch.tokens, batch.text_lengths, batch.durations)


def losses(model: VoiceTTS, batch: Batch, inputs: torch.Tensor, cfg: VoiceTrainConfig) -> dict[str, torch.Tensor]:
    memory, log_d = aligned_memory(model, batch)
    frames, stop_logits, weights = model.teacher_forced(batch.tokens, batch.text_lengths, inputs, memory=memory)
    b, t, _ = frames.shape
    r = model.config.reduction
    valid = (torch.arange(t)[None, :] < batch.groups[:, None]).float()  # [B, T]
    count = valid.sum() * frames.shape[-1]
    l1 = ((frames - batch.targets).abs().sum(-1) * valid).sum() / count
    post = model.postnet(frames.reshape(b, t * r, -1))
    post_valid = valid.repeat_interleave(r, dim=1)
    post_l1 = ((post - batch.targets.reshape(b, t * r, -1)).abs().sum(-1) * post_valid).sum() / count
    stop_target = (torch.arange(t)[None, :] == (batch.groups[:, None] - 1)).float()
    stop = (F.binary_cross_entropy_with_logits(stop_logits, stop_target, reduction="none",
                                               pos_weight=torch.tensor(cfg.stop_pos_weight)) * valid).sum() / valid.sum()
    if log_d is None:
        guided = guided_attention_loss(weights, batch.text_lengths, batch.groups, cfg.guided_sigma)
        duration = torch.zeros(())
    else:
        guided = aligned_attention_loss(weights, batch.durations, batch.text_lengths, batch.groups, cfg.aligned_sigma)
        keep = (torch.arange(log_d.shape[1])[None, :] < batch.text_lengths[:, None]).float()
        duration = (((log_d - torch.log1p(batch.durations)) ** 2) * keep).sum() / keep.sum()
    total = l1 + post_l1 + stop + cfg.guided_weight * guided + cfg.duration_weight * duration
    return {"loss": total, "l1": l1, "post_l1": post_l1, "stop": stop, "guided": guided, "duration": duration,
            "frames": frames}


def sampled_inputs(model: VoiceTTS, batch: Batch, rate: float, passes: int, noise: float,
                   rng: torch.Generator) -> torch.Tensor:
    """Decoder inputs for the learning pass: true previous frames, each replaced by the model's own prediction
    with probability ``rate`` (``passes − 1`` no-gradient generations deep), plus optional Gaussian noise."""
    truth = batch.inputs
    if noise > 0:
        truth = truth + noise * torch.randn(truth.shape, generator=rng)
    if rate <= 0 or passes < 2:
        return truth
    inputs = truth
    with torch.no_grad():
        memory = aligned_memory(model, batch)[0] if model.config.aligned else model.encode(batch.tokens,
                                                                                             batch.text_lengths)
        for _ in range(passes - 1):
            pred, _, _ = model.teacher_forced(batch.tokens, batch.text_lengths, inputs, memory=memory)
            own = F.pad(pred[:, :-1], (0, 0, 1, 0))
            pick = (torch.rand(own.shape[:2], generator=rng) < rate)[..., None]
            inputs = torch.where(pick, own, truth)
    return inputs


# ---------------------------------------------------------------- evaluation


def evaluate_dev(model: VoiceTTS, items: list[dict], stats: dict, judge, batch: int = 10,
                 lm: bool = False, exported_vocoder: bool = False, keep: dict | None = None) -> dict:
    """Free-running and teacher-forced ASR round trip of ``items`` plus stop-length agreement (eval mode).

    ``exported_vocoder``: vocode with :meth:`VoiceTTS.vocoder_inference` (the exported graph's operations) instead
    of its FFT twin. ``keep``: a dict that receives the texts, audio and transcripts."""
    was_training = model.training
    model.eval()
    c = model.config
    silence = ((math.log(c.mel.log_floor) - stats["mean"]) / stats["std"])[None, None]
    texts, free_audio, tf_audio, ratios, stopped = [], [], [], [], []
    tf_l1 = []
    order = sorted(range(len(items)), key=lambda i: items[i]["tokens"].shape[0])
    with torch.no_grad():
        for j in range(0, len(order), batch):
            sel = [items[i] for i in order[j:j + batch]]
            bt = make_batch(sel, stats["mean"], stats["std"], c.reduction, silence)
            cap = min(c.max_frames, int(2.5 * int(bt.text_lengths.max())) + 10)
            frames, steps = model.generate(bt.tokens, bt.text_lengths, max_steps=cap)
            # an aligned voice is teacher-forced with its true durations where known (else its own prediction)
            tf_memory = aligned_memory(model, bt)[0] if bt.durations is not None else None
            tf_frames, _, _ = model.teacher_forced(bt.tokens, bt.text_lengths, bt.inputs, memory=tf_memory)
            for i in range(len(sel)):
                n, g = int(steps[i]), int(bt.groups[i])
                stopped.append(n < cap)
                ratios.append(n / g)
                vocode = model.vocoder_inference if exported_vocoder else (
                    lambda f: model.griffin_lim.fast(model.log_mel(f)))
                free_audio.append(vocode(frames[i:i + 1, :n])[0].numpy())
                tf_audio.append(vocode(tf_frames[i:i + 1, :g])[0].numpy())
                tf_l1.append(float((tf_frames[i, :g] - bt.targets[i, :g]).abs().mean()))
                texts.append(sel[i]["text"])
    free_rt = judge.round_trip(texts, free_audio, c.sample_rate, lm=lm)
    tf_rt = judge.round_trip(texts, tf_audio, c.sample_rate, lm=lm)
    free, tf = free_rt.scores(), tf_rt.scores()
    if keep is not None:
        keep.update(texts=texts, free_audio=free_audio, tf_audio=tf_audio, free=free_rt, tf=tf_rt, ratios=ratios)
    ratios_a = np.array(ratios)
    model.train(was_training)
    return {
        **{f"free_{k}": v for k, v in free.items()}, **{f"tf_{k}": v for k, v in tf.items()},
        "tf_l1": float(np.mean(tf_l1)), "stopped": float(np.mean(stopped)),
        "length_ratio_median": float(np.median(ratios_a)),
        "length_within_10pct": float(np.mean(np.abs(ratios_a - 1) <= 0.1)),
        "utterances": len(texts),
    }


# ---------------------------------------------------------------- the loop


def load_initial(cfg: VoiceTrainConfig, stats: dict) -> tuple[VoiceTTS, dict | None, dict]:
    """The model to train: from ``init_from`` (a checkpoint or a ``.last.pt`` training state) or seeded.

    With ``init_from`` and a ``reduction`` other than the checkpoint's, the voice is regrouped
    (:func:`~speechtrt.models.voice.regroup_voice`) and the optimizer starts afresh."""
    if cfg.init_from:
        blob = torch.load(cfg.init_from, map_location="cpu", weights_only=False)
        if isinstance(blob, dict) and blob.get("format") == "speechtrt-voice-train-state/1":
            model = VoiceTTS(VoiceConfig.from_dict(blob["config"]))
            model.load_state_dict(blob["state_dict"])
            opt_state, meta = blob.get("optimizer"), blob.get("meta", {})
        else:
            from speechtrt.models.checkpoints import load_checkpoint

            model, meta = load_checkpoint(cfg.init_from)
            if not isinstance(model, VoiceTTS):
                raise InputError(f"--init-from {cfg.init_from} holds a {type(model).__name__}, not a voice")
            opt_state = None
        changes = {k: v for k, v in (("feedback", cfg.feedback), ("dropout", cfg.dropout))
                   if v is not None and v != getattr(model.config, k)}
        if changes:  # neither setting owns a weight: the same state in a model built with the new ones
            state = model.state_dict()
            model = VoiceTTS(replace(model.config, **changes))
            model.load_state_dict(state)
        if cfg.durations_from and not model.config.aligned:
            model, opt_state = align_voice(model.float()), None
        if cfg.reduction is not None and cfg.reduction != model.config.reduction:
            model, opt_state = regroup_voice(model.float(), cfg.reduction), None
        return model.float().train(), opt_state, meta
    config = VoiceConfig(reduction=cfg.reduction or VoiceConfig.reduction, prenet_dim=cfg.prenet_dim,
                         aligned=cfg.durations_from is not None)
    if cfg.feedback is not None:
        config = replace(config, feedback=cfg.feedback)
    if cfg.dropout is not None:
        config = replace(config, dropout=cfg.dropout)
    model = build_voice(config, seed=cfg.seed)
    with torch.no_grad():
        model.mel_mean.copy_(stats["mean"])
        model.mel_std.copy_(stats["std"])
    return model.train(), None, {}


def _reduction_of(checkpoint: str) -> int:
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(blob["config"].get("reduction", VoiceConfig.reduction))


def learning_rate(cfg: VoiceTrainConfig, step: int, fraction: float) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps)
    f = cfg.final_lr_fraction
    return cfg.peak_lr * warm * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction))))


def ss_rate_at(cfg: VoiceTrainConfig, minutes: float) -> float:
    if minutes < cfg.ss_start or cfg.ss_rate == 0:
        return 0.0
    if cfg.ss_ramp == 0:
        return cfg.ss_rate
    return cfg.ss_rate * min(1.0, (minutes - cfg.ss_start) / cfg.ss_ramp)


CSV_FIELDS = ("train_minutes", "eval_minutes", "wall_minutes", "prior_train_minutes", "step", "epoch", "lr", "ss_rate", "loss", "l1",
              "post_l1", "stop", "guided", "duration", "tf_l1", "free_greedy_cer", "free_greedy_wer", "tf_greedy_cer",
              "tf_greedy_wer", "stopped", "length_ratio_median", "length_within_10pct", "best", "eval_seconds")


def train_voice(cfg: VoiceTrainConfig, log=print, progress=None) -> dict:
    """Train for ``cfg.minutes`` of training time (evaluations not counted); returns the summary of the sitting.

    Time is the process's CPU time (``time.process_time``), so a budget means the same compute on a shared machine
    whatever else runs there; with ``threads=1`` a minute of it is a CPU core-minute. Wall time is logged beside it.

    ``progress(fraction, text)`` is called after every step when given.
    """
    from speechtrt.models.checkpoints import save_checkpoint
    from speechtrt.tts.data import load_voice_data
    from speechtrt.tts.intelligibility import ASRJudge

    cfg.check()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    train, dev, stats, data_meta = load_voice_data(cfg.data)
    model, opt_state, prior = load_initial(cfg, stats)
    c = model.config
    if c.aligned:
        from speechtrt.tts.align import durations_for

        if not cfg.durations_from:
            raise InputError("the voice is aligned (it predicts durations): pass --durations-from, the attention "
                             "voice whose attention gives its training durations")
        if cfg.durations_from != "espeak" and c.reduction != _reduction_of(cfg.durations_from):
            raise InputError(f"--durations-from {cfg.durations_from} counts durations in steps of "
                             f"{_reduction_of(cfg.durations_from)} frames; the voice steps {c.reduction}")
        durations_for(cfg.data, cfg.durations_from, {"train": train, "dev": dev}, c.reduction, log=log)
        train = [x for x in train if "durations" in x]
    if cfg.init_from and c.prenet_dim != cfg.prenet_dim:
        log(f"note: --init-from sets the architecture (prenet {c.prenet_dim}); "
            "--prenet-dim is ignored")
    mean, std = model.mel_mean.clone(), model.mel_std.clone()
    model_stats = {"mean": mean, "std": std}
    silence = ((math.log(c.mel.log_floor) - mean) / std)[None, None]
    monitor = dev[: cfg.monitor]
    judge = ASRJudge(lm=False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or name.endswith("pos_scale") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.peak_lr, betas=(0.9, 0.98))
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_suffix(".csv")
    last_path = out.with_suffix(".last.pt")
    new_csv = not csv_path.exists()
    csv_file = csv_path.open("a", newline="")
    writer = csv.DictWriter(csv_file, fieldnames=CSV_FIELDS)
    if new_csv:
        writer.writeheader()
    prior_minutes = float(prior.get("train_minutes_total", 0.0))
    best = math.inf  # per sitting: give each sitting its own --out and compare their sidecars
    log(f"voice: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, r={c.reduction}, "
        f"{len(train)} training and {len(monitor)} monitored development sentences, {cfg.minutes} min "
        f"(prior {prior_minutes:.1f} min)")
    lengths = [math.ceil(x["mel"].shape[0] / c.reduction) * c.reduction for x in train]
    budget = cfg.minutes * 60
    train_s, eval_s, step, epoch = 0.0, 0.0, 0, 0  # CPU seconds
    wall0 = time.monotonic()
    next_eval = cfg.eval_every * 60
    recent: dict[str, list[float]] = {}
    history = []

    evaluated_at = -1  # the step of the last evaluation: a budget that ends on an evaluation is not evaluated twice

    def do_eval():
        nonlocal best, eval_s, evaluated_at
        if evaluated_at == step:
            return
        evaluated_at = step
        t0 = time.process_time()
        res = evaluate_dev(model, monitor, model_stats, judge)
        seconds = time.process_time() - t0
        eval_s += seconds
        improved = res["free_greedy_cer"] < best
        total_minutes = prior_minutes + train_s / 60
        meta = {"train_minutes_total": round(total_minutes, 2), "sitting_minutes": round(train_s / 60, 2),
                "steps": step, "epochs": epoch, "dev": res, "best_free_greedy_cer": min(best, res["free_greedy_cer"]),
                "config": asdict(cfg), "data": data_meta}
        if improved:
            best = res["free_greedy_cer"]
            save_checkpoint(model.eval(), out, meta, half=True)
            model.train()
        torch.save({"format": "speechtrt-voice-train-state/1", "config": asdict(c), "state_dict": model.state_dict(),
                    "optimizer": opt.state_dict(), "meta": meta}, last_path)
        row = {"train_minutes": round(total_minutes, 2), "eval_minutes": round(eval_s / 60, 2),
               "wall_minutes": round((time.monotonic() - wall0) / 60, 2),
               "prior_train_minutes": round(prior_minutes, 2), "step": step, "epoch": epoch,
               "lr": f"{opt.param_groups[0]['lr']:.2e}", "ss_rate": round(ss_rate_at(cfg, train_s / 60), 3),
               **{k: round(float(np.mean(v)), 4) for k, v in recent.items()},
               **{k: round(v, 4) for k, v in res.items() if k in CSV_FIELDS}, "best": int(improved),
               "eval_seconds": round(seconds, 1)}
        writer.writerow(row)
        csv_file.flush()
        history.append(row)
        log(f"eval @ {total_minutes:.1f} min: free CER {res['free_greedy_cer']:.3f} WER {res['free_greedy_wer']:.3f} | "
            f"teacher-forced CER {res['tf_greedy_cer']:.3f} | stopped {res['stopped']:.2f}, length ratio "
            f"{res['length_ratio_median']:.2f}, within 10% {res['length_within_10pct']:.2f}"
            + (" (best, saved)" if improved else "") + f" [{seconds:.0f} s]")
        recent.clear()

    done = False
    while not done:
        epoch += 1
        for ids in length_batches(lengths, cfg.batch_frames, rng):
            if train_s >= budget:
                done = True
                break
            t0 = time.process_time()
            batch = make_batch([train[i] for i in ids], mean, std, c.reduction, silence)
            rate = ss_rate_at(cfg, train_s / 60)
            inputs = sampled_inputs(model, batch, rate, cfg.ss_passes, cfg.input_noise, gen)
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step, train_s / budget)
            parts = losses(model, batch, inputs, cfg)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            step += 1
            for k in ("loss", "l1", "post_l1", "stop", "guided", "duration"):
                recent.setdefault(k, []).append(parts[k].item())
            train_s += time.process_time() - t0
            if step % cfg.log_every == 0:
                log(f"epoch {epoch} step {step} loss {np.mean(recent['loss'][-cfg.log_every:]):.3f} "
                    f"l1 {np.mean(recent['l1'][-cfg.log_every:]):.3f} guided "
                    f"{np.mean(recent['guided'][-cfg.log_every:]):.4f} ss {rate:.2f} "
                    f"lr {opt.param_groups[0]['lr']:.1e} at {train_s / 60:.1f} min")
            if progress is not None:
                progress(min(1.0, train_s / budget), f"step {step} loss {parts['loss'].item():.3f}")
            if train_s >= next_eval:
                do_eval()
                next_eval += cfg.eval_every * 60
    do_eval()
    csv_file.close()
    return {"steps": step, "epochs": epoch, "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
            "wall_seconds": round(time.monotonic() - wall0, 1), "prior_train_minutes": round(prior_minutes, 2),
            "train_minutes_total": round(prior_minutes + train_s / 60, 2), "best_free_greedy_cer": best,
            "history": history, "config": asdict(cfg), "data": data_meta}



def test_items(count: int, seed: int = 0, voice: str = "en-us", text_source=None) -> list[dict]:
    """``count`` held-out (test-split) sentences spoken and analysed like the training data: for reporting only."""
    from speechtrt.asr.data import load_sentences, sentence_split
    from speechtrt.tts.data import VoiceDataConfig, _readable, utterance

    pool = [s for s in load_sentences(text_source) if sentence_split(s) == "test" and _readable(s)]
    random.Random(seed).shuffle(pool)
    cfg = VoiceDataConfig(voice=voice)
    return [utterance(s, cfg) for s in pool[:count]]


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, dev: int | None = None, test: int = 0,
                        lm: bool = True, exported_vocoder: bool = True, log=print) -> dict:
    """Development (and optionally test-split) numbers of a stored voice checkpoint, as a sidecar records them:
    free-running and teacher-forced CER/WER (greedy and the default LM decoder), stop-length agreement."""
    from speechtrt.models.checkpoints import load_checkpoint
    from speechtrt.tts.data import load_dev_items
    from speechtrt.tts.intelligibility import ASRJudge

    model, _ = load_checkpoint(checkpoint)
    stats = {"mean": model.mel_mean.clone(), "std": model.mel_std.clone()}
    out = {"checkpoint": str(checkpoint), "vocoder": "exported Griffin-Lim (conv STFT)" if exported_vocoder
           else "Griffin-Lim FFT twin"}
    sets = {"dev": load_dev_items(data)[:dev]}
    if test:
        sets["test"] = test_items(test, voice=model.config.phoneme_voice)
    for name, items in sets.items():
        t0 = time.monotonic()
        judge = ASRJudge(lm=lm, exclude=[x["text"] for x in items])
        out[name] = evaluate_dev(model, items, stats, judge, lm=lm, exported_vocoder=exported_vocoder)
        log(f"{name}: {out[name]} ({time.monotonic() - t0:.0f} s)")
    return out
