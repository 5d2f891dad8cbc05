"""Bring your own model: a TTS and an ASR model defined here, outside ``speechtrt/``, taken through the pipeline.

The TTS model goes through ``--model tests.models.test_own_model:tiny_tts`` (a factory) and a checkpoint of it:
the protocol check, export with parity, calibration (ModelOpt FP16 and INT8 Q/DQ graphs from its own decoding),
a TensorRT-RTX build for sm86 at FP32, FP16 and INT8, a service run decoding to its stop token, and the
natural-length bench workload. The ASR model goes through export and an evaluation on a few spoken sentences.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from speechtrt.errors import InputError
from speechtrt.models.tts import cache_rows, cached_decoder_layer, step_masks

FACTORY = "tests.models.test_own_model:tiny_tts"
ASR_FACTORY = "tests.models.test_own_model:tiny_asr"


# ---------------------------------------------------------------- a TTS model of our own


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 256
    hidden_dim: int = 32
    num_layers: int = 2
    num_heads: int = 2
    ffn_dim: int = 64
    mel_dim: int = 8
    max_text_len: int = 64
    max_frames: int = 48
    samples_per_frame: int = 4
    sample_rate: int = 16000
    frames_per_token: float = 1.5  # where its stop head fires

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads


class TinyTTS(nn.Module):
    """Per-token text encoder, pre-norm causal decoder (speechtrt's shared cached layer), a stop head that fires
    near ``frames_per_token`` frames per token, and a transposed-convolution vocoder."""

    name = "tiny-tts"

    def __init__(self, config: TinyConfig = TinyConfig()):
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.hidden_dim)
        self.text_mlp = nn.Sequential(nn.Linear(c.hidden_dim, c.hidden_dim), nn.Tanh())
        self.prenet = nn.Linear(c.mel_dim, c.hidden_dim)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(c.hidden_dim, c.num_heads, c.ffn_dim, 0.0, batch_first=True, norm_first=True)
            for _ in range(c.num_layers))
        self.frame_head = nn.Linear(c.hidden_dim, c.mel_dim)
        self.stop_head = nn.Linear(c.hidden_dim, 1)
        self.vocoder = nn.ConvTranspose1d(c.mel_dim, 1, c.samples_per_frame, c.samples_per_frame)

    def encode(self, tokens, text_lengths):
        keep = (torch.arange(tokens.shape[1])[None, :] < text_lengths[:, None]).to(torch.float32)[..., None]
        return self.text_mlp(self.embedding(tokens)) * keep  # [B, S, E]

    def cross_kv(self, memory):
        e, h = self.config.hidden_dim, self.config.num_heads
        ks, vs = [], []
        for layer in self.layers:
            w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
            ks.append(_heads(F.linear(memory, w[e:2 * e], b[e:2 * e]), h))
            vs.append(_heads(F.linear(memory, w[2 * e:], b[2 * e:]), h))
        return torch.stack(ks), torch.stack(vs)

    def decode_step(self, prev_frame, past_len, past_k, past_v, cross_k, cross_v, text_lengths):
        c = self.config
        self_bias, text_bias = step_masks(past_len, cache_rows(past_k), text_lengths, cache_rows(cross_k))
        x = torch.tanh(self.prenet(prev_frame))[:, None, :]  # [B, 1, E]
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = cached_decoder_layer(layer, x, past_k[i], past_v[i], self_bias, cross_k[i], cross_v[i],
                                           text_bias, c.num_heads)
            new_k.append(k)
            new_v.append(v)
        x = x[:, 0]
        due = (past_len + 1).to(torch.float32) - c.frames_per_token * text_lengths.to(torch.float32)
        stop = torch.sigmoid(0.1 * self.stop_head(x)[:, 0] + torch.clamp(2.0 * due, -4.0, 4.0))
        return torch.tanh(self.frame_head(x)), stop, torch.stack(new_k), torch.stack(new_v)

    def vocoder_inference(self, frames):
        return torch.tanh(self.vocoder(frames.transpose(1, 2)))[:, 0]  # [B, T * samples_per_frame]


def _heads(x, h):
    b, t, e = x.shape
    return x.reshape(b, t, h, e // h).transpose(1, 2)


def tiny_tts(config: dict | None = None) -> TinyTTS:
    """The factory ``--model`` imports: a seeded TinyTTS (from a stored config when a checkpoint gives one)."""
    torch.manual_seed(0)
    return TinyTTS(TinyConfig(**(config or {}))).eval()


# ---------------------------------------------------------------- an ASR model of our own


@dataclass(frozen=True)
class TinyASRConfig:
    input_dim: int = 80
    vocab_size: int = 128
    hidden: int = 32


class TinyASR(nn.Module):
    """A strided convolution and a linear CTC classifier over the seed's character table."""

    name = "tiny-asr"

    def __init__(self, config: TinyASRConfig = TinyASRConfig()):
        super().__init__()
        self.config = config
        self.conv = nn.Conv1d(config.input_dim, config.hidden, 3, stride=2, padding=1)
        self.out = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, features, lengths):
        x = F.relu(self.conv(features.transpose(1, 2))).transpose(1, 2)  # [B, T', H]
        return F.log_softmax(self.out(x), dim=-1), (lengths + 1) // 2


def tiny_asr(config: dict | None = None) -> TinyASR:
    torch.manual_seed(0)
    return TinyASR(TinyASRConfig(**(config or {}))).eval()


# ---------------------------------------------------------------- the protocol


def test_the_outside_models_fit_their_protocols():
    from speechtrt.models.protocol import (OfflineASRModel, TTSModel, asr_model_problems, model_kind,
                                           tts_model_problems)

    assert isinstance(tiny_tts(), TTSModel) and tts_model_problems(tiny_tts()) == []
    assert isinstance(tiny_asr(), OfflineASRModel) and asr_model_problems(tiny_asr()) == []
    assert model_kind(tiny_tts()) == "tts" and model_kind(tiny_asr()) == "asr"


class _NoVocoder(TinyTTS):
    vocoder_inference = None


class _WrongFrame(TinyTTS):
    def decode_step(self, *args):
        frame, stop, k, v = super().decode_step(*args)
        return frame[:, :3], stop, k, v


@pytest.mark.parametrize("make,needs", [
    (lambda: _NoVocoder(), "method vocoder_inference()"),
    (lambda: _WrongFrame(), "decode_step frame has shape [2, 3], expected [2, 8]"),
    (lambda: nn.Linear(2, 2), "method encode()"),
])
def test_check_names_what_a_model_lacks(make, needs):
    from speechtrt.models.protocol import check_tts_model

    with pytest.raises(InputError, match=re_escape(needs)):
        check_tts_model(make())


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_resolve_model_takes_a_factory_and_a_checkpoint_with_its_config(tmp_path):
    from speechtrt.models.loading import resolve_model, save_model

    ref = resolve_model(FACTORY)
    assert (ref.name, ref.kind, ref.stop_token, ref.reference) == ("tiny-tts", "tts", True, False)
    assert ref.onnx_dir() == Path("out/onnx/tiny-tts") and ref.calib_dir() == Path("calib_data/tiny-tts")
    with torch.no_grad():
        for p in ref.model.parameters():
            p.add_(0.01)
    path = save_model(ref.model, tmp_path / "mine.pt", FACTORY, meta={"note": "test"})
    again = resolve_model(str(path))
    assert again.name == "tiny-tts" and again.meta == {"note": "test"}
    for a, b in zip(ref.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resolve_model("tts").stop_token is False


@pytest.mark.parametrize("spec,match", [
    ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
    ("tests.models.test_own_model:nothing_here", "has no callable 'nothing_here'"),
    ("tests.models.test_own_model:TinyConfig", "not a torch.nn.Module"),
    ("voice-xx", "unknown model 'voice-xx'"),
    ("voice-eng", "did you mean 'voice-en'\\? give one of tts, .*voice-en, a checkpoint file"),
])
def test_resolve_model_refuses_in_one_line(spec, match):
    from speechtrt.models.loading import resolve_model

    with pytest.raises(InputError, match=match):
        resolve_model(spec)


# ---------------------------------------------------------------- through the pipeline


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory):
    """export → calibrate (FP16, INT8) → build (sm86 FP32/FP16/INT8) of the outside TTS model, through the CLI."""
    from tests.test_cli import run_cli

    root = tmp_path_factory.mktemp("own")
    onnx, calib, engines, reports = root / "onnx", root / "calib", root / "engines", root / "reports"
    res = run_cli("export", "--model", FACTORY, "--out", str(onnx))
    assert res.returncode == 0, res.stdout + res.stderr
    res = run_cli("calibrate", "--model", FACTORY, "--onnx-dir", str(onnx), "--calib-dir", str(calib),
                  "--samples", "8", "--heldout", "4", "--reports", str(reports), "--method", "max")
    # exit 1 only for a fidelity bound missed (random weights); the graphs exist either way
    assert res.returncode == 0 or "fidelity bounds not met" in res.stdout, res.stdout + res.stderr
    res = run_cli("build", "--model", FACTORY, "--gpu", "sm86", "--fp32", "--fp16", "--int8", "--onnx-dir",
                  str(onnx), "--engine-dir", str(engines))
    assert res.returncode == 0, res.stdout + res.stderr
    return {"onnx": onnx, "calib": calib, "engines": engines, "reports": reports}


@pytest.mark.slow
def test_export_parity_recorded_for_every_graph(pipeline_dirs):
    for name in ("tts_encoder", "tts_decoder_step", "tts_vocoder"):
        side = json.loads((pipeline_dirs["onnx"] / f"{name}.json").read_text())
        assert side["parity"]["ok"], side["parity"]
        assert side["source"] == {"factory": FACTORY}


@pytest.mark.slow
def test_calibration_decodes_the_model_itself_to_its_stop_token(pipeline_dirs):
    calib = pipeline_dirs["calib"] / "tiny-tts"
    with np.load(calib / "tts_decoder_step.npz") as data:
        assert data["past_k_0"].shape[1] == TinyConfig().num_heads  # per-layer [B, H, P, D] and data["prev_frame"].shape[1] == 8
    manifest = json.loads((calib / "manifest.json").read_text())
    assert manifest["components"]["tts_decoder_step"]["calibration"]["frame_rule"] == "to the stop token"
    for precision in ("fp16", "int8"):
        for name in ("tts_encoder", "tts_decoder_step", "tts_vocoder"):
            assert (pipeline_dirs["onnx"] / f"{name}.{precision}.onnx").is_file()
    fidelity = json.loads((pipeline_dirs["reports"] / "fidelity.json").read_text())
    assert {r["component"] for r in fidelity["results"]} >= {"tts_decoder_step", "tts_end_to_end"}


@pytest.mark.slow
def test_plans_are_filed_under_the_models_name(pipeline_dirs):
    folder = pipeline_dirs["engines"] / "sm86" / "tiny-tts"
    for precision in ("fp32", "fp16", "int8"):
        for name in ("tts_encoder", "tts_decoder_step", "tts_vocoder"):
            assert (folder / f"{name}.{precision}.plan").stat().st_size > 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["engines"]) == 9


@pytest.mark.slow
def test_service_decodes_the_outside_model_to_its_stop_token(pipeline_dirs):
    from speechtrt.models.loading import resolve_model
    from speechtrt.tts.service import ServiceConfig, TTSService

    ref = resolve_model(FACTORY)
    cfg = ServiceConfig(backend="ort", max_slots=3, max_frames=48, max_text=48, frame_rule=None, threads=1,
                        onnx_dir=str(pipeline_dirs["onnx"]))
    svc = TTSService(ref.model, cfg)
    texts = ["hi", "a longer sentence here", "mid length"]
    try:
        results = svc.synthesize_batch(texts)
        alone = svc.synthesize(texts[1])
    finally:
        svc.close()
    frames = [r.frames for r in results]
    assert all(r.finish_reason == "stop_token" for r in results)
    assert len(set(frames)) == 3  # natural lengths: each request stopped at its own step
    for t, n in zip(texts, frames):
        assert abs(n - math.ceil(1.5 * len(t))) <= 2
    assert np.allclose(results[1].audio, alone.audio, atol=1e-5)
    assert results[0].audio.shape == (frames[0] * 4,)


@pytest.mark.slow
def test_natural_length_workload_on_the_outside_model(pipeline_dirs, tmp_path):
    from speechtrt.bench.natural import NaturalConfig, natural_length
    from speechtrt.models.loading import resolve_model

    ref = resolve_model(FACTORY)
    texts = ["hi there", "a much longer sentence to say", "ok", "medium length text", "yes", "one two three four"]
    out = natural_length(ref.model, NaturalConfig(batch=2, requests=6, onnx_dir=str(pipeline_dirs["onnx"]),
                                                  threads=1), variants=(("ort", "fp32"),), texts=texts)
    entry = out["variants"]["ort-fp32"]
    assert entry["in_flight"]["requests"] == entry["static"]["requests"] == 6
    assert entry["in_flight"]["frames"] == entry["static"]["frames"]  # same work, decoded either way
    assert entry["in_flight"]["steps"] < entry["static"]["steps"]  # freed slots refilled at once
    assert entry["finish_reasons"] == {"stop_token": 6}
    assert out["lengths"]["min"] < out["lengths"]["max"]


# ---------------------------------------------------------------- the ASR model


@pytest.mark.slow
def test_outside_asr_model_exports_and_evaluates(tmp_path):
    from speechtrt.asr.eval.outside import evaluate_outside
    from speechtrt.models.loading import resolve_model

    ref = resolve_model(ASR_FACTORY)
    result = evaluate_outside(ref, tmp_path / "onnx", sentences=3, backends=("torch", "ort"))
    side = json.loads((tmp_path / "onnx" / "asr_tiny_asr.json").read_text())
    assert side["parity"]["ok"]
    assert result["utterances"] == 3
    torch_row, ort_row = result["variants"]["torch-fp32"], result["variants"]["ort-fp32"]
    assert torch_row["hypotheses"] == ort_row["hypotheses"]  # the graph transcribes as the module does
    assert 0.0 <= ort_row["cer"] and ort_row["wer"] >= 0.0
