"""Training: a bounded run on a tiny synthesized set writes a loadable compact checkpoint and a sidecar."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from speechtrt.asr.data import SynthConfig, synthesize
from speechtrt.asr.train import make_batches
from speechtrt.models.checkpoints import load_checkpoint

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_batches_cover_every_utterance_within_the_budget():
    import random

    lengths = [300, 120, 800, 450, 90, 610, 200]
    batches = make_batches(lengths, 1200, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) * len(b) <= 1200 or len(b) == 1 for b in batches)


@pytest.mark.slow
def test_train_command_writes_checkpoint_and_sidecar(tmp_path):
    from speechtrt.cli import app

    synthesize(tmp_path, SynthConfig(split="train", accents=("en-us",), speakers_per_accent=2,
                                     sentences_per_speaker=3, jitter=True))
    test = synthesize(tmp_path, SynthConfig(split="test", accents=("en-us",), speakers_per_accent=1,
                                            sentences_per_speaker=2))
    out = tmp_path / "asr-small.pt"
    result = CliRunner().invoke(app, ["train", "asr", "--size", "small", "--train-manifest",
                                      str(tmp_path / "train.jsonl"), "--test-manifest", str(test),
                                      "--dev-manifest", str(test), "--dev-every", "1",
                                      "--out", str(out), "--minutes", "0.05"])
    assert result.exit_code == 0, result.output
    model, meta = load_checkpoint(out)
    assert model.config.size == "small" and meta["partial"] is False and meta["steps"] >= 1
    blob = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in blob["state_dict"].values() if v.is_floating_point())
    sidecar = json.loads(out.with_suffix(".json").read_text())
    for key in ("command", "seed", "data", "train_seconds", "test", "dev_loss"):
        assert key in sidecar
    assert 0 <= sidecar["test"]["cer"] and sidecar["test"]["utterances"] == 2
    assert sidecar["dev"]["utterances"] == 2 and sidecar["dev_loss"][0]["step"] == 0
    assert sidecar["data"]["composition"]["synthesizers"]["espeak-ng"]["voices"] == ["en-us"]
    assert sidecar["augmentation"]["kinds"] == ["speed", "reverb", "noise", "babble", "telephone", "gain"]


def test_dev_probe_gives_a_clean_loss_per_synthesizer_and_leaves_the_model_training(tmp_path):
    from speechtrt.asr.train import DevProbe
    from speechtrt.models import build_asr

    manifest = synthesize(tmp_path, SynthConfig(split="dev", accents=("en-us", "en-gb"), speakers_per_accent=1,
                                                sentences_per_speaker=2))
    probe = DevProbe(manifest, max_utterances=3)
    assert len(probe.mels) == 3  # evenly spread over the manifest
    model = build_asr("small", seed=0).train()
    first, again = probe.measure(model), probe.measure(model)
    assert first == again and model.training
    assert set(first["by_synthesizer"]) == {"espeak-ng"} and 0 < first["loss"] < float("inf")
