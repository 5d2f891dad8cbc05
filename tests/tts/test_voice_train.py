"""Voice training: batches, losses, scheduled sampling, flag checks, and a bounded run that resumes."""

import json
import math
import random
import shutil

import pytest
import torch

from speechtrt.errors import InputError
from speechtrt.models.checkpoints import load_checkpoint
from speechtrt.models.vocoder import MelConfig
from speechtrt.models.voice import VoiceConfig, VoiceTTS, build_voice
from speechtrt.tts.train import (VoiceTrainConfig, aligned_attention_loss, guided_attention_loss, length_batches,
                                 losses, make_batch, sampled_inputs, ss_rate_at)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
TINY = VoiceConfig(hidden_dim=32, num_heads=2, num_layers=2, encoder_layers=1, encoder_convs=1, ffn_dim=64,
                   prenet_dim=16, postnet_channels=16, postnet_layers=3, max_text_len=32, max_frames=40,
                   mel=MelConfig(gl_iters=4))


def _items(lengths):
    gen = torch.Generator().manual_seed(0)
    return [{"text": f"t{i}", "tokens": torch.randint(4, TINY.vocab_size, (3 + i,), generator=gen).short(),
             "mel": (torch.randn(n, 80, generator=gen) - 3).half()} for i, n in enumerate(lengths)]


def test_batch_pads_with_silence_and_groups_frames():
    items = _items([9, 4])
    mean, std = torch.full((80,), -3.0), torch.full((80,), 2.0)
    silence = ((math.log(1e-5) - mean) / std)[None, None]
    b = make_batch(items, mean, std, 4, silence)
    assert b.targets.shape == (2, 3, 320) and b.groups.tolist() == [3, 1] and b.text_lengths.tolist() == [3, 4]
    flat = b.targets.reshape(2, 12, 80)
    assert torch.allclose(flat[0, :9], (items[0]["mel"].float() + 3) / 2)
    assert torch.allclose(flat[1, 4:], silence[0].expand(8, 80))  # padding is the normalised log floor
    assert torch.equal(b.inputs[:, 0], torch.zeros(2, 320)) and torch.equal(b.inputs[:, 1:], b.targets[:, :-1])


def test_length_batches_cover_everything_within_budget():
    lengths = [400, 120, 800, 96, 260, 640, 200, 40]
    batches = length_batches(lengths, 1000, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) * len(b) <= 1000 or len(b) == 1 for b in batches)


def test_guided_attention_loss_prefers_the_diagonal():
    t, s = 12, 8
    diag = torch.zeros(1, 1, 1, t, s)
    anti = torch.zeros(1, 1, 1, t, s)
    for i in range(t):
        diag[..., i, min(s - 1, round(i * s / t))] = 1
        anti[..., i, s - 1 - min(s - 1, round(i * s / t))] = 1
    lengths, groups = torch.tensor([s]), torch.tensor([t])
    assert guided_attention_loss(diag, lengths, groups, 0.2) < 0.05 < 0.5 < guided_attention_loss(anti, lengths,
                                                                                                      groups, 0.2)


def test_scheduled_sampling_mixes_the_models_own_frames():
    model = build_voice(TINY, seed=0).train()
    items = _items([11, 7, 5])
    mean, std = torch.zeros(80), torch.ones(80)
    b = make_batch(items, mean, std, 4, torch.full((1, 1, 80), -5.0))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sampled_inputs(model, b, 0.0, 2, 0.0, gen), b.inputs)
    own = sampled_inputs(model, b, 1.0, 2, 0.0, gen)
    assert torch.equal(own[:, 0], torch.zeros(3, 320))  # position 0 still starts from zeros
    assert not torch.allclose(own[:, 1:], b.inputs[:, 1:])
    half = sampled_inputs(model, b, 0.5, 3, 0.0, gen)
    same = (half == b.inputs).all(-1)[:, 1:]
    assert 0 < same.float().mean() < 1  # some positions true, some the model's
    parts = losses(model, b, half, VoiceTrainConfig())
    parts["loss"].backward()
    assert all(torch.isfinite(parts[k]) for k in ("l1", "post_l1", "stop", "guided"))


def test_sampling_schedule():
    cfg = VoiceTrainConfig(ss_rate=0.6, ss_start=10, ss_ramp=20)
    assert [ss_rate_at(cfg, m) for m in (0, 9.9, 10, 20, 30, 90)] == [0, 0, 0, pytest.approx(0.3), 0.6, 0.6]


def test_aligned_attention_loss_prefers_the_phoneme_each_step_speaks():
    """Durations 1, 3, 2 steps: steps 0 | 1 2 3 | 4 5. Attention on the phoneme being spoken costs little; one
    phoneme late costs much more. An aligned voice's losses include the duration loss, which reaches the
    predictor."""
    durations, lengths, groups = torch.tensor([[1.0, 3.0, 2.0]]), torch.tensor([3]), torch.tensor([6])
    right, late = torch.zeros(1, 1, 1, 6, 3), torch.zeros(1, 1, 1, 6, 3)
    for t, i in enumerate([0, 1, 1, 1, 2, 2]):
        right[..., t, i] = 1
        late[..., t, max(0, i - 1)] = 1
    assert aligned_attention_loss(right, durations, lengths, groups, 1.0) < 0.25 < aligned_attention_loss(
        late, durations, lengths, groups, 1.0)
    model = build_voice(VoiceConfig(**{**TINY.__dict__, "aligned": True, "feedback": False}), seed=0).train()
    items = _items([9, 4])
    for x in items:
        x["durations"] = torch.full((x["tokens"].shape[0],), 0.5).half()
    mean, std = torch.full((80,), -3.0), torch.full((80,), 2.0)
    batch = make_batch(items, mean, std, TINY.reduction, ((math.log(1e-5) - mean) / std)[None, None])
    assert batch.durations.shape == batch.tokens.shape and float(batch.durations[1, 3]) == 0.5
    parts = losses(model, batch, batch.inputs, VoiceTrainConfig())
    assert parts["duration"] > 0 and torch.isfinite(parts["loss"])
    parts["loss"].backward()
    assert model.duration_projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("change, message", [
    ({"minutes": 0}, "--minutes"), ({"reduction": 9}, "--reduction"), ({"ss_rate": 1.5}, "--ss-rate"),
    ({"ss_passes": 0}, "--ss-passes"), ({"init_from": "/no/such.pt"}, "--init-from"),
    ({"durations_from": "/no/such.pt"}, "--durations-from"), ({"aligned_sigma": 0}, "--aligned-sigma"),
    ({"dropout": 1.0}, "--dropout"),
])
def test_bad_settings_are_named(change, message):
    with pytest.raises(InputError, match=message):
        VoiceTrainConfig(**change).check()


@needs_espeak
@pytest.mark.slow
def test_train_command_trains_evaluates_and_resumes(tmp_path, monkeypatch):
    """Data preparation, a bounded sitting with an evaluation, the FP16 checkpoint and CSV, then a resumed sitting."""
    from typer.testing import CliRunner

    import speechtrt.tts.train as train_module
    from speechtrt.cli import app

    monkeypatch.setattr(train_module, "build_voice", lambda config, seed: build_voice(
        VoiceConfig(**{**TINY.__dict__, "reduction": config.reduction, "prenet_dim": config.prenet_dim}), seed))
    data, out = tmp_path / "data", tmp_path / "voice.pt"
    args = ["train", "tts", "--data", str(data), "--out", str(out), "--minutes", "0.05", "--eval-every", "0.02",
            "--monitor", "2", "--batch-frames", "600", "--train-sentences", "6", "--dev-sentences", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((data / "data.json").read_text())["train"]["sentences"] == 6
    model, meta = load_checkpoint(out)
    assert isinstance(model, VoiceTTS) and meta["steps"] >= 1 and "free_greedy_cer" in meta["dev"]
    rows = out.with_suffix(".csv").read_text().strip().splitlines()
    assert len(rows) >= 2 and rows[0].startswith("train_minutes")
    steps = [r.split(",")[rows[0].split(",").index("step")] for r in rows[1:]]
    assert len(steps) == len(set(steps))  # a budget ending on an evaluation is not evaluated twice
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["command"].startswith("speechtrt ") and sidecar["steps"] >= 1
    resumed = tmp_path / "voice2.pt"
    result = CliRunner().invoke(app, [*args[:4], "--out", str(resumed), "--minutes", "0.03", "--eval-every", "1", "--monitor",
                                      "2", "--batch-frames", "600", "--init-from", str(out.with_suffix(".last.pt"))])
    assert result.exit_code == 0, result.output
    again = json.loads(resumed.with_suffix(".json").read_text())
    assert again["prior_train_minutes"] == pytest.approx(sidecar["train_minutes_total"], abs=0.01)
    regrouped = tmp_path / "voice3.pt"
    r = model.config.reduction
    result = CliRunner().invoke(app, [*args[:4], "--out", str(regrouped), "--minutes", "0.03", "--eval-every", "1",
                                      "--monitor", "2", "--batch-frames", "600", "--reduction", str(2 * r),
                                      "--init-from", str(out.with_suffix(".last.pt"))])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(regrouped)[0].config.reduction == 2 * r  # a warm start at another reduction factor
    aligned = tmp_path / "voice4.pt"
    result = CliRunner().invoke(app, [*args[:4], "--out", str(aligned), "--minutes", "0.03", "--eval-every", "1",
                                      "--monitor", "2", "--batch-frames", "600", "--no-feedback", "--durations-from",
                                      str(out), "--init-from", str(out)])
    assert result.exit_code == 0, result.output
    cached = [p for p in data.glob("durations-*.pt") if "espeak" not in p.name]
    assert len(cached) == 1 and "durations cached" in result.output
    table = torch.load(cached[0], weights_only=True)
    train_items = torch.load(data / "train.pt", weights_only=False)
    for item, d in zip(train_items, table["train"]):  # every utterance's steps, spread over its phonemes
        assert d.shape == item["tokens"].shape
        assert float(d.float().sum()) == pytest.approx(math.ceil(item["mel"].shape[0] / r), rel=1e-2)
    voice4 = load_checkpoint(aligned)[0]
    assert voice4.config.aligned and not voice4.config.feedback
    timed = tmp_path / "voice5.pt"  # espeak-ng's own timing, resuming the aligned voice
    result = CliRunner().invoke(app, [*args[:4], "--out", str(timed), "--minutes", "0.03", "--eval-every", "1",
                                      "--monitor", "2", "--batch-frames", "600", "--durations-from", "espeak",
                                      "--dropout", "0", "--init-from", str(aligned.with_suffix(".last.pt"))])
    assert result.exit_code == 0, result.output
    espeak_table = torch.load(data / f"durations-espeak2-r{r}.pt", weights_only=True)
    assert [d is not None for d in espeak_table["train"]] == [True] * 6
    voice5 = load_checkpoint(timed)[0]
    assert voice5.config.aligned and voice5.config.dropout == 0.0 and voice4.config.dropout == TINY.dropout
